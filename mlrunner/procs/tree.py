"""Signalling a command's whole process tree: its process group and every descendant."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable

from mlrunner.procs.identity import descendant_ids, proc_start_time


def kill_proven(pid: int, start: int, sig: int) -> None:
    """Send ``sig`` to ``pid`` only while it is the process that started at ``start``: a
    pid reused by another process is never signalled."""
    if proc_start_time(pid) == start:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def signal_tree(pid: int, pgid: int | None, sig: int, extra: Iterable[tuple[int, int]] = ()) -> None:
    """Send ``sig`` to ``pid`` (a process whose identity the caller has: its own child, not
    reaped yet), its process group, its descendants now and those known before (``extra``:
    (pid, start time) pairs, each signalled only while it is still that process)."""
    if pgid is not None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for p, start in {*extra, *descendant_ids(pid)}:
        kill_proven(p, start, sig)


def terminate_tree(pid: int, pgid: int | None, start: int | None = None, grace: float = 10.0) -> None:
    """SIGTERM a command's group and descendants, wait ``grace`` seconds, then SIGKILL.

    Only what is proven is signalled: ``pid`` while it is the process started at ``start``
    (None: the caller's own child, not reaped yet), its group only while it leads it, its
    descendants (collected before the first signal, so grandchildren re-parented once their
    parent dies are still reached) each while it is the process seen then.
    """
    now = proc_start_time(pid)
    if now is None or (start is not None and now != start):
        return  # gone, or its pid is another process's now: nothing of it is proven
    known = descendant_ids(pid)
    signal_tree(pid, pgid, signal.SIGTERM, known)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc_start_time(pid) != now and not any(proc_start_time(p) == s for p, s in known):
            return
        time.sleep(0.05)
    if proc_start_time(pid) == now:
        signal_tree(pid, pgid, signal.SIGKILL, known)
    for p, s in known:
        kill_proven(p, s, signal.SIGKILL)

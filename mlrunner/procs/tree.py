"""Signalling a command's whole process tree: its process group and every descendant."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable

from mlrunner.procs.identity import descendants, proc_start_time


def signal_tree(pid: int, pgid: int | None, sig: int, extra: Iterable[int] = ()) -> None:
    """Send ``sig`` to a process group and every known descendant; ignore the dead."""
    targets = set(extra)
    targets.update(descendants(pid))
    if pgid is not None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for p in [pid, *targets]:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def terminate_tree(pid: int, pgid: int | None, start: int | None = None, grace: float = 10.0) -> None:
    """SIGTERM a command's group and descendants, wait ``grace`` seconds, then SIGKILL.

    When ``start`` is given, ``pid`` is only signalled while it is still that process.
    Descendants are collected before the first signal, so grandchildren that get
    re-parented once their parent dies are still reached.
    """
    if start is not None and proc_start_time(pid) != start:
        pid_alive = False
    else:
        pid_alive = proc_start_time(pid) is not None
    known = descendants(pid) if pid_alive else []
    if pid_alive:
        signal_tree(pid, pgid, signal.SIGTERM, known)
    elif pgid is not None:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _any_alive([pid, *known] if pid_alive else known) and not _group_alive(pgid):
            return
        time.sleep(0.05)
    if pid_alive:
        signal_tree(pid, pgid, signal.SIGKILL, known)
    elif pgid is not None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for p in known:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _any_alive(pids: Iterable[int]) -> bool:
    return any(proc_start_time(p) is not None for p in pids)


def _group_alive(pgid: int | None) -> bool:
    if pgid is None:
        return False
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # killpg(0) succeeds while zombies remain in the group: check for a non-zombie member.
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            rest = data[data.rindex(b")") + 2 :].split()
            if int(rest[2]) == pgid and rest[0] != b"Z":
                return True
    return False

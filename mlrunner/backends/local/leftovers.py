"""Processes a command leaves behind: stopped when the command ends, as Slurm does for a job
step (a data loader or a server started with ``&`` or ``setsid`` that would keep a GPU).

The runner is the kernel's *child subreaper* (``PR_SET_CHILD_SUBREAPER``) while the loop
runs, so every process a command leaves running becomes the runner's child once its parent
is gone, whatever it did to escape (``&``, ``setsid``, a double fork): no descendant gets
away to init. Every command's environment carries ``MLRUNNER_ATTEMPT_ID`` (its attempt in
the ledger), which its descendants inherit; a child of the runner that is not a shepherd
and carries one is a leftover of that attempt's command. :class:`Leftovers` finds them when
a command ends (one read of ``/proc/self/task/<pid>/children``), sends them SIGTERM (their
whole trees), SIGKILL after the grace period, reaps them, and says which command left
which process. Children without the variable (``nvidia-smi``, ``git``) are left alone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from mlrunner import procs

ATTEMPT_ENV = "MLRUNNER_ATTEMPT_ID"
PR_SET_CHILD_SUBREAPER = 36
_MARK = ATTEMPT_ENV.encode() + b"="


def set_subreaper(on: bool) -> bool:
    """Make this process the child subreaper of its descendants (or stop being one); False
    where the kernel or libc cannot (then leftovers go to init, as before)."""
    try:
        # the symbols already loaded (libc among them): find_library would run ldconfig -p
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def children() -> list[int]:
    """This process's children (those of its main thread: where orphans are re-parented)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children", "rb") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def attempt_of(pid: int) -> int | None:
    """The ``MLRUNNER_ATTEMPT_ID`` in a process's environment (None: none, or gone)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:
        return None
    for entry in env.split(b"\0"):
        if entry.startswith(_MARK):
            try:
                return int(entry[len(_MARK) :])
            except ValueError:
                return None
    return None


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    text = " ".join(a.decode("utf-8", "replace") for a in argv)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class Leftovers:
    """The leftovers of ended commands, from being found to being reaped.

    ``describe``: attempt id -> the words naming its command (for the warning), or None
    for an attempt that still runs (its processes are not leftovers yet); ``warn``: where
    the warning goes; ``grace``: seconds between SIGTERM and SIGKILL."""

    describe: Callable[[int], str | None]
    warn: Callable[[str], None]
    grace: float
    subreaper: bool = False
    pending: dict[int, float] = field(default_factory=dict)  # pid -> when SIGKILL is due
    known: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # pid -> descendants at TERM

    def start(self) -> None:
        self.subreaper = set_subreaper(True)

    def check(self, shepherds: Collection[int]) -> None:
        """After a command ended: stop what ended commands left running (children that are
        not the live ``shepherds`` and carry an attempt id of an ended command)."""
        if not self.subreaper:
            return
        for pid in children():
            if pid in shepherds or pid in self.pending:
                continue
            attempt = attempt_of(pid)
            if attempt is None:  # not a command's (nvidia-smi, git), or a zombie: not ours to reap
                continue
            what = self.describe(attempt)
            if what is None:  # its command still runs: part of it
                continue
            self.warn(
                f"{what} left process {pid} ({_name(pid)}) running after it ended: stopping it "
                f"(SIGTERM, SIGKILL after {self.grace:g} s)"
            )
            self.known[pid] = procs.descendant_ids(pid)
            procs.signal_tree(pid, None, signal.SIGTERM, self.known[pid])
            self.pending[pid] = time.monotonic() + self.grace

    def tick(self, kill_now: bool = False) -> None:
        """SIGKILL what outlived its grace (all of it when ``kill_now``); reap what is gone
        (a leftover and, once they are ours, its descendants)."""
        now = time.monotonic()
        for pid, due in list(self.pending.items()):
            kids = self.known.get(pid, [])
            if self._reap(pid) and all(self._reap(p) for p, _ in kids):
                self.pending.pop(pid)
                self.known.pop(pid, None)
            elif kill_now or now >= due:
                procs.signal_tree(pid, None, signal.SIGKILL, kids)

    @property
    def busy(self) -> bool:
        return bool(self.pending)

    def stop_all(self, shepherds: Collection[int]) -> None:
        """The run stops: every leftover goes now (SIGKILL), and is reaped."""
        if not self.subreaper:
            return
        for pid in children():
            if pid not in shepherds and attempt_of(pid) is not None and pid not in self.pending:
                self.known[pid] = procs.descendant_ids(pid)
                self.pending[pid] = 0.0
        deadline = time.monotonic() + 5.0
        while self.pending and time.monotonic() < deadline:
            self.tick(kill_now=True)
            if self.pending:
                time.sleep(0.02)

    def close(self, shepherds: Collection[int], descendants: Collection[int] = ()) -> None:
        """After the loop: stop what is left, reap the zombies of ours it knows of (and of
        ``descendants``: those of commands killed by a stop), stop being a subreaper."""
        if not self.subreaper:
            return
        self.stop_all(shepherds)
        for pid in descendants:
            self._reap(pid)
        set_subreaper(False)
        self.subreaper = False

    @staticmethod
    def _reap(pid: int) -> bool:
        """Reap ``pid`` if it is our exited child; True when it is gone."""
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child: gone when /proc says so (init reaps it)
            return procs.proc_start_time(pid) is None
        return done != 0


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

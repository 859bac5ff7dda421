"""What stops one command while the run goes on: its timeout, a stalled log, a cancel.

:class:`Limits` looks at the running commands once a loop round and says which to stop now
and why (``timeout``, ``stalled``, ``cancelled``), and which of those stopped ones are past
their grace period (SIGKILL). The loop does the signalling. It costs nothing when no limit
is set: no timeout, no ``--stall``, and the ledger's cancel requests read at most once a
second.

- timeout: ``timeout:`` / ``--timeout``, per command (``*``: every command);
- stall: ``--stall``: a command whose log has not grown for that long (its size is looked
  at every :data:`STALL_LOOK_S` at most);
- cancel: ``mlrunner cancel`` from another terminal writes a request to the ledger, which
  the recorder reads (:meth:`~mlrunner.backends.base.Recorder.cancelled`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from mlrunner.spec import format_duration
from mlrunner.status import AttemptStatus

STALL_LOOK_S = 5.0  # the most seconds between two looks at a log's size (less for short --stall)
CANCEL_LOOK_S = 1.0  # how often the ledger's cancel requests are read


@dataclass(eq=False)
class Watch:
    """One running command, as the limits see it."""

    task: str  # its task's key
    command: str
    log: str | None
    limit: float | None  # its timeout, seconds
    deadline: float | None  # monotonic time it times out at
    size: int = -1  # its log's size when last looked at
    grown_at: float = 0.0  # when that size was first seen
    kill_at: float | None = None  # once stopped: when SIGKILL is due


class Limits:
    """``timeouts``: command (or ``*``) -> seconds; ``stall``: seconds or None; ``grace``:
    seconds between SIGTERM and SIGKILL; ``cancelled``: the task keys cancelled so far."""

    def __init__(
        self,
        timeouts: Mapping[str, float],
        stall: float | None,
        grace: float,
        cancelled: Callable[[], set[str]],
    ) -> None:
        self.timeouts = dict(timeouts)
        self.stall = stall
        self.grace = grace
        self._cancelled = cancelled
        self.cancels: set[str] = set()  # task keys cancelled (seen so far)
        self._next_cancel_look = 0.0
        self._next_stall_look = 0.0
        self._stall_every = min(STALL_LOOK_S, stall / 4) if stall else STALL_LOOK_S

    def watch(self, task: str, command: str, log: str | None) -> Watch:
        """A command just started: its deadline from now."""
        now = time.monotonic()
        limit = self.timeouts.get(command, self.timeouts.get("*"))
        return Watch(task, command, log, limit, None if limit is None else now + limit, grown_at=now)

    def look(self, watches: Iterable[Watch]) -> list[tuple[Watch, AttemptStatus, str]]:
        """The commands to stop now: (watch, why, what to say)."""
        now = time.monotonic()
        out: list[tuple[Watch, AttemptStatus, str]] = []
        if now >= self._next_cancel_look:
            self._next_cancel_look = now + CANCEL_LOOK_S
            self.cancels |= self._cancelled()
        stall_look = self.stall is not None and now >= self._next_stall_look
        if stall_look:
            self._next_stall_look = now + self._stall_every
        for w in watches:
            if w.kill_at is not None:
                continue  # stopping already
            if w.task in self.cancels:
                out.append((w, AttemptStatus.CANCELLED, "cancelled (mlrunner cancel)"))
            elif w.deadline is not None and now >= w.deadline:
                out.append((w, AttemptStatus.TIMEOUT, f"past its timeout ({format_duration(w.limit or 0)})"))
            elif stall_look and self.stall is not None and w.log:
                try:
                    size = os.stat(w.log).st_size
                except OSError:
                    size = w.size
                if size != w.size:
                    w.size, w.grown_at = size, now
                elif now - w.grown_at >= self.stall:
                    out.append(
                        (w, AttemptStatus.STALLED, f"its log has not grown for {now - w.grown_at:.0f} s")
                    )
        return out

    def stopped(self, w: Watch) -> None:
        """``w`` got SIGTERM now: SIGKILL is due after the grace period."""
        w.kill_at = time.monotonic() + self.grace

    def overdue(self, watches: Iterable[Watch]) -> list[Watch]:
        """Stopped commands past their grace period (SIGKILL them; asked again later while
        they live)."""
        now = time.monotonic()
        out = [w for w in watches if w.kill_at is not None and now >= w.kill_at]
        for w in out:
            w.kill_at = now + 0.05
        return out

    @property
    def timing(self) -> bool:
        """Whether any command can time out or stall (the loop then wakes often enough)."""
        return bool(self.timeouts) or self.stall is not None

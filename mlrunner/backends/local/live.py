"""What the local loop keeps of a running command (:class:`Live`: its own child, or a
command adopted from a runner that died), and what it writes when a command cannot start."""

from __future__ import annotations

import errno
import queue
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from mlrunner import procs
from mlrunner.backends.base import Allocation
from mlrunner.backends.local.limits import Watch
from mlrunner.backends.local.machine import Job

A = TypeVar("A", bound=Allocation)
T = TypeVar("T")


def named(command: str, job: Job[A]) -> str:
    return f"'{command}' of {job.item.task.output_dir}"


def drain(q: queue.SimpleQueue[T]) -> Iterator[T]:
    """What is in ``q`` now, without waiting."""
    while True:
        try:
            yield q.get_nowait()
        except queue.Empty:
            return


def spawn_error(exc: OSError, text: str) -> str:
    """Why a command could not start, for its log."""
    if exc.errno == errno.E2BIG:
        return (
            f"command line too long: {len(text.encode())} bytes, over the kernel's limit for one "
            "argument (128 KiB) or for all of them; pass big values through a file"
        )
    return f"cannot start the command: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")


def write_reason(log: Path, reason: str) -> None:
    """Append ``mlrunner: <reason>`` to a command's log (its tail then says why it failed)."""
    try:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"mlrunner: {reason}\n")
    except OSError:  # the log itself cannot be written: the ledger still says failed
        pass


def prefer(job: Job[A]) -> str | None:
    """The slot an item's adopted command runs on (it keeps it), if any."""
    adopted = job.item.adopted
    return adopted.resource if adopted is not None and not job.asked_adopt else None


@dataclass(eq=False)
class Live(Generic[A]):
    """A job's running command, as the loop watches it: our child (``child``: reaped with
    waitpid), or a shepherd adopted from a runner that died (not our child: gone when /proc
    no longer shows it with its start time; its status from its exit file)."""

    job: Job[A]
    pid: int
    child: procs.Child | None = None
    start: int | None = None  # adopted: its start time
    exit_file: Path | None = None  # adopted: where its status will be
    pidfd: int | None = None
    watch: Watch | None = None  # its timeout, stall and cancel watch

    def ended(self) -> tuple[bool, int | None]:
        """(gone, its return code: negative for a signal; None for an adopted command gone
        without an exit status)."""
        if self.child is not None:
            code = self.child.poll()
            return code is not None, code
        if self.start is not None and procs.proc_start_time(self.pid) == self.start:
            return False, None
        assert self.exit_file is not None
        return True, procs.read_exit(self.exit_file)

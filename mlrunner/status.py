"""The one status vocabulary: of an attempt, a task and a run, and the failure classes.

Every module uses these names; no status is spelt as a bare string anywhere else. They are
``str`` enums, so what the ledger, the ``stat`` files and the JSON output hold is the same
text as before (``AttemptStatus.FINISHED == "finished"``).

An *attempt* is one try of one command. ``running`` is its only live status; every other
ends it. A *task* reads as the summary of the latest attempt of each of its commands
(:func:`task_status`). A *run* is one invocation of ``run`` (or a resume of it).

Out of memory has two meanings, kept apart: :attr:`FailureClass.GPU_OOM` (the command's log
shows CUDA running out of device memory; the local backend waits for free GPU memory and
retries) and :attr:`FailureClass.HOST_OOM` (Slurm killed the job for host memory, the
attempt status ``oom``, Slurm's ``OUT_OF_MEMORY``).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum


class _Text(str, Enum):
    """A str enum whose ``str()`` and ``format()`` are its text (as StrEnum in 3.11)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class AttemptStatus(_Text):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"  # exited non-zero (or died of a signal) on its own
    TIMEOUT = "timeout"  # Slurm's TIMEOUT: past its time limit
    STALLED = "stalled"  # its log did not grow for --stall seconds: stopped (a failure)
    OOM = "oom"  # Slurm's OUT_OF_MEMORY: host memory (failure class host_oom)
    NODE_FAIL = "node_fail"  # Slurm's NODE_FAIL
    INTERRUPTED = "interrupted"  # stopped by the runner (Ctrl-C, SIGTERM)
    CANCELLED = "cancelled"  # cancelled from outside (scancel)
    PREEMPTED = "preempted"  # Slurm preempted the job
    LOST = "lost"  # its runner died; what became of it is unknown

    @property
    def live(self) -> bool:
        return self is AttemptStatus.RUNNING

    @property
    def failed(self) -> bool:
        """The command itself failed: the task fails, ``--retries`` apply."""
        return self in FAILED_STATUSES

    @property
    def interrupted(self) -> bool:
        """Stopped from outside the command: the task is unfinished, resume reruns it."""
        return self in INTERRUPTED_STATUSES


FAILED_STATUSES = frozenset(
    {
        AttemptStatus.FAILED,
        AttemptStatus.TIMEOUT,
        AttemptStatus.STALLED,
        AttemptStatus.OOM,
        AttemptStatus.NODE_FAIL,
    }
)
INTERRUPTED_STATUSES = frozenset(
    {AttemptStatus.INTERRUPTED, AttemptStatus.CANCELLED, AttemptStatus.PREEMPTED}
)
# what a run's summary counts as interrupted (not failed, not finished): the above and lost
UNFINISHED_STATUSES = INTERRUPTED_STATUSES | {AttemptStatus.LOST}
END_STATUSES = frozenset(set(AttemptStatus) - {AttemptStatus.RUNNING})


class TaskStatus(_Text):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    LOST = "lost"


class RunStatus(_Text):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    LOST = "lost"  # its runner died (seen by a later reader)
    CANCELLED = "cancelled"
    DRY_RUN = "dry-run"  # never stored: the summary of `run --dry-run`


class FailureClass(_Text):
    """Why a failed attempt failed, when its log or its scheduler says more than the status."""

    GPU_OOM = "gpu_oom"  # CUDA out of memory in the log
    HOST_OOM = "host_oom"  # killed for host memory (Slurm OUT_OF_MEMORY)


def task_status(states: Iterable[str | None]) -> TaskStatus:
    """A task's status from the latest status of each of its commands (None: never started).

    failed if any command failed (or timed out, ran out of memory...), else running if any
    runs, else interrupted (interrupted/cancelled/preempted) or lost if any, else finished
    if all finished, else pending.
    """
    seen = [AttemptStatus(s) if s is not None else None for s in states]
    present = set(seen)
    if present & FAILED_STATUSES:
        return TaskStatus.FAILED
    if AttemptStatus.RUNNING in present:
        return TaskStatus.RUNNING
    if present & INTERRUPTED_STATUSES:
        return TaskStatus.INTERRUPTED
    if AttemptStatus.LOST in present:
        return TaskStatus.LOST
    if all(s is AttemptStatus.FINISHED for s in seen):
        return TaskStatus.FINISHED
    return TaskStatus.PENDING

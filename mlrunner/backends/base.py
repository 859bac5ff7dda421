"""The one small interface every backend implements.

The scheduler (``mlrunner.run.runner``) plans, opens the ledger, snapshots git, decides
what is unfinished, and hands a list of :class:`WorkItem` to ``Backend.execute`` with a
:class:`Recorder`. The backend decides *where and when* each item's commands run (a
local slot, a Slurm job) and reports every start and end to the recorder, which writes
the ledger, the ``param``/``stat`` files and emits events for the CLI. Backends never
print and never touch SQLite themselves.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mlrunner.status import AttemptStatus, FailureClass

if TYPE_CHECKING:
    from mlrunner.plan import Command, Task


@dataclass
class WorkItem:
    """One task and the commands of it that still have to run, in order."""

    task: Task
    commands: tuple[Command, ...]
    position: int  # 1-based position in the run's task list (for 'train : 3/ 5' lines)
    total: int  # number of tasks in the run
    adopted: Adopted | None = None  # its first command, left running by a runner that died


@dataclass
class RunOptions:
    """Resolved options of one run (what `run --resume` restores)."""

    output: str
    cwd: str
    force: bool = False
    debug: bool = False
    retries: int = 0
    grace: float = 10.0
    timeouts: dict[str, float] = field(default_factory=dict)  # command (or "*") -> seconds
    stall: float | None = None  # stop a command whose log has not grown for this long
    isolate_dir: str | None = None  # run commands here instead of cwd (run --isolate)
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific options (slurm overrides)
    resumed: bool = False  # run --resume (commands see MLRUNNER_RESUMED=1)
    run_id: int | None = None  # the ledger's run (MLRUNNER_RUN_ID)


def task_env(task: Task, options: RunOptions) -> dict[str, str]:
    """What a task's commands find in their environment besides the machine's and the slot's:
    the task's ``env:`` values and the MLRUNNER_* variables that hold for every attempt."""
    return {
        **task.env,
        "MLRUNNER_RESUMED": "1" if options.resumed else "0",
        "MLRUNNER_EXPERIMENT_DIR": os.path.abspath(os.path.join(options.cwd, task.output_dir)),
        "MLRUNNER_RUN_ID": "" if options.run_id is None else str(options.run_id),
    }


def attempt_env(attempt: int) -> dict[str, str]:
    """``MLRUNNER_ATTEMPT`` (1, 2, ...) and ``MLRUNNER_RETRY`` ('1' from the second attempt on,
    else empty: ``${MLRUNNER_RETRY:+--resume}`` passes --resume to retries only)."""
    return {"MLRUNNER_ATTEMPT": str(attempt), "MLRUNNER_RETRY": "1" if attempt > 1 else ""}


@dataclass(frozen=True)
class ProcessRef:
    """A local process, as the ledger identifies it after a crash: pid, process group and
    start time (clock ticks since boot, ``/proc/<pid>/stat`` field 22; None: read it)."""

    pid: int
    pgid: int | None = None
    start: int | None = None


@dataclass(frozen=True)
class JobRef:
    """A batch job (Slurm): its id and, once known, the node it runs on."""

    job_id: str
    node: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where an attempt runs: the slot text (``CUDA_VISIBLE_DEVICES``, or '-' for a job
    that has not said yet), its GPU indices when known, and the process or the job."""

    resource: str
    gpus: tuple[int, ...] | None = None
    process: ProcessRef | None = None
    job: JobRef | None = None


@dataclass(frozen=True)
class Adopted:
    """A command that a runner which died left running (its shepherd alive): the backend
    watches it instead of starting it again, and records its end on the open attempt."""

    attempt_id: int
    command: str  # the name of the item's first command, the one running
    process: ProcessRef  # its shepherd (pid, process group, start time)
    log_path: Path
    resource: str  # the slot it runs on


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: its status, exit code or signal, and a failure class when the
    backend knows one (else the recorder classifies the log tail)."""

    status: AttemptStatus
    exit_code: int | None = None
    signal: int | None = None
    failure_class: FailureClass | None = None
    reason: str | None = None  # why, when the log cannot say it (the command never started)


class Allocation(Protocol):
    """What one task holds while its commands run (see :mod:`mlrunner.resources.slots`)."""

    @property
    def visible(self) -> str: ...

    @property
    def gpus(self) -> tuple[int, ...] | None: ...

    def env(self) -> dict[str, str]: ...


A = TypeVar("A", bound=Allocation)


class Allocator(Protocol[A]):
    """Hands out allocations of type ``A``, and takes back only those; thread-safe.
    ``fixed``: every allocation is a fixed slot that a 1-GPU task gets at once while fewer
    than ``capacity`` are held (acquire never blocks then). ``pending``: how many
    acquisitions are waiting inside it now."""

    @property
    def capacity(self) -> int: ...

    @property
    def fixed(self) -> bool: ...

    @property
    def pending(self) -> int: ...

    def acquire(self, gpus_needed: int, *, stop: threading.Event, prefer: str | None = None) -> A | None:
        """Block until an allocation is free (None: ``stop`` was set first); ``prefer``: the
        slot text (``CUDA_VISIBLE_DEVICES``) to give when it is free."""
        ...

    def release(self, alloc: A) -> None: ...


class Recorder(Protocol):
    """Implemented by the run loop (:class:`mlrunner.run.RunRecorder`). Thread-safe:
    backends may call it from many threads."""

    stop: threading.Event  # set on SIGINT/SIGTERM: launch nothing more
    kill_now: threading.Event  # set on a second Ctrl-C: SIGKILL at once

    def batch(self) -> AbstractContextManager[None]:
        """Within the block, the recorder's ledger writes share one transaction (the local
        backend uses it for a round of ends and claims; nothing whose record must not be
        lost, such as a spawn, belongs inside)."""
        ...

    def claim(self, item: WorkItem) -> bool:
        """Atomically claim a task in the ledger; False: another live runner holds it."""
        ...

    def cancelled(self) -> set[str]:
        """The keys of the tasks cancelled (``mlrunner cancel``) since this run started: their
        running commands are stopped and recorded ``cancelled``, the others never start."""
        ...

    def command_cancelled(self, item: WorkItem, command: Command) -> None:
        """Record that ``command`` of ``item`` was cancelled before it could start."""
        ...

    def warn(self, message: str) -> None:
        """Something the user should know (a process a command left behind...); the run goes on."""
        ...

    def release(self, item: WorkItem) -> None:
        """Give up the claim once the backend is done with the item (finished or not)."""
        ...

    def log_path(self, item: WorkItem, command: Command) -> Path:
        """Where this attempt's output goes (``<exp>/log.<cmd>.<time>``)."""
        ...

    def adopt(self, item: WorkItem) -> Adopted | None:
        """Before an item's first command starts: the command of it that a runner which died
        left running, to be watched instead of started (None: start it). Settles what can be
        settled first (a command that ended while no runner watched is recorded, and no
        longer among ``item.commands``)."""
        ...

    def command_started(self, item: WorkItem, command: Command, placement: Placement, log_path: Path) -> int:
        """Record a new attempt as running; returns the attempt id. A local backend calls it
        *before* it spawns (``placement.process`` None), so that no command can run that the
        ledger does not know of, then :meth:`process_started`."""
        ...

    def process_started(self, attempt_id: int, process: ProcessRef) -> None:
        """The attempt's process runs: its identity (pid, group, start time). Recorded with
        the next :meth:`batch` (a crash before that leaves the exit file and the process's
        command line to identify it)."""
        ...

    def command_ended(
        self,
        attempt_id: int,
        item: WorkItem,
        command: Command,
        outcome: Outcome,
        log_path: Path,
        *,
        last: bool = False,
    ) -> AttemptStatus | FailureClass:
        """Record the attempt's end; updates ``stat``, emits the end event.

        ``last``: no further command of the item follows, so the task's claim is released
        in the same ledger transaction (``release`` then has nothing left to do).

        Returns the failure class when one was found (e.g. ``gpu_oom``), else the status.
        """
        ...

    def previous_jobs(self, item: WorkItem) -> list[dict[str, Any]]:
        """The item's task's earlier attempts that ran as batch jobs (``job_id`` set), oldest first.

        Any run, any status, as stored (an attempt whose runner died is still ``running``
        here unless something ended it). Each: ``attempt_id``, ``command``, ``status``,
        ``job_id``, ``node``, ``log_path``, ``started_at``, ``ended_at``. The Slurm backend
        uses it on resume to end an earlier runner's open attempts (``command_ended`` with
        that ``attempt_id``) and to never record one job's outcome twice.
        """
        ...


class Backend(ABC):
    """Runs work items somewhere and reports to the recorder."""

    name: str = "base"

    @abstractmethod
    def execute(self, items: Sequence[WorkItem], recorder: Recorder, options: RunOptions) -> None:
        """Run every item (in order of the list, as capacity allows) until done or stopped.

        Must return only once nothing it started is still running (or, for a backend that
        can detach, once it was told to leave jobs running).
        """

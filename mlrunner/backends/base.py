"""The one small interface every backend implements.

The scheduler (``mlrunner.run.runner``) plans, opens the ledger, snapshots git, decides
what is unfinished, and hands a list of :class:`WorkItem` to ``Backend.execute`` with a
:class:`Recorder`. The backend decides *where and when* each item's commands run (a
local slot, a Slurm job) and reports every start and end to the recorder, which writes
the ledger, the ``param``/``stat`` files and emits events for the CLI. Backends never
print and never touch SQLite themselves.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mlrunner.plan import Command, Task


@dataclass
class WorkItem:
    """One task and the commands of it that still have to run, in order."""

    task: Task
    commands: tuple[Command, ...]
    position: int  # 1-based position in the run's task list (for 'train : 3/ 5' lines)
    total: int  # number of tasks in the run


@dataclass
class RunOptions:
    """Resolved options of one run (what `run --resume` restores)."""

    output: str
    cwd: str
    force: bool = False
    debug: bool = False
    retries: int = 0
    grace: float = 10.0
    isolate_dir: str | None = None  # run commands here instead of cwd (run --isolate)
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific options (slurm overrides)


class Recorder(Protocol):
    """Implemented by the scheduler. Thread-safe: backends may call it from many threads.

    A recorder may also offer ``batch()``, a context manager within which its ledger
    writes share one transaction (the local backend uses it for a round of ends and
    claims; nothing whose record must not be lost, such as a spawn, belongs inside).
    """

    stop: threading.Event  # set on SIGINT/SIGTERM: launch nothing more
    kill_now: threading.Event  # set on a second Ctrl-C: SIGKILL at once

    def claim(self, item: WorkItem) -> bool:
        """Atomically claim a task in the ledger; False: another live runner holds it."""

    def release(self, item: WorkItem) -> None:
        """Give up the claim once the backend is done with the item (finished or not)."""

    def log_path(self, item: WorkItem, command: Command) -> Path:
        """Where this attempt's output goes (``<exp>/log.<cmd>.<time>``)."""

    def command_started(
        self,
        item: WorkItem,
        command: Command,
        *,
        resource: str,
        gpus: Sequence[int] | None,
        log_path: Path,
        pid: int | None = None,
        pgid: int | None = None,
        job_id: str | None = None,
        node: str | None = None,
        proc_start: int | None = None,
    ) -> int:
        """Record a new attempt as running; returns the attempt id.

        ``proc_start``: the process's start time when the backend knows it (else it is
        read from ``/proc/<pid>/stat``), which with the pid identifies it after a crash.
        """

    def command_ended(
        self,
        attempt_id: int,
        item: WorkItem,
        command: Command,
        *,
        status: str,  # finished | failed | interrupted | cancelled | timeout | lost | oom ...
        exit_code: int | None,
        signal: int | None,
        log_path: Path,
        failure_class: str | None = None,
        last: bool = False,
    ) -> str:
        """Record the attempt's end; updates ``stat``, emits FAIL/finish events.

        ``last``: no further command of the item follows, so the task's claim is released
        in the same ledger transaction (``release`` then has nothing left to do).

        Returns the failure class when one was found (e.g. ``oom``), else the status.
        """

    def previous_jobs(self, item: WorkItem) -> list[dict[str, Any]]:
        """The item's task's earlier attempts that ran as batch jobs (``job_id`` set), oldest first.

        Any run, any status, as stored (an attempt whose runner died is still ``running``
        here unless something ended it). Each: ``attempt_id``, ``command``, ``status``,
        ``job_id``, ``node``, ``log_path``, ``started_at``, ``ended_at``. The Slurm backend
        uses it on resume to end an earlier runner's open attempts (``command_ended`` with
        that ``attempt_id``) and to never record one job's outcome twice.
        """


class Backend(ABC):
    """Runs work items somewhere and reports to the recorder."""

    name: str = "base"

    @abstractmethod
    def execute(self, items: Sequence[WorkItem], recorder: Recorder, options: RunOptions) -> None:
        """Run every item (in order of the list, as capacity allows) until done or stopped.

        Must return only once nothing it started is still running (or, for a backend that
        can detach, once it was told to leave jobs running).
        """

"""What the run loop reports while it works. The library emits, the CLI renders.

One frozen dataclass per kind of event; :data:`Event` is their union, so a renderer can
``match`` on the classes. The events about one command of one task share
:class:`CommandEvent`'s fields (its place in the run's task list, its dir, its name).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from mlrunner.status import AttemptStatus, FailureClass, RunStatus


@dataclass(frozen=True)
class WarningMessage:
    """Something the user should know; the run goes on."""

    message: str


@dataclass(frozen=True)
class InfoMessage:
    """A plain line of progress (e.g. which run is resumed)."""

    message: str


@dataclass(frozen=True)
class Orphans:
    """Grid params that no template uses (sorted)."""

    params: tuple[str, ...]


@dataclass(frozen=True)
class PlanReady:
    """The tasks are registered in the ledger; what runs next is decided."""

    tasks: int
    commands: int
    run_id: int
    resumed: bool


@dataclass(frozen=True)
class CommandEvent:
    """One command of one task: ``position`` is 1-based in the run's ``total`` tasks."""

    position: int
    total: int
    output_dir: str
    command: str


@dataclass(frozen=True)
class DryLine(CommandEvent):
    """``--dry-run``: the shell line the command would run."""

    line: str


@dataclass(frozen=True)
class DryTask:
    """``--dry-run --json``: one task as it would run; ``status``: ``finished`` when the
    ledger (or a 0.5.9 ``stat`` file) says every command of it finished, else ``pending``."""

    position: int
    total: int
    name: str
    output_dir: str
    params: Mapping[str, object]
    commands: Mapping[str, str]
    status: str


@dataclass(frozen=True)
class Skipped(CommandEvent):
    """The command finished before: not run again."""


@dataclass(frozen=True)
class Started(CommandEvent):
    """An attempt started on ``resource`` (the slot text; a batch job: its id and node)."""

    resource: str
    job_id: str | None = None
    node: str | None = None
    log: str | None = None  # where its output goes (a live display shows its last line)


@dataclass(frozen=True)
class Ended(CommandEvent):
    """An attempt ended: finished, or not (failed, interrupted, ...; see ``finished``).
    ``log_tail``: the end of its log (what the ledger stores) when it did not finish."""

    status: AttemptStatus
    exit_code: int | None
    signal: int | None
    failure_class: FailureClass | None
    log: str
    log_tail: str | None = None

    @property
    def finished(self) -> bool:
        return self.status is AttemptStatus.FINISHED


@dataclass(frozen=True)
class Stopping:
    """The run was told to stop (``signal``): nothing new is launched."""

    signal: int


@dataclass
class RunSummary:
    run_id: int | None
    n_tasks: int
    n_commands: int
    finished: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: int = 0
    not_started: int = 0
    elsewhere: int = 0  # run (or running) by another runner sharing the sweep
    failed_dirs: list[str] = field(default_factory=list)
    status: RunStatus = RunStatus.FINISHED  # finished | failed | interrupted | dry-run
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        if self.signal is not None:
            return 128 + self.signal
        return 1 if self.failed or self.interrupted else 0


@dataclass(frozen=True)
class Summary:
    """The run is over (the last event)."""

    summary: RunSummary


Event: TypeAlias = (
    WarningMessage
    | InfoMessage
    | Orphans
    | PlanReady
    | DryLine
    | DryTask
    | Skipped
    | Started
    | Ended
    | Stopping
    | Summary
)

Emit = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The default sink: library callers that do not want events."""

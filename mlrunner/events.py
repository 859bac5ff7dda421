"""What the run loop reports while it works. The library emits, the CLI renders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# kind -> the keys its data carries
#   warning / info : message
#   orphans        : params (sorted list)
#   plan           : tasks, commands, run_id, resumed
#   dry            : position, total, output_dir, command, line
#   skip           : position, total, output_dir, command
#   start          : position, total, output_dir, command, resource, attempt, job_id, node
#   finish / fail  : the start keys + status, exit_code, signal, failure_class, log
#   stopping       : signal (the run was told to stop; nothing new is launched)
#   summary        : summary (RunSummary)


@dataclass
class Event:
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


Emit = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The default sink: library callers that do not want events."""


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
    failed_dirs: list[str] = field(default_factory=list)
    status: str = "finished"  # finished | failed | interrupted | dry-run
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        if self.signal is not None:
            return 128 + self.signal
        return 1 if self.failed or self.interrupted else 0

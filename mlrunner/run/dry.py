"""``run --dry-run``: what a run would do, and nothing written (step 3 is the last step)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mlrunner import expdir as expfiles
from mlrunner.events import DryLine, DryTask, Emit, RunSummary
from mlrunner.run.request import RunRequest
from mlrunner.status import AttemptStatus, RunStatus

if TYPE_CHECKING:
    from mlrunner.plan import Task
    from mlrunner.spec import Spec


def dry_run(
    req: RunRequest, spec: Spec, tasks: Sequence[Task], summary: RunSummary, now: str, emit: Emit
) -> None:
    """``--dry-run`` stops after step 3: each command's line (``--json``: each task), nothing written."""
    from mlrunner.plan import shell_line
    from mlrunner.resources import visible_devices

    slots = spec.resource.slots or ("auto",)
    total = len(tasks)
    if req.json:
        for i, (task, status) in enumerate(zip(tasks, _statuses(req, tasks), strict=True)):
            commands = {c.name: c.text for c in task.commands}
            emit(DryTask(i + 1, total, task.name, task.output_dir, task.params, commands, status))
        summary.status = RunStatus.DRY_RUN
        return
    for i, task in enumerate(tasks):
        slot = visible_devices(slots[i % len(slots)])
        for command in task.commands:
            log = Path(
                task.output_dir,
                expfiles.log_name(command.name, now, task.name if req.no_subdir else None),
            )
            emit(
                DryLine(
                    position=i + 1,
                    total=total,
                    output_dir=task.output_dir,
                    command=command.name,
                    line=shell_line(command, slot, log, task.env),
                )
            )
    summary.status = RunStatus.DRY_RUN


def _statuses(req: RunRequest, tasks: Sequence[Task]) -> list[str]:
    """Each task's status for ``--dry-run --json``: ``finished`` when every command of it
    finished (ledger, else a 0.5.9 ``stat`` file) and ``--force`` is not given, else
    ``pending``. Reads the ledger only when there is one; writes nothing."""
    from mlrunner.ledger import Ledger, ledger_path

    states: dict[tuple[str, str], str] = {}
    if not req.force and ledger_path(req.output).is_file():
        with Ledger(req.output, create=False) as ledger:
            states = ledger.command_states([t.key for t in tasks])
    out = []
    for task in tasks:
        stat: dict[str, str] | None = None
        done = not req.force
        for command in task.commands:
            if not done:
                break
            state = states.get((task.key, command.name))
            if state is None and not req.no_subdir:  # one shared stat file: it says nothing
                if stat is None:
                    stat = expfiles.read_stat(task.output_dir) if os.path.isdir(task.output_dir) else {}
                state = stat.get(command.name)
            done = state == AttemptStatus.FINISHED
        out.append("finished" if done else "pending")
    return out

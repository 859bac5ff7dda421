"""A resume reconciles the ledger with the exit files its commands left.

A power loss (or a lost WAL) can drop the ledger's last commits while the commands' own exit
files, fsynced by their shepherds (:mod:`mlrunner.procs.spawn`), survive. Before a resume
decides what is unfinished, every command the ledger does not know as finished is looked
up on disk: an exit file of this run's log of it (``.log.<cmd>.<time>[.N].exit``) that says
``exit 0`` is recorded as a finished attempt, from that log, instead of running it again.
A non-zero one is recorded failed (the resume reruns it, as any failure).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlrunner import expdir, procs
from mlrunner.events import Emit, InfoMessage
from mlrunner.status import AttemptStatus

if TYPE_CHECKING:
    from mlrunner.ledger import Ledger
    from mlrunner.plan import Task


def latest_exit(task: Task, command: str, time_str: str, no_subdir: bool) -> tuple[str, int] | None:
    """(log, exit code) of the latest of this run's attempts of ``command`` that left an exit
    file (retries add ``.2``, ``.3``... to the log name), or None."""
    base = expdir.log_name(command, time_str, task.name if no_subdir else None)
    try:
        names = os.listdir(task.output_dir)
    except OSError:
        return None
    logs = [n for n in names if n == base or (n.startswith(base + ".") and n[len(base) + 1 :].isdigit())]
    logs.sort(key=lambda n: 1 if n == base else int(n[len(base) + 1 :]))
    for name in reversed(logs):
        log = os.path.join(task.output_dir, name)
        code = procs.read_exit(procs.exit_path(log))
        if code is not None:
            return log, code
    return None


def reconcile(
    ledger: Ledger,
    run_id: int,
    time_str: str,
    tasks: Sequence[Task],
    states: dict[tuple[str, str], str],
    no_subdir: bool,
    emit: Emit,
) -> int:
    """Record what the exit files of this run's commands say where the ledger does not know
    them as ended (a lost last commit); ``states`` is updated. Returns how many."""
    n = 0
    for task in tasks:
        attempts: list[dict[str, Any]] | None = None  # this task's, read once if needed
        for command in task.commands:
            key = (task.key, command.name)
            if states.get(key) in (AttemptStatus.FINISHED, AttemptStatus.RUNNING):
                continue
            found = latest_exit(task, command.name, time_str, no_subdir)
            if found is None:
                continue
            if attempts is None:
                attempts = ledger.attempts_for(task.key)
            mine = [a for a in attempts if a["command"] == command.name]
            if any(a.get("ended_at") is None for a in mine):
                continue  # an open attempt: a dead runner's (settled) or a Slurm job's (reattached)
            if os.path.abspath(found[0]) in {
                os.path.abspath(a["log_path"]) for a in mine if a.get("log_path")
            }:
                continue  # the ledger has this attempt's end
            log, code = found
            status = AttemptStatus.FINISHED if code == 0 else AttemptStatus.FAILED
            attempt = ledger.start_attempt(
                run_id=run_id, task_key=task.key, command=command.name, resource=None, gpus=None,
                log_path=os.path.abspath(log),
            )  # fmt: skip
            tail = expdir.log_tail(log) if code else None
            ledger.end_attempt(attempt, status=status, exit_code=code, log_tail=tail)
            states[key] = status
            n += 1
            emit(
                InfoMessage(
                    f"'{command.name}' of {task.output_dir} ended (exit {code}) but the ledger had lost "
                    "its record: recorded from its exit file"
                )
            )
    return n

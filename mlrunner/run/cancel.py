"""``mlrunner cancel``: stop some experiments of a sweep from another terminal.

The request goes into the ledger; every runner of those tasks reads it within a second and
stops their running commands (SIGTERM, SIGKILL after its grace period) and never starts
their queued ones; all are recorded ``cancelled``, and ``run --resume`` reruns them like
interrupted ones. A command whose runner died (running without a runner) is stopped here,
its identity proven, and recorded; a Slurm job of a dead runner is scancel'ed here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlrunner import procs
from mlrunner.errors import UsageError, did_you_mean
from mlrunner.run.orphans import live_shepherd
from mlrunner.status import AttemptStatus

if TYPE_CHECKING:
    from mlrunner.ledger import Ledger


@dataclass
class CancelReport:
    """What ``cancel`` did: the experiments (task names) asked for, those of them that ran
    under a live runner (it stops them), and the commands stopped here (no runner)."""

    tasks: list[str] = field(default_factory=list)
    with_runner: list[str] = field(default_factory=list)
    stopped_here: list[str] = field(default_factory=list)


def match_tasks(ledger: Ledger, names: list[str], where: list[str]) -> list[dict[str, Any]]:
    """The ledger's tasks named by ``names`` (an experiment's name, or its dir), and those
    matching every ``where`` (PARAM=VALUE); UsageError for a name that is no experiment or a
    bad PARAM=VALUE."""
    tasks = ledger.all_tasks()
    conditions = []
    for w in where:
        param, sep, value = w.partition("=")
        if not sep or not param:
            raise UsageError(f"--where {w}: not PARAM=VALUE", key="--where", hint="e.g. --where lr=0.001")
        conditions.append((param, value))
    by_name = {t["name"]: t for t in tasks}
    by_dir = {os.path.realpath(t["output_dir"]): t for t in tasks}
    chosen: dict[str, dict[str, Any]] = {}
    for name in names:
        task = by_name.get(name) or by_dir.get(os.path.realpath(name)) or by_name.get(os.path.basename(name))
        if task is None:
            raise UsageError(
                f"no experiment '{name}' in the ledger",
                key="EXPERIMENT",
                hint=did_you_mean(name, by_name) or "`mlrunner ledger show` lists the experiments of a run",
            )
        chosen[task["key"]] = task
    if conditions:
        params = {p for t in tasks for p in t["params"]}
        for param, _ in conditions:
            if param not in params:
                raise UsageError(
                    f"--where {param}=...: no experiment has a param '{param}'",
                    key="--where",
                    hint=did_you_mean(param, params) or f"params: {', '.join(sorted(params))}",
                )
        for t in tasks:
            if all(str(t["params"].get(p)) == v for p, v in conditions):
                chosen.setdefault(t["key"], t)
    elif not names:
        raise UsageError(
            "name the experiments to cancel", hint="mlrunner cancel NAME... or --where PARAM=VALUE"
        )
    return list(chosen.values())


def cancel(ledger: Ledger, tasks: list[dict[str, Any]], grace: float = 10.0) -> CancelReport:
    """Ask the runners of ``tasks`` to stop them; stop here what runs without a runner."""
    report = CancelReport(tasks=[t["name"] for t in tasks])
    keys = [t["key"] for t in tasks]
    ledger.request_cancel(keys)
    wanted = set(keys)
    for att in ledger.live_attempts():
        if att["task_key"] in wanted:
            report.with_runner.append(att["name"])
    for att in ledger.orphaned_attempts():
        if att["task_key"] not in wanted:
            continue
        if att.get("job_id"):
            from mlrunner.backends.slurm import cancel_jobs

            cancel_jobs([att["job_id"]])
        else:
            process = live_shepherd(att)
            if process is not None:  # proven: this host and boot, its pid and start time
                procs.terminate_tree(process.pid, process.pid, process.start, grace=grace)
        ledger.end_attempt(att["id"], status=AttemptStatus.CANCELLED)
        report.stopped_here.append(f"'{att['command']}' of {att['name']}")
    return report

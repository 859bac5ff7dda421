"""What the UI reads of the ledger beyond its documents (:mod:`mlrunner.ledger.views`):
every attempt of a run (the live board's per-slot timeline) and the attempts of one
experiment (its detail page). Read-only transactions, statuses derived as everywhere
(``lost`` for a dead runner's ``running``)."""

from __future__ import annotations

import os
import time
from typing import Any

from mlrunner.ledger import Ledger
from mlrunner.ledger.base import Liveness

_COLUMNS = (
    "a.id, a.task_key, a.command, a.number, a.status, a.exit_code, a.signal, a.resource, a.started_at, "
    "a.ended_at, a.failure_class, a.log_path, a.latest, a.host, a.boot_id, a.runner_pid, a.runner_start, "
    "a.job_id, a.node"
)
_PUBLIC = (
    "id", "task_key", "command", "number", "status", "exit_code", "signal", "resource", "started_at",
    "ended_at", "failure_class", "log_path", "latest", "job_id", "node",
)  # fmt: skip


def _record(row: Any, alive: Liveness) -> dict[str, Any]:
    out = {k: row[k] for k in _PUBLIC}
    out["status"] = alive.attempt_status(row)
    out["latest"] = bool(out["latest"])
    return out


def run_attempts(ledger: Ledger, run_id: int) -> dict[str, Any]:
    """``{"run_id", "now", "attempts": [...]}``: every attempt of run ``run_id``, oldest
    first, with the task's ``name`` (epoch times; ``now`` is this host's clock, for the
    bars of running attempts)."""
    with ledger.db.transaction(write=False) as conn:
        rows = conn.execute(
            f"SELECT {_COLUMNS}, t.name FROM attempts a JOIN tasks t ON t.key = a.task_key "
            "WHERE a.run_id = ? ORDER BY a.id",
            (int(run_id),),
        ).fetchall()
    alive = Liveness()
    attempts = []
    for row in rows:
        record = _record(row, alive)
        record["name"] = row["name"]
        attempts.append(record)
    return {"run_id": int(run_id), "now": time.time(), "attempts": attempts}


def experiment_attempts(ledger: Ledger, exp_dir: str) -> dict[str, list[dict[str, Any]]]:
    """Command -> every attempt (oldest first) of the task whose output dir is
    ``exp_dir``; when several tasks share the dir, the one with the latest attempt."""
    real = os.path.realpath(exp_dir)
    with ledger.db.transaction(write=False) as conn:
        keys = [r[0] for r in conn.execute("SELECT key FROM tasks WHERE output_real = ?", (real,))]
        if not keys:
            return {}
        marks = ", ".join("?" * len(keys))
        rows = conn.execute(
            f"SELECT {_COLUMNS}, a.run_id FROM attempts a WHERE a.task_key IN ({marks}) ORDER BY a.id", keys
        ).fetchall()
    if not rows:
        return {}
    key = rows[-1]["task_key"]
    alive = Liveness()
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["task_key"] == key:
            record = _record(row, alive)
            record["run_id"] = row["run_id"]
            out.setdefault(row["command"], []).append(record)
    return out

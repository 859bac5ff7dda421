"""The reads behind the views (``ledger ls``, ``ledger show``, ``status``, the Examiner's
join): records with derived statuses (``lost`` for a dead runner's ``running``), epoch
times; :mod:`mlrunner.ledger.views` makes the documents of them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlrunner.ledger.base import LedgerPart, loads, run_record, sql_text
from mlrunner.status import AttemptStatus, TaskStatus

# What the views need of an attempt row (the latest per task and command).
_LATEST_COLUMNS = (
    "a.id, a.run_id, a.task_key, a.command, a.status, a.started_at, a.ended_at, a.failure_class, "
    "a.host, a.boot_id, a.runner_pid, a.runner_start"
)


def _count(condition: str) -> str:
    return f"coalesce(sum({condition}), 0)"


def _is(status: str) -> str:
    return f"t.status = {sql_text(status)}"


# Whether a task's current result comes from this run: the latest attempt of one of its
# commands is this run's (the partial index attempts_latest makes it one lookup per task).
_MINE = (
    "EXISTS (SELECT 1 FROM attempts a INDEXED BY attempts_latest "
    "WHERE a.task_key = rt.task_key AND a.latest = 1 AND a.run_id = rt.run_id)"
)
# A run's tasks counted by their stored status (a dead runner's running ones are moved later);
# a finished task whose result another run produced (skipped here, or redone later) is
# n_skipped, not n_finished.
_RUN_COUNTS = (
    f"count(t.key) AS n_tasks, {_count(f'{_is(TaskStatus.FINISHED)} AND {_MINE}')} AS n_finished, "
    f"{_count(f'{_is(TaskStatus.FINISHED)} AND NOT {_MINE}')} AS n_skipped, "
    f"{_count(_is(TaskStatus.FAILED))} AS n_failed, {_count(_is(TaskStatus.RUNNING))} AS n_running, "
    f"{_count(f't.status IN ({sql_text(TaskStatus.INTERRUPTED)}, {sql_text(TaskStatus.LOST)})')} "
    f"AS n_interrupted, {_count('t.n_commands')} AS n_commands, {_count('t.n_done')} AS n_done"
)
_RUNNING_LATEST = (
    "SELECT rt.run_id, a.task_key, a.host, a.boot_id, a.runner_pid, a.runner_start "
    f"FROM attempts a JOIN tasks t ON t.key = a.task_key AND {_is(TaskStatus.RUNNING)} "
    "JOIN run_tasks rt ON rt.task_key = a.task_key "
    f"WHERE a.status = {sql_text(AttemptStatus.RUNNING)} AND a.latest = 1"
)


@dataclass(frozen=True)
class RunDetail:
    """A run, its tasks in order, and the latest attempt of each of their commands."""

    run: dict[str, Any]  # run_record()
    tasks: list[dict[str, Any]]  # key, name, output_dir, params (parsed), commands (a list), position
    # (task key, command) -> the latest attempt: _LATEST_COLUMNS, exit_code, signal,
    # resource, log_path, log_tail, n_attempts; status derived
    latest: dict[tuple[str, str], dict[str, Any]]


@dataclass(frozen=True)
class ExperimentRows:
    """What the Examiner's ledger columns are computed from."""

    # key, output_real, commands (a list), n_attempts, run_id (latest run that registered it)
    tasks: list[dict[str, Any]]
    # task key -> command -> its latest attempt (_LATEST_COLUMNS, resource); status derived
    latest: dict[str, dict[str, dict[str, Any]]]
    code_changed: set[str]  # keys of tasks with an attempt on other code than its run's snapshot
    runs: dict[int, tuple[str | None, bool | None, str | None]]  # run id -> (git_commit, git_dirty, env_hash)


class QueriesPart(LedgerPart):
    """Whole-ledger reads for the views, each in one read transaction."""

    def run_summaries(self) -> list[dict[str, Any]]:
        """Every run (run_record()), oldest first, with counts of its tasks by current status.

        n_tasks, n_finished (its result from this run), n_skipped (finished by another
        run: skipped here, or redone later), n_failed, n_running, n_interrupted
        (interrupted or lost: a running task whose runner is dead counts here),
        n_commands, n_done (commands finished).
        """
        with self.db.transaction(write=False) as conn:
            rows = conn.execute(
                f"SELECT r.*, {_RUN_COUNTS} FROM runs r LEFT JOIN run_tasks rt ON rt.run_id = r.id "
                "LEFT JOIN tasks t ON t.key = rt.task_key GROUP BY r.id ORDER BY r.id"
            ).fetchall()
            running = conn.execute(_RUNNING_LATEST).fetchall()
        alive = self._liveness()
        live: set[tuple[int, str]] = set()
        held: set[tuple[int, str]] = set()
        for r in running:
            held.add((r["run_id"], r["task_key"]))
            if alive.runner_alive(r) is not False:
                live.add((r["run_id"], r["task_key"]))
        lost_per_run: dict[int, int] = {}
        for run_id, _key in held - live:
            lost_per_run[run_id] = lost_per_run.get(run_id, 0) + 1
        out = []
        for row in rows:
            run = run_record(row, alive)
            lost = lost_per_run.get(run["id"], 0)
            run["n_running"] -= lost
            run["n_interrupted"] += lost
            out.append(run)
        return out

    def run_has_failed(self, run_id: int) -> bool:
        """Whether a task of the run has failed (its current status, from any run)."""
        with self.db.transaction(write=False) as conn:
            row = conn.execute(
                "SELECT 1 FROM run_tasks rt JOIN tasks t ON t.key = rt.task_key "
                f"WHERE rt.run_id = ? AND {_is(TaskStatus.FAILED)} LIMIT 1",
                (int(run_id),),
            ).fetchone()
        return row is not None

    def run_detail(self, run_id: int) -> RunDetail:
        """A run's tasks and their commands' latest attempts; LedgerError: no such run."""
        with self.db.transaction(write=False) as conn:
            run_row = conn.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone()
            if run_row is None:
                raise self._no_run(run_id)
            task_rows = conn.execute(
                "SELECT t.key, t.name, t.output_dir, t.params, t.commands, rt.position FROM run_tasks rt "
                "JOIN tasks t ON t.key = rt.task_key WHERE rt.run_id = ? ORDER BY rt.position",
                (int(run_id),),
            ).fetchall()
            latest_rows = conn.execute(
                f"SELECT {_LATEST_COLUMNS}, exit_code, signal, resource, log_path, log_tail, "
                "number AS n_attempts FROM run_tasks rt JOIN attempts a "
                "ON a.task_key = rt.task_key AND a.latest = 1 WHERE rt.run_id = ?",
                (int(run_id),),
            ).fetchall()
        alive = self._liveness()
        latest = {}
        for row in latest_rows:
            attempt = dict(row)
            attempt["status"] = alive.attempt_status(row)
            latest[(row["task_key"], row["command"])] = attempt
        parsed: dict[str, list[str]] = {}  # most tasks share one command list
        tasks = []
        for task in task_rows:
            if task["commands"] not in parsed:
                parsed[task["commands"]] = json.loads(task["commands"])
            record = dict(task)
            record["commands"] = parsed[task["commands"]]
            record["params"] = loads(task["params"])
            tasks.append(record)
        return RunDetail(run_record(run_row, alive), tasks, latest)

    def all_tasks(self) -> list[dict[str, Any]]:
        """Every task: key, name, output_dir, params (parsed), commands (a list)."""
        with self.db.transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT key, name, output_dir, params, commands FROM tasks ORDER BY rowid"
            ).fetchall()
        return [
            {
                "key": r["key"],
                "name": r["name"],
                "output_dir": r["output_dir"],
                "params": loads(r["params"]) or {},
                "commands": loads(r["commands"]) or [],
            }
            for r in rows
        ]

    def experiment_rows(self) -> ExperimentRows:
        """Every task with the latest attempt of each of its commands (for the Examiner)."""
        with self.db.transaction(write=False) as conn:
            task_rows = conn.execute(
                "SELECT t.key, t.output_real, t.commands, t.n_attempts, max(rt.run_id) AS run_id "
                "FROM tasks t LEFT JOIN run_tasks rt ON rt.task_key = t.key GROUP BY t.key"
            ).fetchall()
            latest_rows = conn.execute(
                f"SELECT {_LATEST_COLUMNS}, resource FROM attempts a WHERE latest = 1"
            ).fetchall()
            changed = {
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT a.task_key FROM attempts a JOIN runs r ON r.id = a.run_id "
                    "WHERE a.snapshot_id IS NOT r.snapshot_id"
                )
            }
            runs = {
                r["id"]: (
                    r["git_commit"],
                    None if r["git_dirty"] is None else bool(r["git_dirty"]),
                    r["env_hash"],
                )  # fmt: skip
                for r in conn.execute("SELECT id, git_commit, git_dirty, env_hash FROM runs")
            }
        alive = self._liveness()
        latest: dict[str, dict[str, dict[str, Any]]] = {}
        for row in latest_rows:
            attempt = dict(row)
            attempt["status"] = alive.attempt_status(row)
            latest.setdefault(row["task_key"], {})[row["command"]] = attempt
        tasks = []
        for task in task_rows:
            record = dict(task)
            record["commands"] = json.loads(task["commands"])
            tasks.append(record)
        return ExperimentRows(tasks, latest, changed, runs)

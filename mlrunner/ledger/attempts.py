"""Attempts: one row per try of one command, from its start to its end.

A ``running`` attempt whose runner process is dead (host, boot id, pid and start time, see
:mod:`mlrunner.procs`) reads as ``lost``. Every start and end also refreshes the task's
stored progress (:func:`mlrunner.ledger.schema.refresh_task_progress`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from mlrunner import procs
from mlrunner.errors import LedgerError, did_you_mean
from mlrunner.ledger.base import LedgerPart, attempt_record, dumps, sql_text
from mlrunner.ledger.claims import delete_claim
from mlrunner.ledger.schema import refresh_task_progress
from mlrunner.status import END_STATUSES, AttemptStatus

LOG_TAIL_MAX = 16 * 1024

# spelt out in the text, so that SQLite uses the partial index attempts_running
_RUNNING = f"a.status = {sql_text(AttemptStatus.RUNNING)}"


class AttemptsPart(LedgerPart):
    """Start and end attempts; the running, orphaned and past ones; command states."""

    def start_attempt(
        self,
        *,
        run_id: int,
        task_key: str,
        command: str,
        resource: str | None,
        gpus: Sequence[int] | None,
        log_path: str | os.PathLike[str] | None,
        snapshot_id: str | None = None,
        job_id: str | None = None,
        node: str | None = None,
        pid: int | None = None,
        pgid: int | None = None,
        proc_start: int | None = None,
        started_at: float | None = None,
    ) -> int:
        """Record a new 'running' attempt (number = previous max + 1); returns its id.

        ``snapshot_id`` None: the run's snapshot id is recorded. The command's process
        (``pid``, ``pgid``, ``proc_start``) may be given here when it is already spawned,
        saving the :meth:`set_attempt_process` transaction.
        """
        me = self._me()
        gpus_json = None if gpus is None else dumps([int(g) for g in gpus])
        log = None if log_path is None else os.fspath(log_path)
        with self.db.transaction() as conn:
            task = conn.execute("SELECT commands FROM tasks WHERE key = ?", (task_key,)).fetchone()
            if task is None:
                raise LedgerError(f"task {task_key} is not registered in the ledger", file=str(self.path))
            commands = json.loads(task["commands"])
            if command not in commands:
                raise LedgerError(f"task {task_key} has no command '{command}'", file=str(self.path))
            if snapshot_id is None:
                run = conn.execute("SELECT snapshot_id FROM runs WHERE id = ?", (int(run_id),)).fetchone()
                if run is None:
                    raise self._no_run(run_id)
                snapshot_id = run["snapshot_id"]
            conn.execute(
                "UPDATE attempts SET latest = 0 WHERE task_key = ? AND command = ? AND latest = 1",
                (task_key, command),
            )
            try:  # the run's existence is checked by its foreign key
                cur = conn.execute(
                    "INSERT INTO attempts (run_id, task_key, command, number, status, resource, gpus, "
                    "host, boot_id, runner_pid, runner_start, job_id, node, log_path, snapshot_id, "
                    "started_at, latest, pid, pgid, proc_start) "
                    "SELECT ?, ?, ?, coalesce(max(number), 0) + 1, ?, "
                    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ? "
                    "FROM attempts WHERE task_key = ? AND command = ?",
                    (
                        int(run_id), task_key, command, AttemptStatus.RUNNING.value, resource, gpus_json,
                        me.host, me.boot_id, me.pid, me.start, job_id, node, log, snapshot_id,
                        time.time() if started_at is None else started_at,
                        pid, pgid, proc_start, task_key, command,
                    ),
                )  # fmt: skip
            except sqlite3.IntegrityError as e:
                if "FOREIGN KEY" not in str(e):
                    raise
                raise self._no_run(run_id) from e
            refresh_task_progress(conn, task_key, commands)
            return int(cur.lastrowid or 0)

    def set_attempt_process(
        self, attempt_id: int, *, pid: int, pgid: int | None, proc_start: int | None
    ) -> None:
        """Record the command's process (pid, process group, start time) once spawned."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE attempts SET pid = ?, pgid = ?, proc_start = ? WHERE id = ?",
                (pid, pgid, proc_start, int(attempt_id)),
            )
            if cur.rowcount == 0:
                raise self._no_attempt(attempt_id)

    def end_attempt(
        self,
        attempt_id: int,
        *,
        status: str,
        exit_code: int | None = None,
        signal: int | None = None,
        failure_class: str | None = None,
        log_tail: str | None = None,
        release: bool = False,
        ended_at: float | None = None,
    ) -> None:
        """Record an attempt's end; ``status`` one of END_STATUSES. Raises unless recorded.

        ``release``: also drop this process's claim on the attempt's task, in the same
        transaction (what :meth:`~mlrunner.ledger.claims.ClaimsPart.release_task` does),
        when this was the task's last command.
        """
        if status not in END_STATUSES:
            raise LedgerError(
                f"invalid attempt end status '{status}' (one of: {', '.join(sorted(END_STATUSES))})",
                hint=did_you_mean(status, sorted(END_STATUSES)),
            )
        if log_tail is not None and len(log_tail) > LOG_TAIL_MAX:
            log_tail = log_tail[-LOG_TAIL_MAX:]
        failure = None if failure_class is None else str(failure_class)
        me = self._me() if release else None
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT a.task_key, t.commands FROM attempts a JOIN tasks t ON t.key = a.task_key "
                "WHERE a.id = ?",
                (int(attempt_id),),
            ).fetchone()
            if row is None:
                raise self._no_attempt(attempt_id)
            conn.execute(
                "UPDATE attempts SET status = ?, exit_code = ?, signal = ?, failure_class = ?, log_tail = ?, "
                "ended_at = ? WHERE id = ?",
                (
                    str(status),
                    exit_code,
                    signal,
                    failure,
                    log_tail,
                    time.time() if ended_at is None else ended_at,
                    int(attempt_id),
                ),  # fmt: skip
            )
            refresh_task_progress(conn, row["task_key"], json.loads(row["commands"]))
            if me is not None:
                delete_claim(conn, row["task_key"], me)

    def _running(self, task_key: str | None) -> list[sqlite3.Row]:
        sql = (
            "SELECT a.*, t.name, t.output_dir FROM attempts a JOIN tasks t ON t.key = a.task_key "
            f"WHERE {_RUNNING}"
        )
        with self.db.transaction(write=False) as conn:
            if task_key is None:
                return conn.execute(sql + " ORDER BY a.id").fetchall()
            return conn.execute(sql + " AND a.task_key = ? ORDER BY a.id", (task_key,)).fetchall()

    def orphaned_attempts(self, task_key: str | None = None) -> list[dict[str, Any]]:
        """Attempts still 'running' whose runner is dead (this host: known dead).

        Each has every attempt column (pid, pgid, proc_start, host, boot_id, runner_pid...),
        the task's name and output_dir, and ``command_alive`` (procs.is_alive of the
        command's process: True, False, or None when it is unknowable from here). An
        attempt recorded without its pid (the runner died right after the spawn) gets the
        pid of its shepherd when one still runs here (found by its command line).
        """
        alive = self._liveness()
        out = []
        for row in self._running(task_key):
            if alive.runner_alive(row) is False:
                attempt = attempt_record(row)
                local = row["host"] == procs.hostname() and row["boot_id"] == procs.boot_id()
                if row["pid"] is None and local and row["log_path"]:
                    found = procs.find_shepherd(row["log_path"])
                    if found is not None:
                        attempt.update(pid=found[0], pgid=found[0], proc_start=found[1])
                attempt["command_alive"] = (
                    None
                    if attempt["pid"] is None
                    else procs.is_alive(row["host"], row["boot_id"], attempt["pid"], attempt["proc_start"])
                )
                out.append(attempt)
        return out

    def live_attempts(self) -> list[dict[str, Any]]:
        """'running' attempts whose runner is alive (or elsewhere), oldest first.

        Every attempt column (run_id, command, resource, gpus, started_at epoch, pid,
        log_path...) plus the task's name and output_dir.
        """
        alive = self._liveness()
        return [attempt_record(row) for row in self._running(None) if alive.runner_alive(row) is not False]

    def attempts_for(self, task_key: str, command: str | None = None) -> list[dict[str, Any]]:
        """Every attempt of a task (of one command), oldest first, with derived 'lost'."""
        with self.db.transaction(write=False) as conn:
            if command is None:
                rows = conn.execute(
                    "SELECT * FROM attempts WHERE task_key = ? ORDER BY id", (task_key,)
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM attempts WHERE task_key = ? AND command = ? ORDER BY id",
                    (task_key, command),
                ).fetchall()
        alive = self._liveness()
        out = []
        for row in rows:
            attempt = attempt_record(row)
            attempt["status"] = alive.attempt_status(row)
            out.append(attempt)
        return out

    def command_states(self, task_keys: Sequence[str] | None = None) -> dict[tuple[str, str], str]:
        """Latest attempt status per (task key, command); 'running' with a dead runner -> 'lost'.

        Commands never started are absent.
        """
        sql = (
            "SELECT task_key, command, status, host, boot_id, runner_pid, runner_start "
            "FROM attempts WHERE latest = 1 {where}"
        )
        rows: list[sqlite3.Row] = []
        with self.db.transaction(write=False) as conn:
            if task_keys is None:
                rows = conn.execute(sql.format(where="")).fetchall()
            else:
                keys = list(dict.fromkeys(task_keys))
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    where = f"AND task_key IN ({', '.join('?' * len(chunk))})"
                    rows.extend(conn.execute(sql.format(where=where), chunk).fetchall())
        alive = self._liveness()
        return {(r["task_key"], r["command"]): alive.attempt_status(r) for r in rows}

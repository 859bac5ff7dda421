"""The SQLite ledger: every run, task and command attempt, safe under many processes.

One file per output root, ``<output>/.mlrunner/ledger.db`` (``MLRUNNER_LEDGER_DIR``
moves it to local disk). :class:`Ledger` records runs, tasks, claims and attempts and
answers the views (``ledger ls``, ``ledger show``, the Examiner's join); its storage
(connection, transactions, batches, checkpoints, migrations, filesystem checks) is
:class:`mlrunner.ledger.db.LedgerDB`.

Statuses: a ``running`` attempt whose runner process is dead (host, boot id, pid and
start time, see :mod:`mlrunner.procs`) reads as ``lost``; so does a ``running`` run.
Task status is derived from the latest attempt of each of its commands (see
:func:`mlrunner.ledger.schema.task_status`) and is global to the ledger: a task shared
by several runs has one status, its current one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mlrunner import procs
from mlrunner.errors import LedgerError, UsageError, did_you_mean
from mlrunner.ledger.db import (
    BUSY_TIMEOUT_S,
    LEDGER_DIR_ENV,
    LedgerDB,
    check_local_filesystem,
    ledger_dir,
    ledger_path,
    mount_of,
)
from mlrunner.ledger.schema import (
    END_STATUSES,
    FAILED_STATUSES,
    RUN_STATUSES,
    TASK_STATUSES,
    refresh_task_progress,
    task_status,
)

__all__ = [
    "BUSY_TIMEOUT_S",
    "LEDGER_DIR_ENV",
    "LOG_TAIL_MAX",
    "Ledger",
    "check_local_filesystem",
    "iso",
    "ledger_dir",
    "ledger_path",
    "mount_of",
]

LOG_TAIL_MAX = 16 * 1024


def iso(t: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 local time with offset (None stays None)."""
    if t is None:
        return None
    local = time.localtime(t)  # 3x faster than datetime.astimezone(), same text
    offset = local.tm_gmtoff or 0
    sign = "-" if offset < 0 else "+"
    offset = abs(offset)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}{sign}{offset // 3600:02d}:{offset % 3600 // 60:02d}"


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in the ledger: {value!r}")


_ENCODER = json.JSONEncoder(default=_json_default)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# What the views need of an attempt row (the latest per task and command).
_LATEST_COLUMNS = (
    "a.id, a.task_key, a.command, a.status, a.started_at, a.ended_at, a.failure_class, "
    "a.host, a.boot_id, a.runner_pid, a.runner_start"
)


class _Liveness:
    """Memoised runner liveness for one query (None: on another host, unknowable here)."""

    def __init__(self) -> None:
        self._memo: dict[tuple[Any, ...], bool | None] = {}

    def __call__(self, host: str, boot: str, pid: int | None, start: int | None) -> bool | None:
        key = (host, boot, pid, start)
        if key not in self._memo:
            self._memo[key] = procs.is_alive(host, boot, pid, start)
        return self._memo[key]

    def attempt_status(self, row: Mapping[str, Any]) -> str:
        status = row["status"]
        if (
            status == "running"
            and self(row["host"], row["boot_id"], row["runner_pid"], row["runner_start"]) is False
        ):
            return "lost"
        return status


class Ledger(LedgerDB):
    """The ledger of one output root. Thread-safe; fork-safe (reconnects in the child)."""

    def __init__(
        self, output: str | os.PathLike[str], *, create: bool = True, mounts_file: str | None = None
    ) -> None:
        self._me_cache: tuple[int, procs.ProcessId] | None = None
        super().__init__(output, create=create, mounts_file=mounts_file)

    def _me(self) -> procs.ProcessId:
        pid = os.getpid()
        if self._me_cache is None or self._me_cache[0] != pid:
            self._me_cache = (pid, procs.ProcessId.of(pid))
        return self._me_cache[1]

    # -- runs --------------------------------------------------------------------------

    def create_run(
        self,
        *,
        argv: Sequence[str],
        cwd: str | os.PathLike[str],
        params_path: str | os.PathLike[str] | None,
        params_text: str | None,
        options: Mapping[str, Any],
        snapshot: Mapping[str, Any] | None,
        backend: str = "local",
    ) -> int:
        """Record a new run as 'running' by this process; returns its id."""
        me = self._me()
        digest = None if params_text is None else hashlib.sha256(params_text.encode()).hexdigest()
        row = (
            "running", _dumps(list(argv)), os.fspath(cwd),
            None if params_path is None else os.fspath(params_path), params_text, digest,
            _dumps(dict(options)), backend, me.host, me.boot_id, me.pid, me.start, time.time(),
            *self._snapshot_columns(snapshot),
        )  # fmt: skip
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO runs (status, argv, cwd, params_path, params_text, params_sha256, options, "
                "backend, host, boot_id, pid, proc_start, started_at, snapshot, git_commit, git_dirty, "
                "snapshot_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cur.lastrowid or 0)

    @staticmethod
    def _snapshot_columns(snapshot: Mapping[str, Any] | None) -> tuple[Any, ...]:
        if snapshot is None:
            return (None, None, None, None)
        dirty = snapshot.get("dirty")
        return (
            _dumps(dict(snapshot)),
            snapshot.get("commit"),
            None if dirty is None else int(bool(dirty)),
            snapshot.get("snapshot_id"),
        )

    def _run_dict(self, row: sqlite3.Row, alive: _Liveness) -> dict[str, Any]:
        run = dict(row)
        run["argv"] = _loads(run["argv"])
        run["options"] = _loads(run["options"])
        run["snapshot"] = _loads(run["snapshot"])
        run["git_dirty"] = None if run["git_dirty"] is None else bool(run["git_dirty"])
        run["recorded_status"] = run["status"]
        run["runner_alive"] = alive(run["host"], run["boot_id"], run["pid"], run["proc_start"])
        if run["status"] == "running" and run["runner_alive"] is False:
            run["status"] = "lost"
        return run

    def get_run(self, run_id: int | None = None) -> dict[str, Any] | None:
        """A run with every column (epoch times; argv/options/snapshot parsed); None: latest.

        ``status`` reads 'lost' for a 'running' run whose runner is dead; the stored value
        is in ``recorded_status``, the runner's liveness in ``runner_alive``.
        """
        with self._tx(write=False) as conn:
            if run_id is None:
                row = conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
            else:
                row = conn.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        return None if row is None else self._run_dict(row, _Liveness())

    def update_run(
        self,
        run_id: int,
        *,
        status: str | None = None,
        ended_at: float | None = None,
        snapshot: Mapping[str, Any] | None = None,
        runner: bool = True,
    ) -> None:
        """Change a run's status/end/snapshot; ``runner``: record this process as its runner.

        status 'running' clears ended_at; another status without ``ended_at`` ends it now.
        """
        if status is not None and status not in RUN_STATUSES:
            raise LedgerError(f"invalid run status '{status}' (one of: {', '.join(sorted(RUN_STATUSES))})")
        sets: list[str] = []
        args: list[Any] = []
        if status is not None:
            sets.append("status = ?")
            args.append(status)
            sets.append("ended_at = ?")
            args.append(None if status == "running" else (time.time() if ended_at is None else ended_at))
        elif ended_at is not None:
            sets.append("ended_at = ?")
            args.append(ended_at)
        if snapshot is not None:
            sets.append("snapshot = ?, git_commit = ?, git_dirty = ?, snapshot_id = ?")
            args.extend(self._snapshot_columns(snapshot))
        if runner:
            me = self._me()
            sets.append("host = ?, boot_id = ?, pid = ?, proc_start = ?")
            args.extend([me.host, me.boot_id, me.pid, me.start])
        if not sets:
            return
        with self._tx() as conn:
            cur = conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", (*args, int(run_id)))
            if cur.rowcount == 0:
                raise self._no_run(run_id)

    def _no_run(self, run_id: int) -> LedgerError:
        return LedgerError(
            f"no run {run_id} in the ledger", file=str(self.path), hint="`mlrunner ledger ls` lists the runs"
        )

    def list_runs(self) -> list[dict[str, Any]]:
        """One JSON-ready row per run, oldest first (times as ISO 8601 strings).

        Counts are of the run's tasks by their current status: n_tasks, n_finished,
        n_failed, n_running, n_interrupted (interrupted or lost), n_pending, plus
        n_commands and n_commands_finished.
        """
        with self._tx(write=False) as conn:
            rows = conn.execute(
                "SELECT r.*, count(t.key) AS n_tasks, "
                "coalesce(sum(t.status = 'finished'), 0) AS n_finished, "
                "coalesce(sum(t.status = 'failed'), 0) AS n_failed, "
                "coalesce(sum(t.status = 'running'), 0) AS n_running, "
                "coalesce(sum(t.status IN ('interrupted', 'lost')), 0) AS n_interrupted, "
                "coalesce(sum(t.n_commands), 0) AS n_commands, coalesce(sum(t.n_done), 0) AS n_done "
                "FROM runs r LEFT JOIN run_tasks rt ON rt.run_id = r.id "
                "LEFT JOIN tasks t ON t.key = rt.task_key "
                "GROUP BY r.id ORDER BY r.id"
            ).fetchall()
            running = conn.execute(
                "SELECT rt.run_id, a.task_key, a.host, a.boot_id, a.runner_pid, a.runner_start "
                "FROM attempts a JOIN tasks t ON t.key = a.task_key AND t.status = 'running' "
                "JOIN run_tasks rt ON rt.task_key = a.task_key WHERE a.status = 'running' AND a.latest = 1"
            ).fetchall()
        alive = _Liveness()
        live: set[tuple[int, str]] = set()
        held: set[tuple[int, str]] = set()
        for r in running:
            held.add((r["run_id"], r["task_key"]))
            if alive(r["host"], r["boot_id"], r["runner_pid"], r["runner_start"]) is not False:
                live.add((r["run_id"], r["task_key"]))
        lost_per_run: dict[int, int] = {}
        for run_id, _key in held - live:
            lost_per_run[run_id] = lost_per_run.get(run_id, 0) + 1
        out = []
        for row in rows:
            run = self._run_dict(row, alive)
            lost = lost_per_run.get(run["id"], 0)
            n_running = run["n_running"] - lost
            n_interrupted = run["n_interrupted"] + lost
            done = run["n_finished"] + run["n_failed"] + n_running + n_interrupted
            out.append(
                {
                    "id": run["id"],
                    "status": run["status"],
                    "started_at": iso(run["started_at"]),
                    "finished_at": iso(run["ended_at"]),
                    "git_commit": run["git_commit"],
                    "git_dirty": run["git_dirty"],
                    "snapshot_id": run["snapshot_id"],
                    "n_tasks": run["n_tasks"],
                    "n_finished": run["n_finished"],
                    "n_failed": run["n_failed"],
                    "n_running": n_running,
                    "n_interrupted": n_interrupted,
                    "n_pending": run["n_tasks"] - done,
                    "n_commands": run["n_commands"],
                    "n_commands_finished": run["n_done"],
                    "params_path": run["params_path"],
                    "cwd": run["cwd"],
                    "argv": run["argv"],
                    "backend": run["backend"],
                    "host": run["host"],
                    "pid": run["pid"],
                }
            )
        return out

    # -- tasks and claims --------------------------------------------------------------

    def register_tasks(self, run_id: int, tasks: Sequence[Mapping[str, Any]]) -> None:
        """Record the run's tasks ({key, name, output_dir, params, commands}) in one transaction.

        Idempotent: a task already known (by key) keeps its row and attempts; the run's
        list (run_tasks) gets each task once, at its position in ``tasks``.
        """
        real_parents: dict[str, str] = {}
        commands_json: dict[tuple[str, ...], str] = {}
        task_rows = []
        link_rows = []
        for position, task in enumerate(tasks):
            try:
                key, name, output_dir = str(task["key"]), str(task["name"]), os.fspath(task["output_dir"])
                commands = tuple(str(c) for c in task["commands"])
                params = _dumps(task["params"])
            except KeyError as e:
                raise LedgerError(f"task #{position} lacks '{e.args[0]}' (needs key, name, output_dir, "
                                  "params, commands)") from e  # fmt: skip
            # output_real: realpath of the parent (once per parent) + the experiment dir's name
            parent, base = os.path.split(os.path.normpath(output_dir))
            if parent not in real_parents:
                real_parents[parent] = os.path.realpath(parent or ".")
            if commands not in commands_json:
                commands_json[commands] = _dumps(list(commands))
            real = os.path.join(real_parents[parent], base)
            task_rows.append((key, name, output_dir, real, params, commands_json[commands], len(commands)))
            link_rows.append((int(run_id), key, position))
        # in key order, the B-tree inserts touch each page once: 100k tasks 4.4 s, not 6.2 s
        task_rows.sort()
        link_rows.sort(key=lambda row: row[1])
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE id = ?", (int(run_id),)).fetchone() is None:
                raise self._no_run(run_id)
            conn.executemany(
                "INSERT OR IGNORE INTO tasks (key, name, output_dir, output_real, params, commands, "
                "n_commands) VALUES (?, ?, ?, ?, ?, ?, ?)",
                task_rows,
            )
            conn.executemany(
                "INSERT OR IGNORE INTO run_tasks (run_id, task_key, position) VALUES (?, ?, ?)", link_rows
            )

    def command_states(self, task_keys: Sequence[str] | None = None) -> dict[tuple[str, str], str]:
        """Latest attempt status per (task key, command); 'running' with a dead runner -> 'lost'.

        Commands never started are absent.
        """
        sql = (
            "SELECT task_key, command, status, host, boot_id, runner_pid, runner_start "
            "FROM attempts WHERE latest = 1 {where}"
        )
        rows: list[sqlite3.Row] = []
        with self._tx(write=False) as conn:
            if task_keys is None:
                rows = conn.execute(sql.format(where="")).fetchall()
            else:
                keys = list(dict.fromkeys(task_keys))
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    where = f"AND task_key IN ({', '.join('?' * len(chunk))})"
                    rows.extend(conn.execute(sql.format(where=where), chunk).fetchall())
        alive = _Liveness()
        return {(r["task_key"], r["command"]): alive.attempt_status(r) for r in rows}

    def claim_task(self, task_key: str, run_id: int, *, states: dict[str, str] | None = None) -> bool:
        """Atomically claim a task for this process: at most one live runner per task.

        Succeeds when nobody holds it, this process already does, or the holder is dead
        (a holder on another host counts as alive). The caller must then deal with the
        task's :meth:`orphaned_attempts` before starting its commands.

        ``states``, when given and the claim succeeds, is filled in the claim's own
        transaction with the task's latest attempt status per command *as stored* (a
        ``running`` attempt of a dead runner stays ``running`` here: settle it first).
        """
        me = self._me()
        with self._tx() as conn:  # the common case, an unclaimed task: one write transaction
            if self._insert_claim(conn, task_key, run_id, me):
                self._fill_states(conn, task_key, states)
                return True
            held = conn.execute("SELECT * FROM claims WHERE task_key = ?", (task_key,)).fetchone()
            if held is not None and (held["host"], held["boot_id"], held["pid"], held["proc_start"]) == (
                me.host, me.boot_id, me.pid, me.start,
            ):  # fmt: skip
                self._fill_states(conn, task_key, states)
                return True
        # held by another process: liveness is checked outside any transaction (it reads /proc)
        if (
            held is not None
            and procs.is_alive(held["host"], held["boot_id"], held["pid"], held["proc_start"]) is not False
        ):
            return False
        with self._tx() as conn:
            if held is not None:  # compare-and-swap: remove exactly the dead holder seen above
                conn.execute(
                    "DELETE FROM claims WHERE task_key = ? AND pid = ? AND host = ? AND boot_id = ? "
                    "AND proc_start IS ? AND claimed_at = ?",
                    (
                        task_key,
                        held["pid"],
                        held["host"],
                        held["boot_id"],
                        held["proc_start"],
                        held["claimed_at"],
                    ),
                )
            if not self._insert_claim(conn, task_key, run_id, me):
                return False
            self._fill_states(conn, task_key, states)
            return True

    @staticmethod
    def _insert_claim(conn: sqlite3.Connection, task_key: str, run_id: int, me: procs.ProcessId) -> bool:
        cur = conn.execute(
            "INSERT OR IGNORE INTO claims (task_key, run_id, host, boot_id, pid, proc_start, claimed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (task_key, int(run_id), me.host, me.boot_id, me.pid, me.start, time.time()),
        )
        return cur.rowcount == 1

    @staticmethod
    def _fill_states(conn: sqlite3.Connection, task_key: str, states: dict[str, str] | None) -> None:
        if states is not None:
            states.clear()
            for command, status in conn.execute(
                "SELECT command, status FROM attempts WHERE task_key = ? AND latest = 1", (task_key,)
            ):
                states[command] = status

    def release_task(self, task_key: str) -> None:
        """Drop this process's claim on a task (another holder's claim is left alone)."""
        me = self._me()
        with self._tx() as conn:
            self._delete_claim(conn, task_key, me)

    @staticmethod
    def _delete_claim(conn: sqlite3.Connection, task_key: str, me: procs.ProcessId) -> None:
        conn.execute(
            "DELETE FROM claims WHERE task_key = ? AND host = ? AND boot_id = ? AND pid = ? "
            "AND proc_start IS ?",
            (task_key, me.host, me.boot_id, me.pid, me.start),
        )

    # -- attempts ----------------------------------------------------------------------

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
    ) -> int:
        """Record a new 'running' attempt (number = previous max + 1); returns its id.

        ``snapshot_id`` None: the run's snapshot id is recorded. The command's process
        (``pid``, ``pgid``, ``proc_start``) may be given here when it is already spawned,
        saving the :meth:`set_attempt_process` transaction.
        """
        me = self._me()
        gpus_json = None if gpus is None else _dumps([int(g) for g in gpus])
        log = None if log_path is None else os.fspath(log_path)
        with self._tx() as conn:
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
                    "SELECT ?, ?, ?, coalesce(max(number), 0) + 1, 'running', "
                    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ? "
                    "FROM attempts WHERE task_key = ? AND command = ?",
                    (
                        int(run_id), task_key, command, resource, gpus_json, me.host, me.boot_id, me.pid,
                        me.start, job_id, node, log, snapshot_id, time.time(),
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
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE attempts SET pid = ?, pgid = ?, proc_start = ? WHERE id = ?",
                (pid, pgid, proc_start, int(attempt_id)),
            )
            if cur.rowcount == 0:
                raise self._no_attempt(attempt_id)

    def _no_attempt(self, attempt_id: int) -> LedgerError:
        return LedgerError(f"no attempt {attempt_id} in the ledger", file=str(self.path))

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
    ) -> None:
        """Record an attempt's end; ``status`` one of END_STATUSES. Raises unless recorded.

        ``release``: also drop this process's claim on the attempt's task, in the same
        transaction (what :meth:`release_task` does), when this was the task's last command.
        """
        if status not in END_STATUSES:
            raise LedgerError(
                f"invalid attempt end status '{status}' (one of: {', '.join(sorted(END_STATUSES))})",
                hint=did_you_mean(status, END_STATUSES),
            )
        if log_tail is not None and len(log_tail) > LOG_TAIL_MAX:
            log_tail = log_tail[-LOG_TAIL_MAX:]
        me = self._me() if release else None
        with self._tx() as conn:
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
                (status, exit_code, signal, failure_class, log_tail, time.time(), int(attempt_id)),
            )
            refresh_task_progress(conn, row["task_key"], json.loads(row["commands"]))
            if me is not None:
                self._delete_claim(conn, row["task_key"], me)

    @staticmethod
    def _attempt_dict(row: sqlite3.Row) -> dict[str, Any]:
        attempt = dict(row)
        if "gpus" in attempt:
            attempt["gpus"] = _loads(attempt["gpus"])
        return attempt

    def _running(self, task_key: str | None) -> list[sqlite3.Row]:
        sql = (
            "SELECT a.*, t.name, t.output_dir FROM attempts a JOIN tasks t ON t.key = a.task_key "
            "WHERE a.status = 'running'"
        )
        with self._tx(write=False) as conn:
            if task_key is None:
                return conn.execute(sql + " ORDER BY a.id").fetchall()
            return conn.execute(sql + " AND a.task_key = ? ORDER BY a.id", (task_key,)).fetchall()

    def orphaned_attempts(self, task_key: str | None = None) -> list[dict[str, Any]]:
        """Attempts still 'running' whose runner is dead (this host: known dead).

        Each has every attempt column (pid, pgid, proc_start, host, boot_id, runner_pid...),
        the task's name and output_dir, and ``command_alive`` (procs.is_alive of the
        command's process: True, False, or None when it is unknowable from here).
        """
        alive = _Liveness()
        out = []
        for row in self._running(task_key):
            if alive(row["host"], row["boot_id"], row["runner_pid"], row["runner_start"]) is False:
                attempt = self._attempt_dict(row)
                attempt["command_alive"] = (
                    None
                    if row["pid"] is None
                    else procs.is_alive(row["host"], row["boot_id"], row["pid"], row["proc_start"])
                )
                out.append(attempt)
        return out

    def live_attempts(self) -> list[dict[str, Any]]:
        """'running' attempts whose runner is alive (or elsewhere): for `mlrunner status`.

        Every attempt column (run_id, command, resource, gpus, started_at epoch, pid,
        log_path...) plus the task's name and output_dir.
        """
        alive = _Liveness()
        return [
            self._attempt_dict(row)
            for row in self._running(None)
            if alive(row["host"], row["boot_id"], row["runner_pid"], row["runner_start"]) is not False
        ]

    def attempts_for(self, task_key: str, command: str | None = None) -> list[dict[str, Any]]:
        """Every attempt of a task (of one command), oldest first, with derived 'lost'."""
        with self._tx(write=False) as conn:
            if command is None:
                rows = conn.execute(
                    "SELECT * FROM attempts WHERE task_key = ? ORDER BY id", (task_key,)
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM attempts WHERE task_key = ? AND command = ? ORDER BY id",
                    (task_key, command),
                ).fetchall()
        alive = _Liveness()
        out = []
        for row in rows:
            attempt = self._attempt_dict(row)
            attempt["status"] = alive.attempt_status(row)
            out.append(attempt)
        return out

    # -- views -------------------------------------------------------------------------

    def show_run(self, run_id: int, status: str | None = None) -> dict[str, Any]:
        """The `ledger show --json` document of a run (JSON-ready, ISO 8601 times).

        ``{"run": {...}, "tasks": [{"name", "output_dir", "status", "params", "key",
        "position", "commands": [{"name", "status", "exit_code", "signal", "attempts",
        "resource", "started_at", "ended_at", "log", "failure_class", "log_tail"}]}]}``;
        ``status`` keeps only the tasks with that status.
        """
        if status is not None and status not in TASK_STATUSES:
            raise UsageError(
                f"unknown task status '{status}' (one of: {', '.join(TASK_STATUSES)})",
                hint=did_you_mean(status, TASK_STATUSES),
            )
        with self._tx(write=False) as conn:
            run_row = conn.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone()
            if run_row is None:
                raise self._no_run(run_id)
            tasks = conn.execute(
                "SELECT t.key, t.name, t.output_dir, t.params, t.commands, rt.position FROM run_tasks rt "
                "JOIN tasks t ON t.key = rt.task_key WHERE rt.run_id = ? ORDER BY rt.position",
                (int(run_id),),
            ).fetchall()
            latest = conn.execute(
                f"SELECT {_LATEST_COLUMNS}, exit_code, signal, resource, log_path, log_tail, "
                "number AS n_attempts FROM run_tasks rt JOIN attempts a "
                "ON a.task_key = rt.task_key AND a.latest = 1 WHERE rt.run_id = ?",
                (int(run_id),),
            ).fetchall()
        alive = _Liveness()
        by_key: dict[str, dict[str, sqlite3.Row]] = {}
        for row in latest:
            by_key.setdefault(row["task_key"], {})[row["command"]] = row
        run = self._run_dict(run_row, alive)
        for name in ("started_at", "ended_at"):
            run[name] = iso(run[name])
        run.pop("params_text", None)
        run["finished_at"] = run["ended_at"]
        out_tasks = []
        parsed: dict[str, list[str]] = {}  # most tasks share one command list
        for task in tasks:
            commands = []
            if task["commands"] not in parsed:
                parsed[task["commands"]] = json.loads(task["commands"])
            for name in parsed[task["commands"]]:
                a = by_key.get(task["key"], {}).get(name)
                commands.append(
                    {
                        "name": name,
                        "status": "pending" if a is None else alive.attempt_status(a),
                        "exit_code": None if a is None else a["exit_code"],
                        "signal": None if a is None else a["signal"],
                        "attempts": 0 if a is None else a["n_attempts"],
                        "resource": None if a is None else a["resource"],
                        "started_at": None if a is None else iso(a["started_at"]),
                        "ended_at": None if a is None else iso(a["ended_at"]),
                        "log": None if a is None else a["log_path"],
                        "failure_class": None if a is None else a["failure_class"],
                        "log_tail": None if a is None else a["log_tail"],
                    }
                )
            state = task_status(None if c["status"] == "pending" else c["status"] for c in commands)
            if status is None or state == status:
                out_tasks.append(
                    {
                        "name": task["name"],
                        "output_dir": task["output_dir"],
                        "status": state,
                        "params": json.loads(task["params"]),
                        "key": task["key"],
                        "position": task["position"],
                        "commands": commands,
                    }
                )
        return {"run": run, "tasks": out_tasks}

    def experiment_summary(self) -> dict[str, dict[str, Any]]:
        """Ledger columns for the Examiner, keyed by os.path.realpath(task output dir).

        Values: status (current task status), run_id (latest run that registered the
        task), git_commit, git_dirty (that run's snapshot), started_at (epoch: earliest
        start among the latest attempt of each command, or None), duration_s (sum of the
        latest attempts' end - start, None if none ended), resource (of the latest
        attempt), attempts (total), code_changed (an attempt ran other code than its run's
        snapshot), failure_class (of the latest failed attempt among the latest attempt of
        each command, else None). When several tasks share an output dir, the one
        registered by the most recent run wins.
        """
        with self._tx(write=False) as conn:
            tasks = conn.execute(
                "SELECT t.key, t.output_real, t.commands, t.n_attempts, max(rt.run_id) AS run_id "
                "FROM tasks t LEFT JOIN run_tasks rt ON rt.task_key = t.key GROUP BY t.key"
            ).fetchall()
            latest = conn.execute(
                f"SELECT {_LATEST_COLUMNS}, resource FROM attempts a WHERE latest = 1"
            ).fetchall()
            changed = {
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT a.task_key FROM attempts a JOIN runs r ON r.id = a.run_id "
                    "WHERE a.snapshot_id IS NOT r.snapshot_id"
                )
            }
            runs = {r["id"]: r for r in conn.execute("SELECT id, git_commit, git_dirty FROM runs")}
        alive = _Liveness()
        by_key: dict[str, dict[str, sqlite3.Row]] = {}
        for row in latest:
            by_key.setdefault(row["task_key"], {})[row["command"]] = row
        out: dict[str, dict[str, Any]] = {}
        rank: dict[str, tuple[int, int]] = {}
        for task in tasks:
            attempts = by_key.get(task["key"], {})
            commands = json.loads(task["commands"])
            current = [attempts[c] for c in commands if c in attempts]
            states = {c: alive.attempt_status(attempts[c]) for c in commands if c in attempts}
            ended = [a["ended_at"] - a["started_at"] for a in current if a["ended_at"] is not None]
            failed = [a for a in current if states[a["command"]] in FAILED_STATUSES]
            run = runs.get(task["run_id"])
            last = max(current, key=lambda a: a["id"], default=None)  # the task's latest attempt
            order = (task["run_id"] or 0, 0 if last is None else last["id"])
            if task["output_real"] in rank and rank[task["output_real"]] > order:
                continue
            rank[task["output_real"]] = order
            out[task["output_real"]] = {
                "status": task_status(states.get(c) for c in commands),
                "run_id": task["run_id"],
                "git_commit": None if run is None else run["git_commit"],
                "git_dirty": None if run is None or run["git_dirty"] is None else bool(run["git_dirty"]),
                "started_at": min((a["started_at"] for a in current), default=None),
                "duration_s": sum(ended) if ended else None,
                "resource": None if last is None else last["resource"],
                "attempts": task["n_attempts"],
                "code_changed": task["key"] in changed,
                "failure_class": max(failed, key=lambda a: a["id"])["failure_class"] if failed else None,
            }
        return out

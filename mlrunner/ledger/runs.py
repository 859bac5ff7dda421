"""Runs and their tasks: one row per invocation of ``run`` (or resume of it), one per task."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mlrunner.errors import LedgerError
from mlrunner.ledger.base import LedgerPart, dumps, run_record
from mlrunner.status import RunStatus

# What a run row may hold (``dry-run`` is only ever a summary, never recorded).
RUN_STATUSES = frozenset(RunStatus) - {RunStatus.DRY_RUN}


def snapshot_columns(snapshot: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """(snapshot, git_commit, git_dirty, snapshot_id) of a run row."""
    if snapshot is None:
        return (None, None, None, None)
    dirty = snapshot.get("dirty")
    return (
        dumps(dict(snapshot)),
        snapshot.get("commit"),
        None if dirty is None else int(bool(dirty)),
        snapshot.get("snapshot_id"),
    )


class RunsPart(LedgerPart):
    """Create, read and update runs; register their tasks."""

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
        env_hash: str | None = None,
    ) -> int:
        """Record a new run as 'running' by this process; returns its id. ``env_hash``: of
        the run's environment fingerprint (:mod:`mlrunner.envinfo`)."""
        me = self._me()
        import hashlib  # only when a run starts: `ledger ls` never needs it

        digest = None if params_text is None else hashlib.sha256(params_text.encode()).hexdigest()
        row = (
            RunStatus.RUNNING.value, dumps(list(argv)), os.fspath(cwd),
            None if params_path is None else os.fspath(params_path), params_text, digest,
            dumps(dict(options)), backend, me.host, me.boot_id, me.pid, me.start, time.time(),
            *snapshot_columns(snapshot), env_hash,
        )  # fmt: skip
        with self.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO runs (status, argv, cwd, params_path, params_text, params_sha256, options, "
                "backend, host, boot_id, pid, proc_start, started_at, snapshot, git_commit, git_dirty, "
                "snapshot_id, env_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cur.lastrowid or 0)

    def get_run(self, run_id: int | None = None) -> dict[str, Any] | None:
        """A run with every column (epoch times; argv/options/snapshot parsed); None: latest.

        ``status`` reads 'lost' for a 'running' run whose runner is dead; the stored value
        is in ``recorded_status``, the runner's liveness in ``runner_alive``.
        """
        with self.db.transaction(write=False) as conn:
            if run_id is None:
                row = conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
            else:
                row = conn.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        return None if row is None else run_record(row, self._liveness())

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
            args.append(str(status))
            sets.append("ended_at = ?")
            if status == RunStatus.RUNNING:
                args.append(None)
            else:
                args.append(time.time() if ended_at is None else ended_at)
        elif ended_at is not None:
            sets.append("ended_at = ?")
            args.append(ended_at)
        if snapshot is not None:
            sets.append("snapshot = ?, git_commit = ?, git_dirty = ?, snapshot_id = ?")
            args.extend(snapshot_columns(snapshot))
        if runner:
            me = self._me()
            sets.append("host = ?, boot_id = ?, pid = ?, proc_start = ?")
            args.extend([me.host, me.boot_id, me.pid, me.start])
        if not sets:
            return
        with self.db.transaction() as conn:
            cur = conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", (*args, int(run_id)))
            if cur.rowcount == 0:
                raise self._no_run(run_id)

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
                params = dumps(task["params"])
            except KeyError as e:
                raise LedgerError(f"task #{position} lacks '{e.args[0]}' (needs key, name, output_dir, "
                                  "params, commands)") from e  # fmt: skip
            # output_real: realpath of the parent (once per parent) + the experiment dir's name
            parent, base = os.path.split(os.path.normpath(output_dir))
            if parent not in real_parents:
                real_parents[parent] = os.path.realpath(parent or ".")
            if commands not in commands_json:
                commands_json[commands] = dumps(list(commands))
            real = os.path.join(real_parents[parent], base)
            task_rows.append((key, name, output_dir, real, params, commands_json[commands], len(commands)))
            link_rows.append((int(run_id), key, position))
        # in key order, the B-tree inserts touch each page once: 100k tasks 4.4 s, not 6.2 s
        task_rows.sort()
        link_rows.sort(key=lambda row: row[1])
        with self.db.transaction() as conn:
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

"""Schema of the SQLite ledger: ordered named migrations, derived task progress.

Every migration runs in its own ``BEGIN IMMEDIATE`` transaction and is recorded in the
``migrations`` table (name, applied_at). The caller (:class:`mlrunner.ledger.db.LedgerDB`)
holds a ``filelock`` on ``ledger.lock`` while migrating, so two processes opening a
fresh ledger at once never race. A ledger that records a migration this code does not
know was written by a newer mlrunner and is refused.

Never edit or reorder a released migration: append a new one. The statuses stored are
those of :mod:`mlrunner.status`; a released migration's SQL keeps the text it was written
with.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mlrunner.errors import LedgerVersionError
from mlrunner.status import AttemptStatus, FailureClass, task_status


@dataclass(frozen=True)
class Migration:
    name: str
    apply: Callable[[sqlite3.Connection], None]


def _run(conn: sqlite3.Connection, statements: Sequence[str]) -> None:
    # One statement at a time: executescript() would COMMIT the open transaction.
    for statement in statements:
        conn.execute(statement)


def _m0001_initial(conn: sqlite3.Connection) -> None:
    _run(
        conn,
        [
            """CREATE TABLE runs (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                status TEXT NOT NULL,
                argv TEXT NOT NULL,
                cwd TEXT NOT NULL,
                params_path TEXT,
                params_text TEXT,
                params_sha256 TEXT,
                options TEXT NOT NULL,
                backend TEXT NOT NULL,
                host TEXT NOT NULL,
                boot_id TEXT NOT NULL,
                pid INTEGER NOT NULL,
                proc_start INTEGER,
                started_at REAL NOT NULL,
                ended_at REAL,
                snapshot TEXT,
                git_commit TEXT,
                git_dirty INTEGER,
                snapshot_id TEXT
            )""",
            """CREATE TABLE tasks (
                key TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                output_dir TEXT NOT NULL,
                output_real TEXT NOT NULL,
                params TEXT NOT NULL,
                commands TEXT NOT NULL
            )""",
            """CREATE TABLE run_tasks (
                run_id INTEGER NOT NULL REFERENCES runs(id),
                task_key TEXT NOT NULL REFERENCES tasks(key),
                position INTEGER NOT NULL,
                PRIMARY KEY (run_id, task_key)
            ) WITHOUT ROWID""",
            """CREATE TABLE attempts (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                run_id INTEGER NOT NULL REFERENCES runs(id),
                task_key TEXT NOT NULL REFERENCES tasks(key),
                command TEXT NOT NULL,
                number INTEGER NOT NULL,
                status TEXT NOT NULL,
                exit_code INTEGER,
                signal INTEGER,
                resource TEXT,
                gpus TEXT,
                host TEXT NOT NULL,
                boot_id TEXT NOT NULL,
                runner_pid INTEGER NOT NULL,
                runner_start INTEGER,
                pid INTEGER,
                pgid INTEGER,
                proc_start INTEGER,
                job_id TEXT,
                node TEXT,
                log_path TEXT,
                snapshot_id TEXT,
                started_at REAL NOT NULL,
                ended_at REAL,
                UNIQUE (task_key, command, number)
            )""",
            """CREATE TABLE claims (
                task_key TEXT PRIMARY KEY,
                run_id INTEGER NOT NULL,
                host TEXT NOT NULL,
                boot_id TEXT NOT NULL,
                pid INTEGER NOT NULL,
                proc_start INTEGER,
                claimed_at REAL NOT NULL
            )""",
        ],
    )


def _m0002_failure_details(conn: sqlite3.Connection) -> None:
    _run(
        conn,
        [
            "ALTER TABLE attempts ADD COLUMN failure_class TEXT",
            "ALTER TABLE attempts ADD COLUMN log_tail TEXT",
        ],
    )


def _m0003_task_progress(conn: sqlite3.Connection) -> None:
    """Per-task derived progress (fast `ledger ls`), a latest-attempt flag, and indexes.

    ``attempts.latest`` is 1 on the latest attempt of each (task, command): the views
    read those rows directly instead of grouping the whole attempts table.
    """
    _run(
        conn,
        [
            "ALTER TABLE attempts ADD COLUMN latest INTEGER NOT NULL DEFAULT 0",
            "UPDATE attempts SET latest = 1 WHERE id IN "
            "(SELECT id FROM (SELECT id, max(number) FROM attempts GROUP BY task_key, command))",
            "CREATE INDEX attempts_latest ON attempts(task_key, command) WHERE latest = 1",
            "ALTER TABLE tasks ADD COLUMN status TEXT NOT NULL DEFAULT 'pending'",
            "ALTER TABLE tasks ADD COLUMN n_commands INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE tasks ADD COLUMN n_done INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE tasks ADD COLUMN n_attempts INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX attempts_running ON attempts(task_key, command) WHERE status = 'running'",
            "CREATE INDEX attempts_run ON attempts(run_id)",
            "CREATE INDEX run_tasks_task ON run_tasks(task_key, run_id)",
            "CREATE INDEX tasks_output ON tasks(output_real)",
        ],
    )
    refresh_all_task_progress(conn)


def _m0004_failure_class_oom_split(conn: sqlite3.Connection) -> None:
    """Out of memory's two failure classes, kept apart: the host's (Slurm OUT_OF_MEMORY,
    attempt status ``oom``) is ``host_oom``; CUDA's (found in the log of a failed command),
    recorded as ``oom`` before, is ``gpu_oom``."""
    legacy_oom = "oom"  # the failure class of both before this migration
    conn.execute(
        "UPDATE attempts SET failure_class = ? WHERE status = ?",
        (FailureClass.HOST_OOM.value, AttemptStatus.OOM.value),
    )
    conn.execute(
        "UPDATE attempts SET failure_class = ? WHERE failure_class = ? AND status != ?",
        (FailureClass.GPU_OOM.value, legacy_oom, AttemptStatus.OOM.value),
    )


def _m0006_run_env(conn: sqlite3.Connection) -> None:
    """The run's environment fingerprint (``env.json``): its sha256, None before."""
    conn.execute("ALTER TABLE runs ADD COLUMN env_hash TEXT")


def _m0007_cancels(conn: sqlite3.Connection) -> None:
    """Cancel requests (``mlrunner cancel``): the runners of a task stop it at once."""
    conn.execute(
        "CREATE TABLE cancels (task_key TEXT PRIMARY KEY, requested_at REAL NOT NULL, "
        "requested_by TEXT NOT NULL DEFAULT '')"
    )


def _m0008_runners(conn: sqlite3.Connection) -> None:
    """Every runner of a run (a resume beside a live run joins it) and its heartbeat: a
    runner on another host is alive only while its heartbeat is fresh."""
    conn.execute(
        "CREATE TABLE runners (host TEXT NOT NULL, boot_id TEXT NOT NULL, pid INTEGER NOT NULL, "
        "proc_start INTEGER, run_id INTEGER NOT NULL REFERENCES runs(id), started_at REAL NOT NULL, "
        "heartbeat_at REAL NOT NULL, ended_at REAL, PRIMARY KEY (host, boot_id, pid, proc_start))"
    )
    conn.execute("CREATE INDEX runners_run ON runners(run_id)")


MIGRATIONS: tuple[Migration, ...] = (
    Migration("0001_initial", _m0001_initial),
    Migration("0002_attempt_failure_details", _m0002_failure_details),
    Migration("0003_task_progress", _m0003_task_progress),
    Migration("0004_failure_class_oom_split", _m0004_failure_class_oom_split),
    Migration("0006_run_env", _m0006_run_env),
    Migration("0007_cancels", _m0007_cancels),
    Migration("0008_runners", _m0008_runners),
)


def _progress(commands: Sequence[str], latest: dict[str, str]) -> tuple[str, int]:
    status = task_status(latest.get(c) for c in commands).value
    return status, sum(latest.get(c) == AttemptStatus.FINISHED for c in commands)


def refresh_task_progress(
    conn: sqlite3.Connection, task_key: str, commands: list[str] | None = None
) -> list[str]:
    """Recompute one task's stored status/counters from its attempts; returns its commands.

    Call inside the write transaction that changed the task's attempts; ``commands``
    (the task's, when the caller has just read them) saves reading them again.
    """
    if commands is None:
        row = conn.execute("SELECT commands FROM tasks WHERE key = ?", (task_key,)).fetchone()
        if row is None:
            return []
        commands = json.loads(row[0])
    latest: dict[str, str] = {}
    n_attempts = 0
    for command, status, count in conn.execute(
        "SELECT command, status, number FROM attempts WHERE task_key = ? AND latest = 1", (task_key,)
    ):
        latest[command] = status
        n_attempts += count
    status, n_done = _progress(commands, latest)
    conn.execute(
        "UPDATE tasks SET status = ?, n_commands = ?, n_done = ?, n_attempts = ? WHERE key = ?",
        (status, len(commands), n_done, n_attempts, task_key),
    )
    return commands


def refresh_all_task_progress(conn: sqlite3.Connection) -> None:
    """Recompute every task's stored progress (backfill after a migration)."""
    latest: dict[str, dict[str, str]] = {}
    counts: dict[str, int] = {}
    for key, command, status, count in conn.execute(
        "SELECT task_key, command, status, number FROM attempts WHERE latest = 1"
    ):
        latest.setdefault(key, {})[command] = status
        counts[key] = counts.get(key, 0) + count
    rows = []
    for key, commands_json in conn.execute("SELECT key, commands FROM tasks").fetchall():
        commands = json.loads(commands_json)
        status, n_done = _progress(commands, latest.get(key, {}))
        rows.append((status, len(commands), n_done, counts.get(key, 0), key))
    conn.executemany(
        "UPDATE tasks SET status = ?, n_commands = ?, n_done = ?, n_attempts = ? WHERE key = ?", rows
    )


def applied_migrations(conn: sqlite3.Connection) -> list[str]:
    """Names recorded in the ``migrations`` table, oldest first ([] for a fresh file)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'migrations'"
    ).fetchone()
    if exists is None:
        return []
    return [name for (name,) in conn.execute("SELECT name FROM migrations ORDER BY rowid")]


def pending_migrations(
    conn: sqlite3.Connection, where: str, migrations: Sequence[Migration] = MIGRATIONS
) -> list[Migration]:
    """Migrations still to apply; LedgerVersionError when the file is newer than this code."""
    applied = applied_migrations(conn)
    known = {m.name for m in migrations}
    unknown = [name for name in applied if name not in known]
    if unknown:
        from mlrunner import __version__

        raise LedgerVersionError(
            f"this ledger was written by a newer mlrunner: it records schema migration(s) "
            f"{', '.join(unknown)} that mlrunner {__version__} does not know",
            file=where,
            hint="upgrade mlrunner (pip install -U mlrunner) to read or write this ledger",
        )
    done = set(applied)
    return [m for m in migrations if m.name not in done]


def migrate(conn: sqlite3.Connection, where: str, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply the pending migrations, one transaction each; returns the names applied.

    ``conn`` must be in autocommit mode (``isolation_level=None``). The caller serialises
    migrations across processes (file lock); the re-check inside each transaction keeps
    this correct even without it.
    """
    done: list[str] = []
    for migration in pending_migrations(conn, where, migrations):
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            if conn.execute("SELECT 1 FROM migrations WHERE name = ?", (migration.name,)).fetchone():
                conn.execute("ROLLBACK")
                continue
            migration.apply(conn)
            conn.execute(
                "INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (migration.name, time.time())
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        done.append(migration.name)
    return done

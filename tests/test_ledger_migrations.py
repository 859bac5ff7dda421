"""Ledger schema versioning: upgrade from every earlier schema, refuse a newer one."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlrunner import procs
from mlrunner.errors import LedgerVersionError
from mlrunner.ledger import Ledger, ledger_path
from mlrunner.ledger.schema import MIGRATIONS, applied_migrations, migrate, refresh_all_task_progress
from mlrunner.ledger.views import experiment_summary, run_doc, runs_doc
from mlrunner.status import AttemptStatus, FailureClass


@functools.lru_cache(maxsize=1)
def dead_pid() -> int:
    """A pid that exited; recorded with start time 1 (tick 1 after boot), so a reuse of the pid
    by a later process still reads as another process."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def old_ledger(output: Path, k: int) -> Path:
    """A ledger as mlrunner with only the first ``k`` migrations wrote it, with data in it."""
    path = ledger_path(output)
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    migrate(conn, str(path), MIGRATIONS[:k])
    me = procs.ProcessId.of()
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO runs (id, status, argv, cwd, params_path, params_text, params_sha256, options, backend, "
        "host, boot_id, pid, proc_start, started_at, ended_at, snapshot, git_commit, git_dirty, snapshot_id) "
        "VALUES (1, 'failed', ?, '/w', 'params.yaml', 'a: 1', 'h', ?, 'local', ?, ?, ?, 1, ?, ?, ?, "
        "'c0ffee', 1, 's1')",
        (json.dumps(["run"]), json.dumps({"retries": 0}), me.host, me.boot_id, dead_pid(), now - 10, now,
         json.dumps({"commit": "c0ffee", "dirty": True, "snapshot_id": "s1"})),
    )  # fmt: skip
    for key in ("a", "b", "c"):
        conn.execute(
            "INSERT INTO tasks (key, name, output_dir, output_real, params, commands) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (key, key, str(output / key), os.path.realpath(output / key), json.dumps({"k": key}),
             json.dumps(["prep", "train", "test"])),
        )  # fmt: skip
        conn.execute("INSERT INTO run_tasks (run_id, task_key, position) VALUES (1, ?, ?)", (key, ord(key)))
    attempts = [
        ("a", "train", 1, "finished", 0), ("a", "test", 1, "finished", 0),
        ("b", "train", 1, "failed", 1), ("c", "train", 1, "running", None),
        ("a", "prep", 1, "failed", 1), ("a", "prep", 2, "finished", 0),
    ]  # fmt: skip
    for key, command, number, status, code in attempts:
        conn.execute(
            "INSERT INTO attempts (run_id, task_key, command, number, status, exit_code, resource, host, "
            "boot_id, runner_pid, runner_start, started_at, ended_at, snapshot_id, log_path) "
            "VALUES (1, ?, ?, ?, ?, ?, '0', ?, ?, ?, 1, ?, ?, 's1', ?)",
            (key, command, number, status, code, me.host, me.boot_id, dead_pid(), now - 5,
             None if status == "running" else now - 1, f"{key}/log.{command}"),
        )  # fmt: skip
    if k >= 3:  # as 0003's code keeps them: the latest-attempt flags and the task progress
        conn.execute(
            "UPDATE attempts SET latest = 1 WHERE id IN "
            "(SELECT id FROM (SELECT id, max(number) FROM attempts GROUP BY task_key, command))"
        )
        refresh_all_task_progress(conn)
    conn.execute("COMMIT")
    conn.close()
    return path


@pytest.mark.parametrize("k", range(1, len(MIGRATIONS)))
def test_upgrade_from_every_earlier_schema(tmp_path: Path, k: int) -> None:
    out = tmp_path / "out"
    path = old_ledger(out, k)
    with Ledger(out) as ledger:
        conn = ledger.db.connection()
        rows = conn.execute("SELECT name, applied_at FROM migrations ORDER BY rowid").fetchall()
        assert [r[0] for r in rows] == [m.name for m in MIGRATIONS]
        assert all(isinstance(r[1], float) for r in rows)
        run = ledger.get_run(1)
        assert run is not None and run["status"] == "failed" and run["argv"] == ["run"]
        assert (run["git_commit"], run["git_dirty"], run["snapshot"]["snapshot_id"]) == ("c0ffee", True, "s1")
        doc = run_doc(ledger, 1)
        assert [t["name"] for t in doc["tasks"]] == ["a", "b", "c"]
        assert [t["status"] for t in doc["tasks"]] == ["finished", "failed", "lost"]
        assert doc["tasks"][1]["commands"][1]["failure_class"] is None
        (row,) = runs_doc(ledger)  # counters backfilled by the migration
        assert (row["n_tasks"], row["n_finished"], row["n_failed"], row["n_interrupted"]) == (3, 1, 1, 1)
        assert (row["n_commands_finished"], row["n_commands"]) == (3, 9)
        assert doc["tasks"][0]["commands"][0]["attempts"] == 2
        assert conn.execute("SELECT n_attempts FROM tasks WHERE key = 'a'").fetchone()[0] == 4
        assert ledger.command_states() == {
            ("a", "prep"): "finished", ("a", "train"): "finished", ("a", "test"): "finished",
            ("b", "train"): "failed", ("c", "train"): "lost",
        }  # fmt: skip
        # and the upgraded ledger takes new writes
        attempt = ledger.start_attempt(
            run_id=1, task_key="b", command="train", resource="1", gpus=[1], log_path=None
        )
        ledger.end_attempt(
            attempt,
            status=AttemptStatus.OOM,
            exit_code=1,
            failure_class=FailureClass.HOST_OOM,
            log_tail="killed",
        )
        assert [a["number"] for a in ledger.attempts_for("b", "train")] == [1, 2]
        assert experiment_summary(ledger)[os.path.realpath(out / "b")]["failure_class"] == "host_oom"
        assert ledger.integrity_check() == "ok"
    conn = sqlite3.connect(path)
    assert [n for (n,) in conn.execute("SELECT name FROM migrations")] == [m.name for m in MIGRATIONS]
    conn.close()


def test_failure_class_oom_is_split_into_gpu_oom_and_host_oom(tmp_path: Path) -> None:
    """0004: the old failure class 'oom' of a failed command (CUDA out of memory in its log)
    becomes gpu_oom; every attempt with status 'oom' (Slurm OUT_OF_MEMORY) gets host_oom."""
    out = tmp_path / "out"
    k = [m.name for m in MIGRATIONS].index("0004_failure_class_oom_split")
    path = old_ledger(out, k)
    conn = sqlite3.connect(path, isolation_level=None)
    me = procs.ProcessId.of()
    rows = [  # (task, command, number, status, failure_class as 0.x recorded it)
        ("b", "prep", 1, "failed", "oom"), ("b", "test", 1, "oom", "oom"),
        ("c", "prep", 1, "oom", None), ("c", "test", 1, "failed", None),
        ("a", "prep", 3, "timeout", "oom"), ("a", "prep", 4, "failed", "other"),
    ]  # fmt: skip
    for key, command, number, status, failure in rows:
        conn.execute(
            "INSERT INTO attempts (run_id, task_key, command, number, status, exit_code, resource, host, "
            "boot_id, runner_pid, runner_start, started_at, ended_at, failure_class) "
            "VALUES (1, ?, ?, ?, ?, 1, '0', ?, ?, ?, 1, 1.0, 2.0, ?)",
            (key, command, number, status, me.host, me.boot_id, dead_pid(), failure),
        )
    conn.close()
    with Ledger(out) as ledger:
        got = {
            (r["task_key"], r["command"], r["number"]): r["failure_class"]
            for r in ledger.db.connection().execute("SELECT * FROM attempts")
        }
    assert got[("b", "prep", 1)] == "gpu_oom"
    assert got[("b", "test", 1)] == got[("c", "prep", 1)] == "host_oom"
    assert got[("a", "prep", 3)] == "gpu_oom"  # the log said CUDA OOM, whatever its status
    assert (got[("c", "test", 1)], got[("a", "prep", 4)]) == (None, "other")
    assert got[("a", "train", 1)] is None and got[("b", "train", 1)] is None  # the rest untouched
    assert set(got.values()) <= {None, "other", FailureClass.GPU_OOM, FailureClass.HOST_OOM}


def test_fresh_ledger_records_every_migration_once(tmp_path: Path) -> None:
    with Ledger(tmp_path / "out") as ledger:
        assert applied_migrations(ledger.db.connection()) == [m.name for m in MIGRATIONS]
    with Ledger(tmp_path / "out") as ledger:  # reopening applies nothing twice
        assert applied_migrations(ledger.db.connection()) == [m.name for m in MIGRATIONS]
    names = [m.name for m in MIGRATIONS]
    assert names == sorted(names) and len(set(names)) == len(names) >= 3


@pytest.mark.parametrize("create", [True, False])
def test_newer_ledger_is_refused(tmp_path: Path, create: bool) -> None:
    out = tmp_path / "out"
    with Ledger(out) as ledger:
        ledger.create_run(argv=[], cwd=".", params_path=None, params_text=None, options={}, snapshot=None)
    conn = sqlite3.connect(ledger_path(out), isolation_level=None)
    conn.execute("INSERT INTO migrations (name, applied_at) VALUES ('0099_from_the_future', 0)")
    conn.close()
    with pytest.raises(LedgerVersionError) as info:
        Ledger(out, create=create)
    text = str(info.value)
    assert "newer mlrunner" in text and "0099_from_the_future" in text and "upgrade mlrunner" in text
    assert str(ledger_path(out)) in text
    conn = sqlite3.connect(ledger_path(out))
    assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1  # untouched
    conn.close()


def test_migration_failure_rolls_back_and_is_not_recorded(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, str(path), MIGRATIONS[:1])
    conn.execute("ALTER TABLE attempts ADD COLUMN failure_class TEXT")  # makes 0002 fail half-way
    with pytest.raises(sqlite3.OperationalError, match="duplicate column"):
        migrate(conn, str(path), MIGRATIONS)
    assert applied_migrations(conn) == [MIGRATIONS[0].name]
    assert not conn.in_transaction
    conn.close()

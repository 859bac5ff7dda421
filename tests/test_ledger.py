"""The SQLite ledger: API, derived statuses, views, liveness, paths, filesystem checks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mlrunner import procs
from mlrunner.errors import LedgerError, UnsafeFilesystemError, UsageError
from mlrunner.ledger import Ledger, check_local_filesystem, ledger_dir, ledger_path, mount_of
from mlrunner.ledger.views import experiment_summary, run_doc, runs_doc

HOSTILE = 'it\'s a "run" $(touch pwned) .. ; rm -rf x'


def new_run(ledger: Ledger, snapshot: dict | None = None, **kw: object) -> int:
    return ledger.create_run(
        argv=["run", "-o", "out"],
        cwd=os.getcwd(),
        params_path="params.yaml",
        params_text="lr: [0.1, 0.2]\n",
        options={"retries": 1, "output": Path("out")},
        snapshot=snapshot,
        **kw,  # type: ignore[arg-type]
    )


def task(key: str, out: Path, commands: tuple[str, ...] = ("train", "test"), **params: object) -> dict:
    return {
        "key": key,
        "name": key,
        "output_dir": str(out / key),
        "params": params,
        "commands": list(commands),
    }


def run_attempt(ledger: Ledger, run_id: int, key: str, command: str, status: str, **kw: object) -> int:
    attempt = ledger.start_attempt(
        run_id=run_id, task_key=key, command=command, resource="0", gpus=[0], log_path=f"{key}/log.{command}"
    )
    if status != "running":
        ledger.end_attempt(attempt, status=status, **kw)  # type: ignore[arg-type]
    return attempt


def child(code: str, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stdin=stdin, text=True, cwd=os.getcwd()
    )


# -- paths, opening -----------------------------------------------------------------------


def test_ledger_path_default_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLRUNNER_LEDGER_DIR", raising=False)
    assert ledger_path(tmp_path / "out") == tmp_path / "out" / ".mlrunner" / "ledger.db"
    monkeypatch.setenv("MLRUNNER_LEDGER_DIR", str(tmp_path / "local"))
    monkeypatch.chdir(tmp_path)
    a, b = ledger_dir("out"), ledger_dir(tmp_path / "out")
    assert a == b and a.parent == tmp_path / "local" and a.name.startswith("out-")
    assert ledger_dir(HOSTILE) != a and ledger_dir(HOSTILE).parent == tmp_path / "local"
    with Ledger("out") as ledger:
        assert ledger.path == a / "ledger.db" and ledger.path.is_file()
    assert not (tmp_path / "out").exists()  # nothing written into the output root


def test_open_missing_ledger_without_create(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger for output") as info:
        Ledger(tmp_path / "nothing here", create=False)
    assert "-o" in str(info.value)
    assert not (tmp_path / "nothing here").exists()


def test_output_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("I am a file")
    with pytest.raises(LedgerError, match="cannot create the ledger directory"):
        Ledger(tmp_path / "out")


def test_garbage_file_is_reported_as_damaged(tmp_path: Path) -> None:
    path = ledger_path(tmp_path / "out")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite at all\n" * 400)
    with pytest.raises(LedgerError, match="damaged or not an SQLite database") as info:
        Ledger(tmp_path / "out")
    assert str(path) in str(info.value) and "hint" in str(info.value)


def test_pragmas_wal_and_hostile_paths(tmp_path: Path) -> None:
    out = tmp_path / HOSTILE
    with Ledger(out) as ledger:
        run = new_run(ledger)
        ledger.register_tasks(run, [task(HOSTILE, out, lr=HOSTILE)])
        conn = ledger.db.connection()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
        assert conn.isolation_level is None
        doc = run_doc(ledger, run)
    assert doc["tasks"][0]["params"] == {"lr": HOSTILE}
    assert doc["tasks"][0]["output_dir"] == str(out / HOSTILE)
    assert not Path("pwned").exists()


# -- runs -------------------------------------------------------------------------------


def test_create_get_update_run(tmp_path: Path) -> None:
    snap = {"commit": "a" * 40, "dirty": True, "snapshot_id": "s1", "branch": "main"}
    with Ledger(tmp_path / "out") as ledger:
        assert ledger.get_run() is None
        first = new_run(ledger)
        second = new_run(ledger, snapshot=snap, backend="slurm")
        run = ledger.get_run()
        assert run is not None and run["id"] == second > first
        assert run["argv"] == ["run", "-o", "out"] and run["options"] == {"retries": 1, "output": "out"}
        assert run["snapshot"] == snap and run["git_commit"] == "a" * 40 and run["git_dirty"] is True
        assert run["snapshot_id"] == "s1" and run["backend"] == "slurm" and run["status"] == "running"
        assert run["params_text"] == "lr: [0.1, 0.2]\n"
        assert run["params_sha256"] == hashlib.sha256(b"lr: [0.1, 0.2]\n").hexdigest()
        me = procs.ProcessId.of()
        assert (run["host"], run["boot_id"], run["pid"], run["proc_start"]) == (
            me.host,
            me.boot_id,
            me.pid,
            me.start,
        )
        assert run["runner_alive"] is True and run["ended_at"] is None

        ledger.update_run(second, status="interrupted")
        run = ledger.get_run(second)
        assert run is not None and run["status"] == "interrupted" and run["ended_at"] >= run["started_at"]
        ledger.update_run(second, status="running", snapshot={"commit": "b" * 40, "dirty": False})
        run = ledger.get_run(second)
        assert run is not None and run["ended_at"] is None and run["git_commit"] == "b" * 40
        assert run["git_dirty"] is False and run["snapshot_id"] is None
        assert ledger.get_run(99) is None
        with pytest.raises(LedgerError, match="no run 99"):
            ledger.update_run(99, status="finished")
        with pytest.raises(LedgerError, match="invalid run status"):
            ledger.update_run(second, status="done")


def test_run_of_a_dead_runner_reads_lost_and_resume_reclaims_it(tmp_path: Path) -> None:
    code = (
        "import sys; from mlrunner.ledger.store import Ledger\n"
        "L = Ledger(sys.argv[1])\n"
        "print(L.create_run(argv=[], cwd='.', params_path=None, params_text=None, options={},\n"
        "                   snapshot=None))\n"
    )
    proc = child(code, str(tmp_path / "out"))
    run_id = int(proc.communicate()[0])
    with Ledger(tmp_path / "out") as ledger:
        run = ledger.get_run(run_id)
        assert run is not None and run["status"] == "lost" and run["recorded_status"] == "running"
        assert runs_doc(ledger)[0]["status"] == "lost"
        ledger.update_run(run_id, status="running")  # resume: this process becomes the runner
        run = ledger.get_run(run_id)
        assert run is not None and run["status"] == "running" and run["pid"] == os.getpid()


# -- tasks, attempts, statuses ------------------------------------------------------------


def test_register_tasks_is_idempotent_and_keeps_positions(tmp_path: Path) -> None:
    out = tmp_path / "out"
    tasks = [task(f"t{i:04d}", out, ("a", "b"), i=i) for i in range(2000)]
    with Ledger(out) as ledger:
        run = new_run(ledger)
        ledger.register_tasks(run, tasks)
        ledger.register_tasks(run, list(reversed(tasks)))
        other = new_run(ledger)
        ledger.register_tasks(other, tasks[:10])
        rows = runs_doc(ledger)
        assert [(r["id"], r["n_tasks"], r["n_commands"]) for r in rows] == [
            (run, 2000, 4000),
            (other, 10, 20),
        ]
        doc = run_doc(ledger, run)
        assert [t["position"] for t in doc["tasks"]] == list(range(2000))
        assert doc["tasks"][5]["name"] == "t0005" and doc["tasks"][5]["params"] == {"i": 5}
        with pytest.raises(LedgerError, match="lacks 'commands'"):
            ledger.register_tasks(run, [{"key": "x", "name": "x", "output_dir": "x", "params": {}}])
        with pytest.raises(LedgerError, match="no run 42"):
            ledger.register_tasks(42, tasks[:1])


def test_attempt_numbers_processes_and_validation(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Ledger(out) as ledger:
        run = new_run(ledger, snapshot={"commit": "c", "dirty": False, "snapshot_id": "snap-1"})
        ledger.register_tasks(run, [task("k", out)])
        first = run_attempt(
            ledger, run, "k", "train", "failed", exit_code=1, failure_class="oom", log_tail="x" * 20000
        )
        second = ledger.start_attempt(
            run_id=run, task_key="k", command="train", resource="1,2", gpus=[1, 2], log_path=out / "log",
            snapshot_id="snap-2", job_id="77_3", node="gpu01",
        )  # fmt: skip
        ledger.set_attempt_process(second, pid=4242, pgid=4242, proc_start=99)
        attempts = ledger.attempts_for("k", "train")
        assert [a["number"] for a in attempts] == [1, 2] and [a["id"] for a in attempts] == [first, second]
        assert attempts[0]["status"] == "failed" and attempts[0]["exit_code"] == 1
        assert attempts[0]["failure_class"] == "oom" and len(attempts[0]["log_tail"]) == 16 * 1024
        assert attempts[0]["snapshot_id"] == "snap-1"  # the run's, when none is given
        a = attempts[1]
        assert (a["gpus"], a["resource"], a["log_path"], a["job_id"], a["node"]) == (
            [1, 2], "1,2", str(out / "log"), "77_3", "gpu01",
        )  # fmt: skip
        assert (a["pid"], a["pgid"], a["proc_start"], a["snapshot_id"]) == (4242, 4242, 99, "snap-2")
        assert (a["runner_pid"], a["status"]) == (os.getpid(), "running")
        ledger.end_attempt(second, status="interrupted", signal=signal.SIGTERM)
        assert ledger.attempts_for("k", "train")[1]["signal"] == signal.SIGTERM
        assert len(ledger.attempts_for("k")) == 2 and ledger.attempts_for("k", "test") == []

        with pytest.raises(LedgerError, match="invalid attempt end status 'finshed'") as info:
            ledger.end_attempt(second, status="finshed")
        assert "did you mean 'finished'" in str(info.value)
        with pytest.raises(LedgerError, match="invalid attempt end status 'running'"):
            ledger.end_attempt(second, status="running")
        with pytest.raises(LedgerError, match="no attempt 999"):
            ledger.end_attempt(999, status="finished")
        with pytest.raises(LedgerError, match="no attempt 999"):
            ledger.set_attempt_process(999, pid=1, pgid=1, proc_start=1)
        with pytest.raises(LedgerError, match="has no command 'deploy'"):
            ledger.start_attempt(
                run_id=run, task_key="k", command="deploy", resource=None, gpus=None, log_path=None
            )
        with pytest.raises(LedgerError, match="not registered"):
            ledger.start_attempt(
                run_id=run, task_key="zz", command="train", resource=None, gpus=None, log_path=None
            )


def test_task_status_derivation_list_runs_and_show_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Ledger(out) as ledger:
        run = new_run(ledger, snapshot={"commit": "abc", "dirty": True, "snapshot_id": "s"})
        names = ["done", "failed", "retried", "running", "interrupted", "pending", "half"]
        ledger.register_tasks(run, [task(n, out) for n in names])
        for n in ("done", "retried", "half"):
            run_attempt(ledger, run, n, "train", "finished", exit_code=0)
        run_attempt(ledger, run, "done", "test", "finished", exit_code=0)
        run_attempt(ledger, run, "failed", "train", "finished", exit_code=0)
        run_attempt(ledger, run, "failed", "test", "timeout", exit_code=None, signal=9)
        run_attempt(ledger, run, "retried", "test", "failed", exit_code=2)
        run_attempt(ledger, run, "retried", "test", "finished", exit_code=0)
        run_attempt(ledger, run, "running", "train", "running")
        run_attempt(ledger, run, "interrupted", "train", "interrupted", exit_code=130)
        doc = run_doc(ledger, run)
        json.dumps(doc)  # JSON-ready
        status = {t["name"]: t["status"] for t in doc["tasks"]}
        assert status == {
            "done": "finished", "failed": "failed", "retried": "finished", "running": "running",
            "interrupted": "interrupted", "pending": "pending", "half": "pending",
        }  # fmt: skip
        assert set(doc) == {"run", "tasks"}
        assert (
            doc["run"]["id"] == run and doc["run"]["status"] == "running" and doc["run"]["git_dirty"] is True
        )
        assert isinstance(doc["run"]["started_at"], str) and "T" in doc["run"]["started_at"]
        expected = {"name", "output_dir", "status", "params", "commands", "key", "position"}
        command_keys = {
            "name",
            "status",
            "exit_code",
            "signal",
            "attempts",
            "resource",
            "started_at",
            "ended_at",
        }
        command_keys |= {"log", "failure_class", "log_tail"}
        for t in doc["tasks"]:
            assert set(t) == expected and [c["name"] for c in t["commands"]] == ["train", "test"]
            assert all(set(c) == command_keys for c in t["commands"])
        retried = doc["tasks"][2]["commands"][1]
        assert (retried["status"], retried["attempts"], retried["exit_code"]) == ("finished", 2, 0)
        assert retried["log"] == "retried/log.test" and retried["ended_at"] >= retried["started_at"]
        pending = doc["tasks"][5]["commands"][0]
        assert pending == {k: None for k in command_keys} | {
            "name": "train",
            "status": "pending",
            "attempts": 0,
        }
        assert doc["tasks"][6]["commands"][1]["status"] == "pending"

        assert [t["name"] for t in run_doc(ledger, run, status="failed")["tasks"]] == ["failed"]
        assert [t["name"] for t in run_doc(ledger, run, status="pending")["tasks"]] == ["pending", "half"]
        with pytest.raises(UsageError, match="unknown task status 'faild'") as info:
            run_doc(ledger, run, status="faild")
        assert "did you mean 'failed'" in str(info.value)
        with pytest.raises(LedgerError, match="no run 7"):
            run_doc(ledger, 7)

        (row,) = runs_doc(ledger)
        json.dumps(row)
        counts = {k: row[k] for k in row if k.startswith("n_")}
        assert counts == {
            "n_tasks": 7, "n_finished": 2, "n_skipped": 0, "n_failed": 1, "n_running": 1, "n_interrupted": 1,
            "n_pending": 2,
            "n_commands": 14, "n_commands_finished": 6,
        }  # fmt: skip
        assert (row["git_commit"], row["git_dirty"], row["params_path"], row["finished_at"]) == (
            "abc", True, "params.yaml", None,
        )  # fmt: skip

        states = ledger.command_states()
        assert states[("retried", "test")] == "finished" and states[("failed", "test")] == "timeout"
        assert ("pending", "train") not in states and len(states) == 9
        assert ledger.command_states(["done", "nope"]) == {
            ("done", "train"): "finished",
            ("done", "test"): "finished",
        }


def test_dead_runner_reads_lost_live_runner_reads_running(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Ledger(out) as ledger:
        run = new_run(ledger)
        ledger.register_tasks(run, [task("dead", out), task("live", out), task("remote", out)])
    code = (
        "import os, sys; from mlrunner.ledger import Ledger; from mlrunner.procs import proc_start_time\n"
        "L = Ledger(sys.argv[1])\n"
        "a = L.start_attempt(run_id=1, task_key=sys.argv[2], command='train', resource='0', gpus=[0],\n"
        "                    log_path=None)\n"
        "me = os.getpid()\n"
        "L.set_attempt_process(a, pid=me, pgid=os.getpgid(0), proc_start=proc_start_time(me))\n"
        "print(a, flush=True)\n"
        "sys.stdin.read()\n"
    )
    dead = child(code, str(out), "dead", stdin=subprocess.PIPE)
    live = child(code, str(out), "live", stdin=subprocess.PIPE)
    try:
        assert dead.stdout is not None and live.stdout is not None
        dead_id, live_id = int(dead.stdout.readline()), int(live.stdout.readline())
        dead.kill()  # SIGKILL: the runner dies without recording anything
        dead.wait()
        with Ledger(out) as ledger:
            remote = run_attempt(ledger, run, "remote", "train", "running")
            conn = ledger.db.connection()
            conn.execute("UPDATE attempts SET host = 'elsewhere', runner_pid = 1 WHERE id = ?", (remote,))
            states = ledger.command_states()
            assert states == {
                ("dead", "train"): "lost",
                ("live", "train"): "running",
                ("remote", "train"): "running",
            }
            orphans = ledger.orphaned_attempts()
            assert [o["id"] for o in orphans] == [dead_id]
            assert orphans[0]["pid"] == dead.pid and orphans[0]["command_alive"] is False
            assert {"pgid", "proc_start", "host", "boot_id", "name", "output_dir"} <= set(orphans[0])
            assert ledger.orphaned_attempts("live") == []
            live_rows = ledger.live_attempts()
            assert sorted(a["id"] for a in live_rows) == sorted([live_id, remote])
            assert {a["name"] for a in live_rows} == {"live", "remote"} and all(
                a["started_at"] for a in live_rows
            )
            assert ledger.attempts_for("dead")[0]["status"] == "lost"
            statuses = {t["name"]: t["status"] for t in run_doc(ledger, run)["tasks"]}
            assert statuses == {"dead": "lost", "live": "running", "remote": "running"}
            row = runs_doc(ledger)[0]
            assert (row["n_running"], row["n_interrupted"]) == (2, 1)
            assert experiment_summary(ledger)[os.path.realpath(out / "dead")]["status"] == "lost"

            live.send_signal(signal.SIGKILL)
            live.wait()
            assert ledger.command_states(["live"]) == {("live", "train"): "lost"}
            assert sorted(o["id"] for o in ledger.orphaned_attempts()) == sorted([dead_id, live_id])
            assert [a["id"] for a in ledger.live_attempts()] == [remote]
            ledger.end_attempt(dead_id, status="lost")  # the scheduler settles an orphan
            assert [o["id"] for o in ledger.orphaned_attempts()] == [live_id]
    finally:
        for proc in (dead, live):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_experiment_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "link").symlink_to(out)
    with Ledger(out) as ledger:
        first = new_run(ledger, snapshot={"commit": "c1", "dirty": False, "snapshot_id": "s1"})
        ledger.register_tasks(first, [task("a", tmp_path / "link"), task("b", out), task("c", out)])
        run_attempt(ledger, first, "a", "train", "oom", exit_code=1, failure_class="oom")
        second = new_run(ledger, snapshot={"commit": "c2", "dirty": True, "snapshot_id": "s2"})
        ledger.register_tasks(second, [task("a", tmp_path / "link"), task("b", out)])
        run_attempt(ledger, second, "a", "train", "finished", exit_code=0)
        changed = ledger.start_attempt(
            run_id=second,
            task_key="a",
            command="test",
            resource="3",
            gpus=[3],
            log_path=None,
            snapshot_id="s3",
        )
        ledger.end_attempt(changed, status="finished", exit_code=0)
        run_attempt(ledger, second, "b", "train", "finished", exit_code=0)
        run_attempt(ledger, second, "b", "test", "failed", exit_code=1, failure_class="nan_loss")
        summary = experiment_summary(ledger)
        attempts = {a["id"]: a for a in ledger.attempts_for("a")}
    assert set(summary) == {os.path.realpath(out / n) for n in "abc"}
    keys = {"status", "run_id", "git_commit", "git_dirty", "started_at", "duration_s", "resource", "attempts"}
    keys |= {"code_changed", "failure_class", "env"}
    assert all(set(v) == keys for v in summary.values())
    a = summary[os.path.realpath(out / "a")]
    latest = [attempts[i] for i in sorted(attempts)[1:]]
    assert (a["status"], a["run_id"], a["git_commit"], a["git_dirty"]) == ("finished", second, "c2", True)
    assert (a["attempts"], a["resource"], a["code_changed"], a["failure_class"]) == (3, "3", True, None)
    assert a["started_at"] == min(x["started_at"] for x in latest)
    assert a["duration_s"] == sum(x["ended_at"] - x["started_at"] for x in latest)
    b = summary[os.path.realpath(out / "b")]
    assert (b["status"], b["failure_class"], b["code_changed"], b["attempts"]) == (
        "failed",
        "nan_loss",
        False,
        2,
    )
    c = summary[os.path.realpath(out / "c")]
    assert c == {
        "status": "pending", "run_id": first, "git_commit": "c1", "git_dirty": False, "started_at": None,
        "duration_s": None, "resource": None, "attempts": 0, "code_changed": False, "failure_class": None,
        "env": None,
    }  # fmt: skip


def test_claims_in_one_process(tmp_path: Path) -> None:
    with Ledger(tmp_path / "out") as ledger:
        run = new_run(ledger)
        assert ledger.claim_task("k", run) and ledger.claim_task("k", run)  # re-entrant
        ledger.release_task("k")
        assert ledger.claim_task("k", run)
        ledger.release_task("never claimed")


# -- process model --------------------------------------------------------------------------


def test_connection_is_reopened_after_fork(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ledger = Ledger(out)
    run = new_run(ledger)
    ledger.register_tasks(run, [task("k", out)])
    parent_conn = ledger.db.connection()
    pid = os.fork()
    if pid == 0:  # child: must not use the parent's connection
        code = 1
        try:
            attempt = run_attempt(ledger, run, "k", "train", "finished", exit_code=0)
            code = 0 if ledger.db.connection() is not parent_conn and attempt > 0 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert ledger.db.connection() is parent_conn
    assert ledger.command_states() == {("k", "train"): "finished"}
    run_attempt(ledger, run, "k", "test", "finished", exit_code=0)
    assert ledger.integrity_check() == "ok"
    ledger.close()


def test_fork_while_another_thread_holds_the_ledger(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Ledger(out) as ledger:
        run = new_run(ledger)
        ledger.register_tasks(run, [task("k", out)])
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with ledger.db._lock:  # a thread in the middle of a ledger call
                held.set()
                release.wait()

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if run_attempt(ledger, run, "k", "train", "finished", exit_code=0) > 0 else 1
            finally:
                os._exit(code)
        for _ in range(600):  # guard against a deadlocked child (would hang the test run)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = 1 << 8
        release.set()
        holder.join()
        assert os.waitstatus_to_exitcode(status) == 0
        assert ledger.command_states() == {("k", "train"): "finished"}


def test_threads_share_one_ledger(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Ledger(out) as ledger:
        run = new_run(ledger)
        ledger.register_tasks(run, [task("k", out, ("c",))])
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(25):
                    run_attempt(ledger, run, "k", "c", "finished", exit_code=0)
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        numbers = [a["number"] for a in ledger.attempts_for("k", "c")]
        assert sorted(numbers) == list(range(1, 201))
        assert run_doc(ledger, run)["tasks"][0]["commands"][0]["attempts"] == 200


def test_runner_proc_start_is_recorded(tmp_path: Path) -> None:
    with Ledger(tmp_path / "out") as ledger:
        new_run(ledger)
        conn = sqlite3.connect(ledger.path)
        start = conn.execute("SELECT proc_start FROM runs").fetchone()[0]
        conn.close()
    assert start == procs.proc_start_time(os.getpid())


# -- network filesystems ------------------------------------------------------------------------


def write_mounts(path: Path, *entries: tuple[str, str, str]) -> str:
    lines = ["/dev/vda / ext4 rw,relatime 0 0"]
    for source, point, fstype in entries:
        escaped = point.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")
        lines.append(f"{source} {escaped} {fstype} rw,relatime 0 0")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize(
    ("source", "fstype"),
    [("fs:/export", "nfs4"), ("fs:/export", "nfs"), ("//srv/share", "cifs"), ("u@h:/d", "fuse.sshfs"),
     ("sshfs#u@h:/d", "fuse"), ("10.0.0.1@tcp:/lustre", "lustre"), ("gpfs0", "gpfs")],
)  # fmt: skip
def test_network_filesystem_is_refused(tmp_path: Path, source: str, fstype: str) -> None:
    share = tmp_path / "shared drive"
    out = share / "sweep out"
    share.mkdir()
    mounts = write_mounts(tmp_path / "mounts", (source, str(share), fstype))
    with pytest.raises(UnsafeFilesystemError) as info:
        Ledger(out, mounts_file=mounts)
    text = str(info.value)
    assert fstype in text and str(share) in text and "MLRUNNER_LEDGER_DIR" in text
    assert not out.exists()


def test_local_mount_inside_network_mount_and_ledger_dir_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    share, scratch = tmp_path / "nfs", tmp_path / "nfs" / "scratch"
    scratch.mkdir(parents=True)
    mounts = write_mounts(
        tmp_path / "mounts", ("fs:/x", str(share), "nfs4"), ("/dev/sdb1", str(scratch), "xfs")
    )
    check_local_filesystem(scratch / "out", mounts)
    assert mount_of(scratch / "deeper" / "out", mounts) == (str(scratch), "xfs", "/dev/sdb1")
    with pytest.raises(UnsafeFilesystemError):
        check_local_filesystem(share / "out", mounts)
    monkeypatch.setenv("MLRUNNER_MOUNTS_FILE", mounts)
    with pytest.raises(UnsafeFilesystemError):
        Ledger(share / "out")
    monkeypatch.setenv("MLRUNNER_LEDGER_DIR", str(tmp_path / "local"))
    with Ledger(share / "out") as ledger:
        assert ledger.path.is_relative_to(tmp_path / "local")
        new_run(ledger)
    assert not (share / "out").exists()


def test_batch_shares_one_transaction_and_undoes_a_failed_call_alone(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "out")
    run_id = new_run(ledger)
    ledger.register_tasks(run_id, [task("a", tmp_path), task("b", tmp_path)])
    first = run_attempt(ledger, run_id, "a", "train", "running")
    other = sqlite3.connect(ledger.path, timeout=0.05)
    with ledger.batch():
        assert ledger.claim_task("b", run_id)  # a write: the batch's transaction begins
        ledger.end_attempt(first, status="finished", exit_code=0)
        with pytest.raises(LedgerError, match="has no command 'deploy'"):
            run_attempt(ledger, run_id, "a", "deploy", "running")  # undone alone
        # nothing is visible to another connection before the block ends (and it cannot write)
        assert other.execute("SELECT count(*) FROM claims").fetchone()[0] == 0
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    assert other.execute("SELECT count(*) FROM claims").fetchone()[0] == 1
    assert other.execute("SELECT status FROM attempts WHERE id = ?", (first,)).fetchone()[0] == "finished"
    assert [a["command"] for a in ledger.attempts_for("a")] == ["train"]


def test_batch_commits_what_succeeded_when_the_block_raises(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "out")
    run_id = new_run(ledger)
    ledger.register_tasks(run_id, [task("a", tmp_path)])
    with pytest.raises(RuntimeError, match="boom"), ledger.batch():
        with ledger.batch():  # nested: the outer block commits
            assert ledger.claim_task("a", run_id)
        raise RuntimeError("boom")
    with sqlite3.connect(ledger.path) as other:
        assert other.execute("SELECT task_key FROM claims").fetchall() == [("a",)]


def test_batch_of_reads_only_writes_nothing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "out")
    run_id = new_run(ledger)
    with ledger.batch():
        assert ledger.get_run(run_id) is not None
        with sqlite3.connect(ledger.path, timeout=0.05) as other:
            other.execute("BEGIN IMMEDIATE")  # no write lock held by a batch that only read
            other.execute("ROLLBACK")


def test_background_checkpoints_copy_the_wal_back_outside_the_writers_commits(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "out")
    run_id = new_run(ledger)
    ledger.register_tasks(run_id, [task(f"t{i}", tmp_path, ("train",)) for i in range(300)])
    conn = ledger.db.connection()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file, the WAL empty
    size_before = ledger.path.stat().st_size
    with ledger.background_checkpoints(interval=0.05):
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # not in our commits
        for i in range(300):  # ~600 KB of log tails: new pages, first written to the WAL only
            run_attempt(ledger, run_id, f"t{i}", "train", "failed", exit_code=1, log_tail="x" * 2000)
        deadline = time.monotonic() + 10
        while ledger.path.stat().st_size <= size_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ledger.path.stat().st_size > size_before + 300_000  # the thread copied them back
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    assert not any(t.name == "mlrunner-checkpoint" for t in threading.enumerate())
    assert ledger.integrity_check() == "ok"

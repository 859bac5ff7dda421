"""Crashes, signals, resume and concurrent runners, with real processes and real signals (issue 3)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import Project

from mlrunner import procs

# Each command appends its param to done.<cmd> only when it completes; `slow` spawns a grandchild
# (a background sleep) and records every pid so the test can prove nothing is left alive.
SWEEP = """
template:
  a: "echo $$ >> {_output}/pids; sleep $(cat delay) & echo $! >> {_output}/pids; wait; echo {x} >> done.a"
  b: "echo {x} >> done.b"
resource: [0, 1]
---
x: [1, 2, 3, 4, 5, 6]
"""


def sweep(project: Project, delay: float) -> None:
    project.write(SWEEP)
    (project.path / "delay").write_text(f"{delay}\n")


def done(project: Project, cmd: str) -> Counter[str]:
    f = project.path / f"done.{cmd}"
    return Counter(f.read_text().split()) if f.exists() else Counter()


def all_pids(project: Project) -> list[int]:
    return [int(p) for f in (project.path / "output").glob("*/pids") for p in f.read_text().split()]


def wait_for(cond, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def ledger_show(project: Project, run: int = 1) -> dict:
    res = project.mlrunner("ledger", "show", str(run), "--json", check=0)
    return json.loads(res.stdout)


def assert_all_dead(pids: list[int]) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(procs.proc_start_time(p) is not None for p in pids):
        time.sleep(0.05)
    alive = [p for p in pids if procs.proc_start_time(p) is not None]
    assert not alive, f"left alive: {alive}"


def integrity_ok(project: Project) -> None:
    con = sqlite3.connect(project.path / "output" / ".mlrunner" / "ledger.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_everything_and_resume_finishes_exactly_the_rest(
    project: Project, sig: int, code: int
) -> None:
    sweep(project, 30)
    proc = project.popen("--grace", "2")
    wait_for(lambda: len(all_pids(project)) >= 4)  # two commands with their grandchildren
    time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, out + err
    assert_all_dead(all_pids(project))
    doc = ledger_show(project)
    statuses = Counter(c["status"] for t in doc["tasks"] for c in t["commands"])
    assert statuses["interrupted"] == 2 and statuses["pending"] == 10, statuses
    assert doc["run"]["status"] == "interrupted"
    assert not done(project, "a")
    (project.path / "delay").write_text("0\n")
    (project.path / "params.yaml").write_text("garbage: [\n")  # --resume uses the stored params.yaml
    res = project.run("--resume", check=0)
    assert res.stdout.count("START") == 12
    assert done(project, "a") == done(project, "b") == Counter(str(x) for x in range(1, 7))
    doc = ledger_show(project)
    assert doc["run"]["id"] == 1 and doc["run"]["status"] == "finished"  # the same run continues
    attempts = sorted(c["attempts"] for t in doc["tasks"] for c in t["commands"] if c["name"] == "a")
    assert attempts == [1, 1, 1, 1, 2, 2]  # the two interrupted ones ran again, keeping their first attempt
    integrity_ok(project)


@pytest.mark.parametrize("after", [0, 2, 5])
def test_kill9_runner_alone_then_resume_waits_for_orphans_and_completes_once(
    project: Project, after: int
) -> None:
    sweep(project, 0.3)
    proc = project.popen()
    wait_for(lambda: sum(done(project, "a").values()) >= after and len(all_pids(project)) >= 2 * (after + 1))
    proc.kill()
    proc.communicate()
    orphans = all_pids(project)
    res = project.run("--resume", check=0)
    assert_all_dead(orphans)
    a, b = done(project, "a"), done(project, "b")
    assert set(a) == set(b) == {str(x) for x in range(1, 7)}
    # what was in flight at the crash was waited for, not run again (issue 14)
    assert max(a.values()) == max(b.values()) == 1, (a, b)
    doc = ledger_show(project)
    assert all(c["status"] == "finished" for t in doc["tasks"] for c in t["commands"])
    assert "Tasks: 6" in res.stdout
    integrity_ok(project)


def test_power_loss_runner_and_children_killed_then_resume(project: Project) -> None:
    sweep(project, 0.3)
    proc = project.popen()
    wait_for(lambda: sum(done(project, "a").values()) >= 1)
    victims = [proc.pid, *procs.descendants(proc.pid)]
    for p in victims:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()
    project.run("--resume", check=0)
    a, b = done(project, "a"), done(project, "b")
    assert set(a) == set(b) == {str(x) for x in range(1, 7)}
    assert sum(n - 1 for n in a.values()) + sum(n - 1 for n in b.values()) <= 2
    integrity_ok(project)


def test_four_runners_share_the_work_each_command_once(project: Project) -> None:
    project.write(
        """
        template:
          a: "sleep 0.05; echo {x} >> done.a"
          b: "echo {x} >> done.b"
        resource: [0, 1]
        ---
        x: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
        """
    )
    runners = [project.popen() for _ in range(4)]
    for r in runners:
        out, err = r.communicate(timeout=60)
        assert r.returncode == 0, out + err
    for cmd in ("a", "b"):
        c = done(project, cmd)
        assert sorted(c, key=int) == [str(x) for x in range(1, 17)] and set(c.values()) == {1}, c


def test_fail_fix_resume_runs_only_that_command_and_later(project: Project) -> None:
    project.write(
        """
        template:
          a: "echo {x} >> done.a; test {x} != 2 || test -e fixed"
          b: "echo {x} >> done.b"
        ---
        x: [1, 2, 3]
        """
    )
    first = project.run(check=1)
    assert "FAIL" in first.stdout
    (project.path / "fixed").touch()
    res = project.run("--resume", check=0)
    starts = [line for line in res.stdout.splitlines() if line.startswith("START")]
    assert len(starts) == 2 and all("X_2" in s for s in starts), res.stdout
    assert done(project, "a") == Counter({"1": 1, "2": 2, "3": 1})
    assert done(project, "b") == Counter({"1": 1, "2": 1, "3": 1})
    doc = ledger_show(project)
    x2 = next(t for t in doc["tasks"] if t["name"] == "X_2")
    assert [(c["name"], c["status"], c["attempts"]) for c in x2["commands"]] == [
        ("a", "finished", 2),
        ("b", "finished", 1),
    ]


def test_retries_record_every_attempt(project: Project) -> None:
    project.write(
        """
        template:
          a: "echo try >> tries; test $(wc -l < tries) -ge 3"
        ---
        x: [1]
        """
    )
    project.run("--retries", "3", check=0)
    doc = ledger_show(project)
    cmd = doc["tasks"][0]["commands"][0]
    assert cmd["status"] == "finished" and cmd["attempts"] == 3 and cmd["exit_code"] == 0


def test_exit_code_and_signal_recorded(project: Project) -> None:
    project.write(
        """
        template:
          a: "exit {x}"
        ---
        x: [7]
        ---
        x: [self]
        """.replace("exit {x}", "if [ {x} = self ]; then kill -9 $$; else exit {x}; fi")
    )
    project.run(check=1)
    doc = ledger_show(project)
    by = {t["name"]: t["commands"][0] for t in doc["tasks"]}
    assert by["X_7"]["exit_code"] == 7 and by["X_7"]["status"] == "failed"
    assert by["X_self"]["status"] == "failed" and by["X_self"]["exit_code"] is None


def test_ledger_ls_and_status_json(project: Project) -> None:
    project.write(
        """
        template:
          a: "exit {x}"
        ---
        x: [0, 3]
        """
    )
    project.run(check=1)
    runs = json.loads(project.mlrunner("ledger", "ls", "--json", check=0).stdout)
    assert len(runs) == 1
    r = runs[0]
    for key in (
        "id",
        "status",
        "started_at",
        "finished_at",
        "git_commit",
        "git_dirty",
        "n_tasks",
        "n_finished",
        "n_failed",
    ):
        assert key in r
    assert (r["n_tasks"], r["n_finished"], r["n_failed"], r["status"]) == (2, 1, 1, "failed")
    table = project.mlrunner("ledger", "ls", check=0).stdout
    assert "failed" in table
    failed = json.loads(
        project.mlrunner("ledger", "show", "1", "--json", "--status", "failed", check=0).stdout
    )
    assert [t["name"] for t in failed["tasks"]] == ["X_3"]
    status = project.mlrunner("status", check=0)
    assert "Nothing is running" in status.stdout


def test_status_shows_live_commands_from_another_terminal(project: Project) -> None:
    sweep(project, 30)
    proc = project.popen("--grace", "1")
    try:
        wait_for(lambda: len(all_pids(project)) >= 4)
        res = project.mlrunner("status", check=0)
        assert res.stdout.count("  a  ") == 2, res.stdout
        assert "run 1" in res.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def test_ledger_commands_without_a_ledger_say_so(project: Project) -> None:
    res = project.mlrunner("ledger", "ls", check=None)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "ledger" in res.stderr.lower()
    res = project.run("--resume")
    assert res.returncode != 0 and "Traceback" not in res.stderr


def test_unwritable_output_is_a_clear_error(project: Project, tmp_path: Path) -> None:
    project.write(
        """
        template:
          a: echo hi
        ---
        x: [1]
        """
    )
    blocker = project.path / "afile"
    blocker.write_text("not a dir")
    res = project.run("-o", "afile/output")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "afile/output" in res.stderr


def test_second_ctrl_c_kills_at_once(project: Project) -> None:
    project.write(
        """
        template:
          a: "echo $$ >> {_output}/pids; trap '' TERM; sleep 60 & echo $! >> {_output}/pids; wait"
        resource: [0, 1]
        ---
        x: [1, 2]
        """
    )
    proc = project.popen("--grace", "60")
    wait_for(lambda: len(all_pids(project)) >= 4)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # the commands ignore SIGTERM: the runner waits out the grace period...
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)  # ...unless told again
    proc.communicate(timeout=20)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 130
    assert_all_dead(all_pids(project))
    statuses = {c["status"] for t in ledger_show(project)["tasks"] for c in t["commands"]}
    assert statuses == {"interrupted"}


def test_resume_a_given_run_id(project: Project) -> None:
    project.write(
        """
        template:
          a: "test -e ok_{x}"
        ---
        _title: one
        x: [1]
        ---
        _title: two
        x: [2]
        """
    )
    project.run("-t", "one", check=1)
    project.run("-t", "two", check=1)
    (project.path / "ok_1").touch()
    res = project.run("--resume", "1", check=0)
    assert res.stdout.count("START") == 1 and "X_1" in res.stdout
    runs = {
        r["id"]: r["status"] for r in json.loads(project.mlrunner("ledger", "ls", "--json", check=0).stdout)
    }
    assert runs == {1: "finished", 2: "failed"}
    bad = project.run("--resume", "9")
    assert bad.returncode == 2 and "no ledger entry for run 9" in bad.stderr


def test_resume_options_given_explicitly_override_the_stored_ones(project: Project) -> None:
    """`run --resume --retries 0` overrides a stored `--retries 2` (0 is also the default,
    so "equal to the default" cannot tell a given option from an absent one); without
    `--retries` the resume keeps the stored 2."""
    project.write(
        """
        template:
          a: "echo try >> tries; exit 1"
        ---
        x: [1]
        """
    )

    def tries() -> int:
        return len((project.path / "tries").read_text().split())

    project.run("--retries", "2", check=1)
    assert tries() == 3
    project.run("--resume", "--retries", "0", check=1)
    assert tries() == 4  # one attempt, no retry
    project.run("--resume", check=1)
    assert tries() == 7  # the stored --retries 2 again
    cmd = ledger_show(project)["tasks"][0]["commands"][0]
    assert (cmd["status"], cmd["attempts"]) == ("failed", 7)

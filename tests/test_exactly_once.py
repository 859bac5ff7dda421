"""Exactly once: a runner killed alone (kill -9) leaves its commands running; `run --resume`
waits for them and records their real exit status; no command ever runs twice (issue 14)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import Project, wait_for

from mlrunner import procs
from mlrunner.ledger import Ledger, views
from mlrunner.run import settle_orphans

# Each command appends one line when it starts and one when it completes (its own files,
# outside the output dir), then ends with the exit code the task's `code` says.
SWEEP = """
template:
  train: "echo {x} >> started.train; sleep $(cat delay); echo {x} >> done.train; exit {code}"
  test: "echo {x} >> started.test; echo {x} >> done.test"
resource: [0, 1, 2]
---
x: [1, 2, 3, 4, 5, 6, 7, 8]
code: [0]
---
x: [9]
code: [3]
"""


def counts(project: Project, name: str) -> Counter[str]:
    f = project.path / name
    return Counter(f.read_text().split()) if f.exists() else Counter()


def show(project: Project) -> dict:  # type: ignore[type-arg]
    return json.loads(project.mlrunner("ledger", "show", "1", "--json", check=0).stdout)


def commands(project: Project) -> dict[tuple[str, str], dict]:  # type: ignore[type-arg]
    return {(t["name"], c["name"]): c for t in show(project)["tasks"] for c in t["commands"]}


def kill_runner_alone(proc) -> None:  # type: ignore[no-untyped-def]
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def check_exactly_once(project: Project) -> None:
    xs = {str(x) for x in range(1, 10)}
    for cmd in ("train", "test"):
        started, done = counts(project, f"started.{cmd}"), counts(project, f"done.{cmd}")
        if cmd == "test":
            xs = xs - {"9"}  # task 9's train fails: its test never runs
        assert set(started) == set(done) == xs, (cmd, started, done)
        assert max(started.values()) == 1, f"{cmd} ran twice: {started}"
    by = commands(project)
    for x in range(1, 9):
        assert by[(f"X_{x}-Code_0", "train")]["status"] == "finished"
        assert by[(f"X_{x}-Code_0", "train")]["exit_code"] == 0
        assert by[(f"X_{x}-Code_0", "test")]["status"] == "finished"
    failed = by[("X_9-Code_3", "train")]
    assert (failed["status"], failed["exit_code"]) == ("failed", 3)
    # an attempt before the last is only ever one that never ran (the runner died between
    # recording it and spawning it): lost, never a second run
    with Ledger(project.path / "output") as ledger:
        for task in views.run_doc(ledger, 1)["tasks"]:
            for cmd in ("train", "test"):
                earlier = [a["status"] for a in ledger.attempts_for(task["key"], cmd)][:-1]
                assert set(earlier) <= {"lost"}, (task["name"], cmd, earlier)


@pytest.mark.parametrize("point", ["before-any-end", "during", "right-after-an-end"])
def test_kill9_of_the_runner_alone_then_resume_runs_every_command_once(project: Project, point: str) -> None:
    project.write(SWEEP)
    (project.path / "delay").write_text("0.6\n")
    proc = project.popen()
    if point == "before-any-end":
        wait_for(lambda: len(counts(project, "started.train")) >= 3, "three trainings started")
    elif point == "during":
        wait_for(
            lambda: len(counts(project, "done.test")) >= 2 and len(counts(project, "started.train")) >= 5,
            "mid-sweep",
        )
    else:
        wait_for(lambda: len(counts(project, "done.train")) >= 1, "a training done")
    kill_runner_alone(proc)
    left = [p for p in procs.descendants(os.getpid()) if p != proc.pid]
    res = project.run("--resume", check=1)  # task 9 fails (exit 3): exit status 1
    assert "Traceback" not in res.stderr
    check_exactly_once(project)
    assert "ran twice" not in res.stdout
    for p in left:  # nothing of the first runner is left behind
        assert procs.proc_start_time(p) is None or p == os.getpid()


def test_a_command_that_fails_while_no_runner_is_alive_keeps_its_exit_code(project: Project) -> None:
    project.write(
        """
        template:
          train: "echo {x} >> started; sleep 0.8; exit {code}"
        resource: [0, 1]
        ---
        x: [1]
        code: [3]
        ---
        x: [2]
        code: [0]
        """
    )
    proc = project.popen()
    wait_for(lambda: len(counts(project, "started")) == 2, "both started")
    kill_runner_alone(proc)
    time.sleep(1.5)  # both end while no runner is alive
    with Ledger(project.path / "output") as ledger:
        keys = {t["name"]: t["key"] for t in views.run_doc(ledger, 1)["tasks"]}
        settle_orphans(ledger, lambda e: None)  # what `run --resume` does first
        first = ledger.attempts_for(keys["X_1-Code_3"])
        ok = ledger.attempts_for(keys["X_2-Code_0"])
    # recorded with its true exit code, from the exit file its shepherd left
    assert [(a["status"], a["exit_code"]) for a in first] == [("failed", 3)]
    assert [(a["status"], a["exit_code"]) for a in ok] == [("finished", 0)]
    assert (project.path / "output" / "X_1-Code_3" / "stat").read_text() == "train: failed\n"
    assert (project.path / "output" / "X_2-Code_0" / "stat").read_text() == "train: finished\n"
    project.run("--resume", check=1)  # reruns what really failed, only that
    assert counts(project, "started") == Counter({"1": 2, "2": 1})


def test_resume_says_what_ended_while_no_runner_watched(project: Project) -> None:
    project.write(
        """
        template:
          train: "echo {x} >> started; sleep 0.5; exit 3"
        ---
        x: [1]
        """
    )
    proc = project.popen()
    wait_for(lambda: (project.path / "started").exists(), "started")
    kill_runner_alone(proc)
    time.sleep(1.0)
    res = project.run("--resume", check=1)
    assert "/X_1 ended while no runner watched it (exit 3): recorded" in res.stdout
    with Ledger(project.path / "output") as ledger:
        key = views.run_doc(ledger, 1)["tasks"][0]["key"]
        attempts = [(a["status"], a["exit_code"]) for a in ledger.attempts_for(key)]
    assert attempts == [("failed", 3), ("failed", 3)]


def test_status_shows_commands_running_without_a_runner(project: Project) -> None:
    project.write(
        """
        template:
          train: "echo go >> started; sleep 3"
        ---
        x: [1]
        """
    )
    proc = project.popen()
    wait_for(lambda: (project.path / "started").exists(), "started")
    kill_runner_alone(proc)
    out = project.mlrunner("status", check=0).stdout
    assert "no runner" in out and "X_1" in out, out
    doc = json.loads(project.mlrunner("status", "--json", check=0).stdout)
    assert [a["command"] for a in doc["orphaned"]] == ["train"]
    project.run("--resume", check=0)
    assert counts(project, "started") == Counter({"go": 1})


def test_a_power_loss_still_reruns_what_was_running(project: Project, tmp_path: Path) -> None:
    """Runner and commands killed together: no exit file, so those commands run again."""
    project.write(SWEEP)
    (project.path / "delay").write_text("0.6\n")
    proc = project.popen()
    wait_for(lambda: len(counts(project, "started.train")) >= 3, "three trainings started")
    victims = [proc.pid, *procs.descendants(proc.pid)]
    for p in victims:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()
    project.run("--resume", check=1)
    done = counts(project, "done.train")
    assert set(done) == {str(x) for x in range(1, 10)} and max(done.values()) == 1
    assert max(counts(project, "started.train").values()) == 2  # the killed ones ran again

"""Timeouts, stalls and cancels from another terminal (issue 14): real runs, real signals."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from helpers import Project, wait_for

from mlrunner import procs
from mlrunner.spec import format_duration, parse_duration


def commands(project: Project, run: int = 1) -> dict[tuple[str, str], dict]:  # type: ignore[type-arg]
    doc = json.loads(project.mlrunner("ledger", "show", str(run), "--json", check=0).stdout)
    return {(t["name"], c["name"]): c for t in doc["tasks"] for c in t["commands"]}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("6h", 21600), ("1d", 86400), ("1h30m", 5400), ("2.5", 2.5), (3, 3)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("bad", ["", "6x", "h", "1h 30", "-3", "0", "nan", "inf", True, "1e999"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_a_command_past_its_timeout_is_stopped_and_recorded_timeout(project: Project) -> None:
    project.write(
        """
        template:
          train: "echo started; sleep 30"
          test: "echo never"
        timeout: {train: 0.5s}
        ---
        x: [1]
        """
    )
    t0 = time.monotonic()
    res = project.run("--grace", "1", "--retries", "1", check=1)
    assert time.monotonic() - t0 < 25
    assert "past its timeout (0.5s)" in res.stderr
    assert res.stdout.count("FAIL") == 2 and "timeout" in res.stdout
    by = commands(project)
    assert (by[("X_1", "train")]["status"], by[("X_1", "train")]["attempts"]) == ("timeout", 2)  # retried
    assert by[("X_1", "test")]["status"] == "pending"
    assert (project.path / "output" / "X_1" / "stat").read_text() == "train: failed\n"  # 0.5.9's word


def test_timeout_on_the_command_line_overrides_params_yaml(project: Project) -> None:
    project.write(
        """
        template:
          train: "sleep 2"
        timeout: 0.3s
        ---
        x: [1]
        """
    )
    project.run("--timeout", "train=30s", check=0)  # the file's 0.3 s would have stopped it
    assert commands(project)[("X_1", "train")]["status"] == "finished"
    res = project.run("--timeout", "trian=1s", "-f", check=2)
    assert "did you mean 'train'" in res.stderr
    res = project.run("--timeout", "soon", "-f", check=2)
    assert "not a duration" in res.stderr and "Traceback" not in res.stderr


def test_a_bad_timeout_in_params_yaml_names_file_line_and_key(project: Project) -> None:
    project.write("template:\n  train: sleep 1\ntimeout:\n  train: 6 hours\n---\nx: [1]\n")
    res = project.run(check=2)
    assert "params.yaml:4" in res.stderr and "timeout.train" in res.stderr and "90s, 10m" in res.stderr
    assert not (project.path / "output").exists()


def test_a_stalled_command_is_stopped_and_a_chatty_one_is_not(project: Project) -> None:
    project.write(
        """
        template:
          train: "bash -c {body}"
        resource: [0, 1]
        ---
        body: ["echo once; sleep 30", "for i in 1 2 3 4 5 6 7 8 9 10; do echo $i; sleep 0.3; done"]
        """
    )
    t0 = time.monotonic()
    res = project.run("--stall", "1.5", "--grace", "1", check=1)
    assert time.monotonic() - t0 < 25
    statuses = sorted(c["status"] for c in commands(project).values())
    assert statuses == ["finished", "stalled"], statuses
    assert "its log has not grown" in res.stderr


def test_no_limit_set_costs_no_stop(project: Project) -> None:
    project.write("template:\n  a: sleep 0.2\n---\nx: [1, 2]\n")
    res = project.run(check=0)
    assert "timeout" not in res.stdout + res.stderr and "stall" not in res.stdout + res.stderr


CANCEL = """
template:
  train: "echo {x} >> {_output}/../../started; sleep 30"
resource: [0, 1]
---
x: [1, 2, 3, 4]
"""


def test_cancel_from_another_terminal_stops_those_experiments_only(project: Project) -> None:
    project.write(CANCEL.replace("sleep 30", "case {x} in 1|3) sleep 30;; *) sleep 1;; esac"))
    proc = project.popen("--grace", "1")
    started = project.path / "started"
    wait_for(lambda: started.exists() and len(started.read_text().split()) == 2, "two running")
    # X_1 runs now; X_3 is queued: both are cancelled, X_2 (running) and X_4 are not
    res = project.mlrunner("cancel", "X_1", "output/X_3", check=0)
    assert "Cancel asked for 2 experiment(s): X_1, X_3" in res.stdout
    out, err = proc.communicate(timeout=60)
    by = commands(project)
    assert by[("X_1", "train")]["status"] == "cancelled"
    assert by[("X_3", "train")]["status"] == "cancelled"
    assert by[("X_2", "train")]["status"] == "finished"
    assert by[("X_4", "train")]["status"] == "finished"  # the rest of the sweep went on
    assert "3" not in started.read_text().split()  # never started
    assert out.count("CANCEL") == 2 and proc.returncode == 1


def test_cancel_by_param_and_resume_reruns_the_cancelled(project: Project) -> None:
    project.write(CANCEL.replace("sleep 30", "[ -e {_output}/../../quick ] || sleep 30"))
    proc = project.popen("--grace", "1")
    started = project.path / "started"
    wait_for(lambda: started.exists() and len(started.read_text().split()) == 2, "two running")
    project.mlrunner("cancel", "--where", "x=1", "--where", "x=1", check=0)
    project.mlrunner("cancel", "--where", "x=2", check=0)
    wait_for(lambda: len(started.read_text().split()) == 4, "the other two started")
    project.mlrunner("cancel", "--where", "x=3", "X_4", check=0)
    proc.communicate(timeout=60)
    assert {c["status"] for c in commands(project).values()} == {"cancelled"}
    (project.path / "quick").write_text("")
    project.run("--resume", check=0)
    assert {c["status"] for c in commands(project).values()} == {"finished"}


def test_cancel_mistakes_exit_2(project: Project) -> None:
    project.write(CANCEL.replace("sleep 30", "true"))
    project.run(check=0)
    res = project.mlrunner("cancel", "X_9", check=2)
    assert "no experiment 'X_9'" in res.stderr
    res = project.mlrunner("cancel", "--where", "y=1", check=2)
    assert "no experiment has a param 'y'" in res.stderr and "params: x" in res.stderr
    res = project.mlrunner("cancel", check=2)
    assert "name the experiments" in res.stderr


def test_cancel_stops_a_command_whose_runner_died(project: Project) -> None:
    project.write(CANCEL)
    proc = project.popen()
    started = project.path / "started"
    wait_for(lambda: started.exists() and len(started.read_text().split()) == 2, "two running")
    proc.send_signal(signal.SIGKILL)  # the runner dies alone: its commands run on
    proc.communicate()
    res = project.mlrunner("cancel", "X_1", "--grace", "1", check=0)
    assert "stopped 'train' of X_1 (its runner had died)" in res.stdout
    assert commands(project)[("X_1", "train")]["status"] == "cancelled"
    left = json.loads(project.mlrunner("status", "--json", check=0).stdout)["orphaned"]
    assert [a["name"] for a in left] == ["X_2"]  # the other one still runs, untouched
    pid = left[0]["pid"]
    assert procs.proc_start_time(pid) == left[0]["proc_start"]
    os.killpg(pid, signal.SIGKILL)

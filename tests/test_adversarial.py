"""The promises that adversarial testing broke (issue 13), one test each, named for the promise.

Real runs in tmp git repos, real signals, real processes; each test failed on the code
before the fix."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from helpers import Project

from mlrunner import procs


def wait_for(cond, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what}: not in time")


def alive(pid: int) -> bool:
    return procs.proc_start_time(pid) is not None


def pids_in(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


# --- 2. processes a command leaves behind do not live on ---------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        "sleep 300 & echo $! > {_output}/left.pid",  # in its session, re-parented when bash exits
        "setsid sleep 300 & echo $! > {_output}/left.pid",  # escaped to a session of its own
        "(setsid bash -c 'sleep 300 & echo $! > {_output}/left.pid; wait' &)",  # double fork
    ],
    ids=["background", "setsid", "double-fork"],
)
def test_what_a_command_leaves_running_is_stopped_when_it_ends(project: Project, shape: str) -> None:
    project.write(
        f"""
        template:
          a: "{shape}; sleep 0.2; echo done"
          b: "echo second"
        ---
        x: [1]
        """
    )
    res = project.run("--grace", "1", check=0, timeout=60)
    out = project.path / "output" / "X_1"
    left = pids_in(out / "left.pid")
    assert left, res.stdout + res.stderr
    assert not any(alive(p) for p in left), f"left alive: {left}"
    assert "left process" in res.stderr and "'a' of output/X_1" in res.stderr, res.stderr
    assert "finished" in (out / "stat").read_text()
    doc = json.loads(project.mlrunner("ledger", "show", "1", "--json", check=0).stdout)
    assert [c["status"] for c in doc["tasks"][0]["commands"]] == ["finished", "finished"]


def test_a_command_that_ignores_sigterm_in_a_leftover_is_killed_after_the_grace(project: Project) -> None:
    project.write(
        """
        template:
          a: >-
            setsid bash -c 'trap "" TERM; echo $$ > {_output}/left.pid; while :; do sleep 0.1; done'
            & sleep 0.3
        ---
        x: [1]
        """
    )
    t0 = time.monotonic()
    project.run("--grace", "0.5", check=0, timeout=60)
    left = pids_in(project.path / "output" / "X_1" / "left.pid")
    assert left and not any(alive(p) for p in left)
    assert time.monotonic() - t0 < 30


def test_on_ctrl_c_every_process_a_command_started_goes(project: Project) -> None:
    project.write(
        """
        template:
          a: "setsid sleep 300 & echo $! >> {_output}/pids; sleep 300 & echo $! >> {_output}/pids; wait"
        resource: [0, 1]
        ---
        x: [1, 2]
        """
    )
    proc = project.popen("--grace", "1")
    outs = [project.path / "output" / f"X_{x}" / "pids" for x in (1, 2)]
    wait_for(lambda: all(len(pids_in(p)) == 2 for p in outs), "both commands started their children")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    every = [p for f in outs for p in pids_in(f)]
    wait_for(lambda: not any(alive(p) for p in every), "every child gone", timeout=10)


def test_the_runners_own_children_are_left_alone(project: Project) -> None:
    """nvidia-smi, git: children of the runner without a command's mark are not leftovers."""
    project.write(
        """
        template:
          a: "sleep 0.2"
        resource: [0, 1]
        ---
        x: [1, 2, 3, 4]
        """
    )
    res = project.run(check=0)
    assert "left process" not in res.stderr
    assert res.stdout.count("START") == 4

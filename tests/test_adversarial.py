"""The promises that adversarial testing broke (issue 13), one test each, named for the promise.

Real runs in tmp git repos, real signals, real processes; each test failed on the code
before the fix."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from helpers import Project, run_argv, wait_for

from mlrunner import procs


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


# --- 1. one output root, however it is spelled ---------------------------------------------

SHARED = """
template:
  a: "echo {x} >> {_output}/../../done.a; sleep 0.3"
  b: "echo {x} >> {_output}/../../done.b"
resource: [0, 1]
---
x: [1, 2, 3, 4, 5, 6]
"""


def done_counts(project: Project, cmd: str) -> dict[str, int]:
    f = project.path / f"done.{cmd}"
    words = f.read_text().split() if f.exists() else []
    return {w: words.count(w) for w in words}


def test_runners_on_one_output_spelled_differently_share_the_work(project: Project, tmp_path: Path) -> None:
    project.write(SHARED)
    link = tmp_path / "a link to output"
    elsewhere = tmp_path / "another cwd"
    elsewhere.mkdir()
    (project.path / "output").mkdir()
    link.symlink_to(project.path / "output")
    spellings = ["output", "./output", str(project.path / "output"), str(link)]
    procs_ = [project.popen("-o", s) for s in spellings]
    other = subprocess.Popen(
        run_argv("-y", str(project.path / "params.yaml"), "-o", str(project.path / "output")),
        cwd=elsewhere,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for p in [*procs_, other]:
        out, err = p.communicate(timeout=120)
        assert "Traceback" not in err, err
    for cmd in ("a", "b"):
        assert done_counts(project, cmd) == {str(x): 1 for x in range(1, 7)}, cmd


# --- 3. a reused pid is never signalled -----------------------------------------------------


@pytest.mark.parametrize("recorded_start", ["none", "wrong"])
def test_a_reused_pid_of_a_dead_runners_command_is_never_signalled(
    project: Project, recorded_start: str
) -> None:
    project.write(
        """
        template:
          a: "echo {x} >> {_output}/../../started; [ -e {_output}/../../quick ] || sleep 300"
        ---
        x: [1]
        """
    )
    proc = project.popen()
    wait_for(lambda: (project.path / "started").exists(), "started")
    for p in [proc.pid, *procs.descendants(proc.pid)]:  # runner and command die together
        os.kill(p, signal.SIGKILL)
    proc.communicate()
    innocent = subprocess.Popen(["sleep", "60"])  # an unrelated process now holds "its" pid
    try:
        con = sqlite3.connect(project.path / "output" / ".mlrunner" / "ledger.db")
        start = None if recorded_start == "none" else procs.proc_start_time(innocent.pid) - 7  # type: ignore[operator]
        con.execute(
            "UPDATE attempts SET pid = ?, pgid = ?, proc_start = ?", (innocent.pid, innocent.pid, start)
        )
        con.commit()
        con.close()
        (project.path / "quick").write_text("")
        res = project.run("--resume", check=0, timeout=60)
        assert innocent.poll() is None, "the innocent process was signalled"
        assert "WAIT" not in res.stdout  # not mistaken for the command, not waited for
        assert (project.path / "started").read_text().split() == ["1", "1"]  # it ran again
    finally:
        innocent.kill()
        innocent.wait()


# --- 4. a broken console or SIGHUP never stops the sweep ------------------------------------

QUICK = """
template:
  a: "echo {x} >> {_output}/../../done.a"
resource: [0, 1]
---
x: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
"""


def statuses(project: Project) -> list[str]:
    doc = json.loads(project.mlrunner("ledger", "show", "1", "--json", check=0).stdout)
    return [c["status"] for t in doc["tasks"] for c in t["commands"]]


def test_a_closed_stdout_never_stops_the_sweep(project: Project) -> None:
    project.write(QUICK.replace('"echo {x}', '"sleep 0.1; echo {x}'))
    r, w = os.pipe()
    proc = subprocess.Popen(run_argv(), cwd=project.path, env=project.env, stdout=w, stderr=subprocess.PIPE)
    os.close(w)
    os.read(r, 10)  # like `| head -c 10`: read a little, then go away
    os.close(r)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err
    assert statuses(project) == ["finished"] * 10
    log = (project.path / "output" / ".mlrunner" / "runs" / "1.log").read_text()
    assert log.count("START") == 10 and "No task failed." in log  # the console, kept whole


def test_sighup_is_ignored_and_the_sweep_goes_on(project: Project) -> None:
    project.write(QUICK.replace('"echo {x}', '"sleep 0.3; echo {x}'))
    proc = project.popen()
    wait_for(lambda: (project.path / "done.a").exists(), "first command done")
    proc.send_signal(signal.SIGHUP)  # a dropped ssh session
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert statuses(project) == ["finished"] * 10


def test_sigint_while_stdout_is_a_full_pipe_never_deadlocks(project: Project) -> None:
    values = ", ".join(str(i) for i in range(3000))
    project.write(f'template:\n  a: "true {{x}}"\nresource: [0, 1]\n---\nx: [{values}]\n')
    proc = subprocess.Popen(
        run_argv(), cwd=project.path, env=project.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        log = project.path / "output" / ".mlrunner" / "runs" / "1.log"
        wait_for(lambda: log.exists() and log.read_text().count("START") > 1500, "the pipe is full")
        proc.send_signal(signal.SIGINT)  # nobody reads stdout: its pipe is full
        proc.wait(timeout=60)  # a deadlocked runner never gets here
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 130
    assert "Stopping" in log.read_text()


# --- 16. the small ones ----------------------------------------------------------------------


def test_runners_sharing_a_sweep_count_each_others_commands(project: Project) -> None:
    project.write(SHARED)
    a, b = project.popen(), project.popen()
    outs = [p.communicate(timeout=120)[0] for p in (a, b)]
    assert done_counts(project, "a") == {str(x): 1 for x in range(1, 7)}
    for out in outs:
        line = next(line for line in out.splitlines() if line.startswith("Commands:"))
        assert ", 0 not started" in line and "by another runner" in line, line


def test_resume_says_when_the_run_started_in_words(project: Project) -> None:
    project.write(QUICK)
    project.run(check=0)
    res = project.run("--resume", check=0)
    assert re.search(r"Resuming run 1 \(started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)", res.stdout), res.stdout


def test_json_times_keep_their_milliseconds(project: Project) -> None:
    project.write(QUICK)
    project.run(check=0)
    doc = json.loads(project.mlrunner("ledger", "show", "1", "--json", check=0).stdout)
    started = doc["tasks"][0]["commands"][0]["started_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", started), started


def test_usage_mistakes_exit_2(project: Project, tmp_path: Path) -> None:
    project.write(QUICK)
    res = project.run("--resume", "-o", "never-ran", check=2)  # no ledger there: a wrong -o
    assert "nothing has run with -o never-ran" in res.stderr and "Traceback" not in res.stderr
    subprocess.run(["git", "init", "-q"], cwd=project.path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=project.path, check=True)
    subprocess.run(["git", "commit", "-qm", "c"], cwd=project.path, check=True, env=project.env)
    project.run(check=0)
    busy = tmp_path / "busy dest"
    busy.mkdir()
    (busy / "something").write_text("x")
    res = project.mlrunner("restore", str(project.path / "output" / "X_1"), str(busy), check=2)
    assert "is not empty" in res.stderr


def test_resume_outside_git_says_nothing_about_code_changes(project: Project) -> None:
    project.write(QUICK)
    project.run(check=0)
    res = project.run("--resume", check=0)
    assert "code changed" not in res.stderr, res.stderr


def test_debug_mode_never_overwrites_a_finished_experiment(project: Project) -> None:
    project.write(QUICK)
    project.run(check=0)
    log = next((project.path / "output" / "X_1").glob("log.a.*"))
    res = project.run("-d", check=0)
    assert "SKIP" in res.stdout and "START" not in res.stdout
    assert [p.name for p in (project.path / "output" / "X_1").glob("log.a.*")] == [log.name]


# --- 12. a no-op rerun never rewrites provenance --------------------------------------------


def git(project: Project, *args: str) -> None:
    subprocess.run(["git", *args], cwd=project.path, check=True, env=project.env, capture_output=True)


def test_a_run_that_skipped_everything_keeps_the_provenance_of_the_run_that_ran(project: Project) -> None:
    project.write(QUICK)
    (project.path / "train.py").write_text("print('v1')\n")
    (project.path / ".gitignore").write_text("output/\ndone.*\n")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "v1")
    project.run(check=0)
    (project.path / "train.py").write_text("print('v2, uncommitted')\n")  # dirty now
    res = project.run(check=0)
    assert res.stdout.count("SKIP") == 10
    runs = json.loads(project.mlrunner("ledger", "ls", "--json", check=0).stdout)
    assert [(r["id"], r["n_finished"], r["n_skipped"]) for r in runs] == [(1, 10, 0), (2, 0, 10)]
    from mlrunner.examine import Examiner

    ex = Examiner()
    ex.exam(output=str(project.path / "output"), regex=".*")
    table = ex.table(ledger=True)
    assert set(table["_run_id"]) == {1}  # the run whose attempts produced the experiments
    assert not any(table["_git_dirty"])  # they ran on clean code


# --- 11. --isolate keeps the script's outputs and leaves the user's repo alone -----------------


def test_isolate_writes_outputs_into_the_experiment_dir_and_registers_no_worktree(project: Project) -> None:
    project.write(
        """
        template:
          train: "echo w > {_output}/ckpt.pt"
        ---
        x: [1]
        """
    )
    (project.path / ".gitignore").write_text("output/\n")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "c")
    project.run("--isolate", check=0)
    assert (project.path / "output" / "X_1" / "ckpt.pt").read_text() == "w\n"
    assert not list((project.path / "output" / ".mlrunner").rglob("ckpt.pt"))  # not in the checkout
    worktrees = (
        subprocess.run(
            ["git", "worktree", "list"], cwd=project.path, capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .splitlines()
    )
    assert len(worktrees) == 1, worktrees  # the user's own checkout only


# --- 6 and 9. taking over a dead runner's work never waits in a transaction, nor in turn ------

ORPHANS = """
template:
  a: "trap '' TERM; echo {x} >> {_output}/../../started.a; sleep {t}; echo {x} >> {_output}/../../done.a"
resource: [0, 1, 2, 3, 4, 5, 6, 7]
---
x: [1, 2, 3, 4]
t: [3]
---
x: [5, 6, 7, 8, 9, 10, 11, 12]
t: [0.1]
"""


def kill_runner_with_orphans(project: Project, grace: str = "40") -> None:
    project.write(ORPHANS.replace("resource: [0, 1, 2, 3, 4, 5, 6, 7]", "resource: [0, 1, 2, 3]"))
    proc = project.popen("--grace", grace)
    wait_for(lambda: len(pids_in(project.path / "started.a")) == 4, "four long commands started")
    proc.send_signal(signal.SIGKILL)  # dies alone: four commands that ignore SIGTERM run on
    proc.communicate()


def test_runners_taking_over_a_dead_runners_work_never_lock_each_other_out(project: Project) -> None:
    kill_runner_with_orphans(project)
    t0 = time.monotonic()
    b, c = project.popen("--resume", "--grace", "40"), project.popen("--grace", "40")
    outs = [p.communicate(timeout=120) for p in (b, c)]
    assert time.monotonic() - t0 < 30  # nobody waited out a 40 s grace period
    for _out, err in outs:
        assert "locked" not in err and "Traceback" not in err, err
    done = (project.path / "done.a").read_text().split()
    assert sorted(done, key=int) == [str(x) for x in range(1, 13)]  # each exactly once


def test_a_resume_waits_for_the_dead_runners_commands_together_never_one_by_one(project: Project) -> None:
    kill_runner_with_orphans(project, grace="3")
    res = project.run("--resume", check=0, timeout=120)
    waits = [line for line in res.stdout.splitlines() if line.startswith("WAIT")]
    assert len(waits) == 4, res.stdout  # all four at once, none stopped (they ignore SIGTERM)
    done = (project.path / "done.a").read_text().split()
    assert sorted(done, key=int) == [str(x) for x in range(1, 13)]  # the four ended on their own

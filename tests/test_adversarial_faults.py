"""Faults of the filesystem, the host and concurrent resumes (issue 18): one test per promise,
named for it; each failed on the code before the fix."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Project, run_argv, wait_for


def show(project: Project, run: int = 1, output: str = "output") -> dict:  # type: ignore[type-arg]
    res = project.mlrunner("ledger", "show", str(run), "-o", output, "--json", check=0)
    return json.loads(res.stdout)


def words(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# --- 3. a resume from another directory runs where the run started ---------------------------


def test_resume_from_another_directory_writes_where_the_run_started(project: Project, tmp_path: Path) -> None:
    project.write(
        """
        template:
          a: "cat data.txt >> {_output}/seen; [ -e go ] || exit 3"
        ---
        x: [1, 2]
        """
    )
    (project.path / "data.txt").write_text("from the project\n")
    project.run(check=1)  # both fail: no `go` yet
    (project.path / "go").write_text("")
    elsewhere = tmp_path / "somewhere else"
    elsewhere.mkdir()
    res = subprocess.run(
        run_argv("--resume", "-o", str(project.path / "output")),
        cwd=elsewhere,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert list(elsewhere.iterdir()) == []  # nothing written here
    for x in (1, 2):
        assert (project.path / "output" / f"X_{x}" / "seen").read_text() == "from the project\n" * 2
    assert {c["status"] for t in show(project)["tasks"] for c in t["commands"]} == {"finished"}


# --- 4. --no-subdir never skips a new task ------------------------------------------------------


def test_no_subdir_runs_a_task_added_later(project: Project) -> None:
    grid = """
        template:
          a: "echo {x} >> done"
        ---
        x: [X]
        """
    project.write(grid.replace("[X]", "[1]"))
    project.run("--no-subdir", check=0)
    project.write(grid.replace("[X]", "[1, 2]"))
    res = project.run("--no-subdir", check=0)
    assert "SKIP" in res.stdout and res.stdout.count("START") == 1, res.stdout
    assert words(project.path / "done") == ["1", "2"]


# --- 5. a failing command fails once for every runner of a sweep -----------------------------


def test_concurrent_runners_run_a_failing_command_once(project: Project) -> None:
    project.write(
        """
        template:
          a: "echo {x} >> tries; sleep 0.6; exit 1"
        resource: [0, 1]
        ---
        x: [1, 2, 3, 4, 5, 6, 7, 8]
        """
    )
    runners = [project.popen()]
    wait_for(lambda: len(words(project.path / "tries")) >= 2, "the first runner failed two")
    runners += [project.popen() for _ in range(3)]  # they find those failures already recorded
    for r in runners:
        r.communicate(timeout=120)
    tries = words(project.path / "tries")
    assert sorted(tries, key=int) == [str(x) for x in range(1, 9)], tries  # once each, whoever ran it
    project.run("--retries", "1", check=1)  # a later run reruns failures: with its retries
    assert len(words(project.path / "tries")) == 8 + 16


def test_a_later_run_reruns_the_failures_of_a_finished_one(project: Project) -> None:
    """The other half of the rule: a failure of a runner that is gone is rerun."""
    project.write("template:\n  a: echo {x} >> tries; exit 1\n---\nx: [1]\n")
    project.run(check=1)
    project.run(check=1)
    assert words(project.path / "tries") == ["1", "1"]
    assert os.path.isdir(project.path / "output")


# --- 1. a new hostname never hides a dead runner ------------------------------------------------


def other_host_resume(project: Project) -> subprocess.CompletedProcess[str]:
    """`run --resume` in a UTS namespace of its own: the same machine under another hostname
    (a new container, a renamed machine)."""
    argv = " ".join(f"'{a}'" for a in run_argv("--resume"))
    return subprocess.run(
        ["unshare", "--uts", "sh", "-c", f"hostname another-host && exec {argv}"],
        cwd=project.path,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def age_heartbeats(project: Project, seconds: float) -> None:
    con = sqlite3.connect(project.path / "output" / ".mlrunner" / "ledger.db")
    con.execute("UPDATE runners SET heartbeat_at = heartbeat_at - ?", (seconds,))
    con.commit()
    con.close()


def test_a_runner_on_another_host_is_dead_once_its_heartbeat_is_stale(project: Project) -> None:
    project.write(
        """
        template:
          a: "echo {x} >> started; sleep {t}; echo {x} >> done"
        resource: [0, 1]
        ---
        x: [1, 2]
        t: [0.3]
        ---
        x: [3, 4]
        t: [30]
        """
    )
    proc = project.popen()
    wait_for(lambda: len(words(project.path / "started")) == 2, "two started")
    proc.send_signal(signal.SIGKILL)  # the runner dies alone...
    proc.communicate()
    wait_for(lambda: len(words(project.path / "done")) == 2, "its commands ended on their own")
    age_heartbeats(project, 120)  # ...a couple of minutes ago
    res = other_host_resume(project)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No task failed." in res.stdout
    assert sorted(words(project.path / "done"), key=int) == ["1", "2", "3", "4"]
    assert sorted(words(project.path / "started"), key=int) == ["1", "2", "3", "4"]  # none ran twice
    doc = show(project)
    assert doc["run"]["status"] == "finished"
    assert {c["status"] for t in doc["tasks"] for c in t["commands"]} == {"finished"}


def test_a_runner_on_another_host_with_a_fresh_heartbeat_keeps_its_tasks(project: Project) -> None:
    project.write("template:\n  a: echo {x} >> started; sleep 30\n---\nx: [1]\n")
    proc = project.popen()
    wait_for(lambda: len(words(project.path / "started")) == 1, "started")
    try:
        res = other_host_resume(project)  # its heartbeat is fresh: it counts as alive
        assert words(project.path / "started") == ["1"]  # nothing taken from it
        assert "START" not in res.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


# --- 2. a resume beside a live run joins it --------------------------------------------------


def test_a_resume_beside_a_live_run_joins_it_and_the_run_ends_with_its_last_runner(project: Project) -> None:
    project.write(
        """
        template:
          a: "echo {x} >> started; sleep {t}"
        resource: [0]
        ---
        x: [1]
        t: [3]
        ---
        x: [2, 3]
        t: [0.1]
        """
    )
    first = project.popen()
    wait_for(lambda: words(project.path / "started") == ["1"], "the first runner works")
    res = project.run("--resume", check=0)  # joins: runs 2 and 3 while the first runs 1
    assert "joining it" in res.stdout, res.stdout
    doc = show(project)
    assert doc["run"]["status"] == "running" and doc["run"]["pid"] == first.pid  # its row untouched
    first.communicate(timeout=60)
    doc = show(project)
    assert doc["run"]["status"] == "finished" and doc["run"]["pid"] == first.pid
    assert sorted(words(project.path / "started")) == ["1", "2", "3"]


# --- 6. the runner's own file errors never crash the sweep -----------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (as root, which CI is), unmounted afterwards."""
    mnt = tmp_path / "small disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_stops_the_run_cleanly_with_what_is_full(project: Project, small_disk: Path) -> None:
    project.write(
        """
        template:
          a: cat /dev/zero > {_output}/big 2>/dev/null; echo {x} >> "$DONE"; true
        ---
        x: [1, 2, 3]
        """
    )
    project.env["DONE"] = str(project.path / "done")
    res = project.run("-o", str(small_disk / "output"), check=1)
    assert "Traceback" not in res.stderr and "Bus error" not in res.stderr
    assert "is full" in res.stderr and "run --resume" in res.stderr, res.stderr
    assert words(project.path / "done") == ["1"]  # it stopped: nothing more was started


def test_a_read_only_output_at_start_is_a_clear_error(project: Project, small_disk: Path) -> None:
    (small_disk / "output").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    project.write("template:\n  a: echo\n---\nx: [1]\n")
    res = project.run("-o", str(small_disk / "output"), check=None)
    assert res.returncode in (1, 2) and "Traceback" not in res.stderr
    assert "read-only" in res.stderr.lower() or "Read-only" in res.stderr, res.stderr


def test_a_deleted_experiment_dir_fails_that_experiment_only(project: Project) -> None:
    project.write(
        """
        template:
          a: "echo {x} >> {_output}/../../a; sleep {t}"
          b: "echo {x} >> {_output}/../../b"
        ---
        x: [1]
        t: [1.5]
        ---
        x: [2, 3]
        t: [0]
        """
    )
    proc = project.popen()
    wait_for(lambda: words(project.path / "a")[:1] == ["1"], "the first experiment runs")
    shutil.rmtree(project.path / "output" / "X_1-T_1.5")  # while its first command runs
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert sorted(words(project.path / "b")) == ["2", "3"]  # the rest went on
    by = {(t["name"], c["name"]): c for t in show(project)["tasks"] for c in t["commands"]}
    failed = by[("X_1-T_1.5", "b")]
    assert failed["status"] == "failed" and "No such file or directory" in (failed["log_tail"] or "")


# --- 9. a stopped process holding the ledger never kills the others ---------------------------

HOLDER = """
import os, signal, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("held", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)  # stopped inside its write transaction (Ctrl-Z)
con.execute("COMMIT")
"""


def test_a_runner_waits_for_a_stopped_lock_holder_and_says_who_it_is(project: Project) -> None:
    project.write("template:\n  a: echo {x} >> done\n---\nx: [1, 2, 3]\n")
    project.run("-f", check=0)  # the ledger exists
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(project.path / "output" / ".mlrunner" / "ledger.db")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        project.env["MLRUNNER_LEDGER_BUSY_S"] = "1"
        runner = project.popen("-f")
        time.sleep(3)  # three busy timeouts: it would have died after the first
        assert runner.poll() is None, runner.communicate()
        holder.send_signal(signal.SIGCONT)  # the holder goes on and commits
        out, err = runner.communicate(timeout=60)
        assert runner.returncode == 0, err
        assert "waiting for the ledger's write lock" in err and f"pid {holder.pid}" in err, err
        assert "STOPPED" in err and f"kill -CONT {holder.pid}" in err
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.wait(timeout=30)
    assert words(project.path / "done") == ["1", "2", "3"] * 2


def test_status_names_a_stopped_runner(project: Project) -> None:
    project.write("template:\n  a: echo {x} >> started; sleep 2\n---\nx: [1, 2]\n")
    proc = project.popen()
    wait_for(lambda: words(project.path / "started") == ["1"], "running")
    proc.send_signal(signal.SIGSTOP)
    try:
        out = project.mlrunner("status", check=0).stdout
        assert f"pid {proc.pid}" in out and "STOPPED" in out and f"kill -CONT {proc.pid}" in out, out
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.communicate(timeout=60)


# --- 10. small ones ----------------------------------------------------------------------------


def test_resume_of_a_run_stopped_before_its_ledger_says_what_was_found(project: Project) -> None:
    project.write("template:\n  a: echo\n---\nx: [1]\n")
    (project.path / "output" / ".mlrunner" / "snapshots").mkdir(parents=True)
    (project.path / "output" / "params.yaml").write_text("template: {a: echo}\n")
    res = project.run("--resume", check=2)
    assert "a run started there" in res.stderr and "params.yaml" in res.stderr
    assert "run -o output" in res.stderr


# --- 7 and 8. a lost ledger is rebuilt, never silently empty ------------------------------------

RECOVERABLE = """
template:
  train: "echo {x} >> {_output}/../../ran.train; exit {code}"
  test: "echo {x} >> {_output}/../../ran.test"
---
x: [1, 2]
code: [0]
---
x: [3]
code: [2]
"""


def test_a_zero_length_ledger_is_damaged_not_empty(project: Project) -> None:
    project.write(RECOVERABLE)
    project.run(check=1)
    (project.path / "output" / ".mlrunner" / "ledger.db").write_bytes(b"")
    for wal in (project.path / "output" / ".mlrunner").glob("ledger.db-*"):
        wal.unlink()
    res = project.mlrunner("ledger", "ls", check=1)
    assert "empty (0 bytes)" in res.stderr and "mlrunner ledger recover" in res.stderr
    res = project.run(check=1)  # never a fresh ledger over the old one
    assert "mlrunner ledger recover" in res.stderr


def test_ledger_recover_rebuilds_runs_tasks_and_attempts_from_the_dirs(project: Project) -> None:
    project.write(RECOVERABLE)
    project.run(check=1)
    hidden = project.path / "output" / ".mlrunner"
    (hidden / "ledger.db.bak").unlink()  # no backup: the dirs alone
    (hidden / "ledger.db").write_bytes(b"not a database at all")
    res = project.mlrunner("ledger", "recover", check=0)
    assert "kept the damaged file as" in res.stdout
    assert "1 run(s), 3 task(s), 5 attempt(s)" in res.stdout, res.stdout
    assert list(hidden.glob("ledger.db.damaged-*"))
    by = {(t["name"], c["name"]): c for t in show(project)["tasks"] for c in t["commands"]}
    assert by[("X_1-Code_0", "train")]["status"] == "finished"
    assert (by[("X_3-Code_2", "train")]["status"], by[("X_3-Code_2", "train")]["exit_code"]) == ("failed", 2)
    # the tasks keep their identity: a later run skips what finished and reruns the failure
    res = project.run(check=1)
    assert res.stdout.count("SKIP") == 4 and res.stdout.count("START") == 1, res.stdout
    assert words(project.path / "ran.train").count("1") == 1


def test_every_run_leaves_a_backup_and_recover_starts_from_it(project: Project) -> None:
    project.write(RECOVERABLE)
    project.run(check=1)
    hidden = project.path / "output" / ".mlrunner"
    assert (hidden / "ledger.db.bak").is_file()
    (hidden / "ledger.db").unlink()  # lost
    res = project.mlrunner("ledger", "recover", check=0)
    assert "started from the last backup" in res.stdout
    runs = json.loads(project.mlrunner("ledger", "ls", "--json", check=0).stdout)
    assert [r["id"] for r in runs] == [1]  # the run, as it was, not a rebuilt one


def test_records_a_lost_wal_dropped_come_back_from_the_exit_files(project: Project) -> None:
    project.write("template:\n  a: echo {x} >> ran; sleep 1.1\n---\nx: [1, 2, 3, 4]\n")
    hidden = project.path / "output" / ".mlrunner"
    proc = project.popen()
    wait_for(lambda: words(project.path / "ran") == ["1"], "the first command runs")
    early = sqlite3.connect(hidden / "early.db")
    live = sqlite3.connect(hidden / "ledger.db")
    live.backup(early)  # the ledger as it was then: every later commit is "lost"
    live.close()
    early.close()
    proc.communicate(timeout=60)
    for name in ("ledger.db-wal", "ledger.db-shm"):
        (hidden / name).unlink(missing_ok=True)
    os.replace(hidden / "early.db", hidden / "ledger.db")
    res = project.run("--resume", check=0)
    assert words(project.path / "ran") == ["1", "2", "3", "4"], res.stdout  # nothing ran again
    assert res.stdout.count("recorded from its exit file") == 3, res.stdout
    by = {t["name"]: t["commands"][0] for t in show(project)["tasks"]}
    assert {c["status"] for c in by.values()} == {"finished"}

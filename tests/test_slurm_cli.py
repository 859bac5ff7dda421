"""`run --backend slurm` end to end: the real CLI, the real ledger, a real Slurm cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import Project
from slurm_support import registry, slurm_cluster, squeue_ids, wait_until_gone

from mlrunner.backends.slurm import job as slurm_job

pytestmark = pytest.mark.slurm
__all__ = ["slurm_cluster"]  # the fixture, imported for pytest


def show(project: Project) -> dict[str, Any]:
    res = project.mlrunner("ledger", "show", "1", "--json", check=0)
    return json.loads(res.stdout)


def commands(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(t["name"], c["name"]): c for t in doc["tasks"] for c in t["commands"]}


def wait_for_running(
    project: Project, proc: subprocess.Popen[str], n: int, timeout: float = 60
) -> list[dict[str, Any]]:
    """The registry entries once ``n`` jobs each report a running command."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"run exited {proc.returncode} before {n} jobs ran:\n{out}\n{err}")
        entries = [e for e in registry(project.path / "output") if e.get("job_id")]
        running = [
            e
            for e in entries
            if any(
                r.get("status") == "running"
                for r in slurm_job.read_results(e["results_dir"], e["token"]).values()
            )
        ]
        if len(running) >= n:
            return entries
        assert time.monotonic() < deadline, f"only {len(running)} of {n} jobs running: {entries}"
        time.sleep(0.1)


def test_failing_sweep_then_resume_after_the_fix_submits_one_job(
    slurm_cluster: None, project: Project
) -> None:
    project.write(
        """
        template:
          train: >-
            echo "train {lr} on $CUDA_VISIBLE_DEVICES";
            test {lr} != 3 || test -e fixed || exit 7
          eval: echo "eval {lr}"
        slurm:
          time: 5
          cpus_per_task: 1
        ---
        lr: [1, 2, 3, 4, 5]
        """
    )
    res = project.run("--backend", "slurm", check=1)
    starts = [line for line in res.stdout.splitlines() if line.startswith("START")]
    assert len(starts) == 9 and all("job: " in s and "node: " in s and "gpu: " in s for s in starts)
    assert len(registry(project.path / "output")) == 5
    cmds = commands(show(project))
    failed = cmds[("Lr_3", "train")]
    assert (failed["status"], failed["exit_code"]) == ("failed", 7)
    assert cmds[("Lr_3", "eval")]["status"] == "pending"
    assert sum(c["status"] == "finished" for c in cmds.values()) == 8
    log = project.path / failed["log"] if not os.path.isabs(failed["log"]) else Path(failed["log"])
    assert log.parent.name == "Lr_3" and "train 3 on " in log.read_text()

    (project.path / "fixed").touch()
    res = project.run("--resume", check=0)
    assert len(registry(project.path / "output")) == 6  # exactly one more job
    cmds = commands(show(project))
    assert {c["status"] for c in cmds.values()} == {"finished"}
    assert cmds[("Lr_3", "train")]["attempts"] == 2 and cmds[("Lr_1", "train")]["attempts"] == 1


def test_scancel_is_recorded_and_resumed(slurm_cluster: None, project: Project) -> None:
    project.write(
        """
        template:
          train: test -e go || sleep 60
        ---
        lr: [1]
        """
    )
    proc = project.popen("--backend", "slurm")
    try:
        (entry,) = wait_for_running(project, proc, 1)
        subprocess.run(["scancel", entry["job_id"]], check=True)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "cancelled" in out, out + err
    assert commands(show(project))[("Lr_1", "train")]["status"] == "cancelled"
    (project.path / "go").touch()
    project.run("--resume", check=0)
    cmd = commands(show(project))[("Lr_1", "train")]
    assert (cmd["status"], cmd["attempts"]) == ("finished", 2)


def test_kill_9_of_the_runner_then_resume_reattaches(slurm_cluster: None, project: Project) -> None:
    """a: finishes while nobody watches; b: still running at resume; c: cancelled while away."""
    project.write(
        """
        template:
          train: 'while [ ! -e gate.{lr} ]; do sleep 0.1; done; echo trained {lr}'
          eval: echo evaluated {lr}
        ---
        lr: [a, b, c]
        """
    )
    proc = project.popen("--backend", "slurm", start_new_session=True)
    try:
        entries = wait_for_running(project, proc, 3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner dies; its jobs do not
        proc.wait()
    job = {e["task_name"]: e["job_id"] for e in entries}
    assert len(squeue_ids(list(job.values()))) == 3
    (project.path / "gate.a").touch()
    subprocess.run(["scancel", job["Lr_c"]], check=True)
    wait_until_gone([job["Lr_a"], job["Lr_c"]])
    (project.path / "gate.c").touch()  # its resubmitted job will pass

    timer = threading.Timer(2.0, (project.path / "gate.b").touch)  # b finishes only after the reattach
    timer.start()
    try:
        res = project.run("--resume", check=0)
    finally:
        timer.cancel()
    subs = registry(project.path / "output")
    assert sorted(e["task_name"] for e in subs) == ["Lr_a", "Lr_b", "Lr_c", "Lr_c"]  # only c again
    cmds = commands(show(project))
    assert {k: c["status"] for k, c in cmds.items()} == {
        (t, c): "finished" for t in ("Lr_a", "Lr_b", "Lr_c") for c in ("train", "eval")
    }, res.stdout
    for name in ("a", "b", "c"):  # each training ran to its end exactly once
        logs = (project.path / "output" / f"Lr_{name}").glob("log.train.*")
        assert sum(p.read_text().count(f"trained {name}") for p in logs) == 1


def test_ctrl_c_cancels_the_jobs(slurm_cluster: None, project: Project) -> None:
    project.write(
        """
        template:
          train: sleep 60
        ---
        lr: [1, 2]
        """
    )
    proc = project.popen("--backend", "slurm")
    try:
        entries = wait_for_running(project, proc, 2)
        proc.send_signal(signal.SIGINT)  # not a terminal: no question, the jobs are cancelled
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert squeue_ids([e["job_id"] for e in entries]) == []
    cmds = commands(show(project))
    assert {c["status"] for c in cmds.values()} == {"interrupted"}


def test_detach_leaves_the_jobs_running_and_resume_picks_them_up(
    slurm_cluster: None, project: Project
) -> None:
    project.write(
        """
        template:
          train: 'while [ ! -e gate ]; do sleep 0.1; done'
        ---
        lr: [1, 2]
        """
    )
    proc = project.popen("--backend", "slurm", "--detach")
    try:
        entries = wait_for_running(project, proc, 2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    jobs = [e["job_id"] for e in entries]
    assert len(squeue_ids(jobs)) == 2  # still running after the runner left
    (project.path / "gate").touch()
    project.run("--resume", check=0)
    assert len(registry(project.path / "output")) == 2  # picked up, not submitted again
    assert {c["status"] for c in commands(show(project)).values()} == {"finished"}

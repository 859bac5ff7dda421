"""The Slurm backend against a real Slurm cluster (scripts/start-local-slurm.sh).

The backend is driven directly with real sweep tasks and a small recording stand-in for
the scheduler's Recorder (it keeps attempts in memory the way the ledger does, including
``previous_jobs`` for a resumed run). Every test has its own output dir, so its own
submitit folder and job registry.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from slurm_support import slurm_cluster, squeue_ids

from mlrunner.backends.base import Outcome, Placement, RunOptions, WorkItem
from mlrunner.backends.slurm import Registry, SlurmBackend
from mlrunner.backends.slurm import job as slurm_job
from mlrunner.errors import BackendError
from mlrunner.plan import Command, Task, plan
from mlrunner.spec import parse_spec
from mlrunner.status import AttemptStatus, FailureClass

pytestmark = pytest.mark.slurm
__all__ = ["slurm_cluster"]  # the fixture, imported for pytest


class RecordingRecorder:
    """Stands in for the scheduler: records every call; attempts live in memory like ledger rows
    (the placement and the outcome flattened into the row, as the ledger stores them)."""

    def __init__(
        self,
        history: Sequence[dict[str, Any]] = (),
        on_start: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.stop = threading.Event()
        self.kill_now = threading.Event()
        self.on_start = on_start
        self.lock = threading.Lock()
        self.attempts: list[dict[str, Any]] = [dict(a) for a in history]
        self.claimed: list[str] = []
        self.released: list[str] = []
        self.cancels: set[str] = set()
        self.warnings: list[str] = []

    def claim(self, item: WorkItem) -> bool:
        os.makedirs(item.task.output_dir, exist_ok=True)
        self.claimed.append(item.task.key)
        return True

    def release(self, item: WorkItem) -> None:
        self.released.append(item.task.key)

    def log_path(self, item: WorkItem, command: Command) -> Path:
        base = Path(item.task.output_dir, f"log.{command.name}.20240101.000000")
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}.{n}")
        return path

    def command_started(self, item: WorkItem, command: Command, placement: Placement, log_path: Path) -> int:
        assert placement.process is None and placement.job is not None  # a job, never a local process
        with self.lock:
            attempt = {
                "attempt_id": len(self.attempts) + 1,
                "task": item.task.name,
                "task_key": item.task.key,
                "command": command.name,
                "status": AttemptStatus.RUNNING,
                "ended_at": None,
                "resource": placement.resource,
                "gpus": placement.gpus,
                "job_id": placement.job.job_id,
                "node": placement.job.node,
                "log_path": log_path,
            }
            self.attempts.append(attempt)
        if self.on_start is not None:
            self.on_start(attempt)
        return int(attempt["attempt_id"])

    def command_ended(
        self,
        attempt_id: int,
        item: WorkItem,
        command: Command,
        outcome: Outcome,
        log_path: Path,
        *,
        last: bool = False,
    ) -> AttemptStatus | FailureClass:
        assert isinstance(outcome.status, AttemptStatus) and outcome.status is not AttemptStatus.RUNNING
        with self.lock:
            attempt = self.attempts[attempt_id - 1]
            assert attempt["status"] == AttemptStatus.RUNNING, f"attempt {attempt_id} ended twice: {attempt}"
            assert attempt["command"] == command.name
            attempt.update(
                status=outcome.status,
                exit_code=outcome.exit_code,
                signal=outcome.signal,
                failure_class=outcome.failure_class,
                log_path=log_path,
                ended_at=time.time(),
            )
        return outcome.failure_class or outcome.status

    def previous_jobs(self, item: WorkItem) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(a) for a in self.attempts if a["task_key"] == item.task.key and a.get("job_id")]

    def cancelled(self) -> set[str]:
        """The task keys a test cancels (mlrunner cancel): their jobs get scancel'ed."""
        with self.lock:
            return set(self.cancels)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    # views for the assertions
    def of(self, task: str, command: str | None = None) -> list[dict[str, Any]]:
        return [
            a for a in self.attempts if a["task"] == task and (command is None or a["command"] == command)
        ]


def make_items(tmp_path: Path, params: str, output: str = "out dir") -> list[WorkItem]:
    spec = parse_spec(params)
    tasks = plan(spec, output=str(tmp_path / output), time="20240101.000000").tasks
    return [
        WorkItem(task=t, commands=t.commands, position=i + 1, total=len(tasks)) for i, t in enumerate(tasks)
    ]


def options(tmp_path: Path, output: str = "out dir", **extra: Any) -> RunOptions:
    extra.setdefault("run_id", 1)
    return RunOptions(output=str(tmp_path / output), cwd=str(tmp_path), grace=2.0, extra=extra)


def execute(
    backend: SlurmBackend,
    items: Sequence[WorkItem],
    rec: RecordingRecorder,
    opts: RunOptions,
    timeout: float = 60,
) -> None:
    """backend.execute in a thread, so a hang fails the test instead of blocking the session."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            backend.execute(items, rec, opts)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        rec.stop.set()
        rec.kill_now.set()
        thread.join(15)
        pytest.fail(f"execute did not return within {timeout}s; attempts: {rec.attempts}")
    if errors:
        raise errors[0]


FIVE = """
template:
  train: >-
    echo "train {lr} gpus=$CUDA_VISIBLE_DEVICES job=$SLURM_ARRAY_JOB_ID/$SLURM_ARRAY_TASK_ID";
    test {lr} != 3 || exit 7
  eval: 'echo "eval {lr}"'
---
lr: [1, 2, 3, 4, 5]
"""


def test_five_task_sweep_one_failing_with_exit_7(slurm_cluster: None, tmp_path: Path) -> None:
    items = make_items(tmp_path, FIVE)
    rec = RecordingRecorder()
    backend = SlurmBackend()
    execute(backend, items, rec, options(tmp_path))

    assert len(backend.submitted) == 5 and len({j.split("_")[0] for j in backend.submitted}) == 1  # one array
    by_status: dict[str, list[str]] = {}
    for a in rec.attempts:
        by_status.setdefault(a["status"], []).append(f"{a['task']}/{a['command']}")
    assert sorted(by_status) == ["failed", "finished"]
    assert sorted(by_status["failed"]) == ["Lr_3/train"]
    assert len(by_status["finished"]) == 8  # 4 tasks x (train, eval); Lr_3 stops at train
    failed = rec.of("Lr_3", "train")[0]
    assert failed["exit_code"] == 7 and failed["signal"] is None
    assert rec.of("Lr_3", "eval") == []
    for a in rec.attempts:
        assert a["job_id"] in backend.submitted and a["node"]
        assert a["gpus"] and all(0 <= g < 4 for g in a["gpus"])
        if a["command"] == "train":  # the log is in the experiment dir and shows Slurm's GPU and job
            log = Path(a["log_path"])
            assert log.parent == Path(tmp_path, "out dir", a["task"])
            text = log.read_text()
            assert f"gpus={a['resource']} " in text
            assert f"job={a['job_id'].replace('_', '/')}\n" in text
    assert sorted(rec.released) == sorted(i.task.key for i in items)
    assert Registry(tmp_path / "out dir" / ".mlrunner" / "slurm" / "jobs").active() == []


def test_scancel_is_recorded_as_cancelled(slurm_cluster: None, tmp_path: Path) -> None:
    # each task takes all 4 GPUs: one runs, the other waits in the queue; both get scancel-ed
    items = make_items(tmp_path, "template:\n  train: sleep 60\n  eval: echo never\n---\nlr: [1, 2]\n")
    backend = SlurmBackend()

    def cancel(attempt: dict[str, Any]) -> None:
        if attempt["attempt_id"] == 1:  # the running one started: cancel both
            assert len(squeue_ids(backend.submitted)) == 2
            subprocess.run(["scancel", *backend.submitted], check=True)

    rec = RecordingRecorder(on_start=cancel)
    execute(backend, items, rec, options(tmp_path, slurm={"gpus_per_task": 4}))
    assert sorted((a["command"], a["status"], a["exit_code"]) for a in rec.attempts) == [
        ("train", "cancelled", None),  # the queued one: cancelled before it ever started
        ("train", "cancelled", None),
    ]
    assert sorted(a["job_id"] for a in rec.attempts) == sorted(backend.submitted)


def test_mlrunner_cancel_scancels_that_tasks_job_only(slurm_cluster: None, tmp_path: Path) -> None:
    items = make_items(tmp_path, "template:\n  train: '[ {lr} = 1 ] && sleep 60 || true'\n---\nlr: [1, 2]\n")
    rec = RecordingRecorder()
    first = next(i for i in items if i.task.name == "Lr_1")
    rec.on_start = lambda attempt: rec.cancels.add(first.task.key) if attempt["task"] == "Lr_1" else None
    execute(SlurmBackend(), items, rec, options(tmp_path))
    assert sorted((a["task"], a["status"]) for a in rec.attempts) == [
        ("Lr_1", "cancelled"),
        ("Lr_2", "finished"),
    ]


def test_job_dying_without_a_result_is_lost(slurm_cluster: None, tmp_path: Path) -> None:
    # the command kills the job's own mlrunner process (its parent): no result is ever written
    items = make_items(tmp_path, "template:\n  train: kill -9 $PPID; sleep 30\n---\nlr: [1]\n")
    rec = RecordingRecorder()
    backend = SlurmBackend()
    execute(backend, items, rec, options(tmp_path))
    assert [(a["command"], a["status"], a["exit_code"]) for a in rec.attempts] == [("train", "lost", None)]
    assert squeue_ids(backend.submitted) == []


def test_stop_cancels_the_jobs_and_records_interrupted(slurm_cluster: None, tmp_path: Path) -> None:
    items = make_items(tmp_path, "template:\n  train: sleep 60\n---\nlr: [1, 2]\n")
    rec = RecordingRecorder()
    rec.on_start = lambda attempt: rec.stop.set()
    backend = SlurmBackend()
    execute(backend, items, rec, options(tmp_path))
    assert {a["status"] for a in rec.attempts} == {"interrupted"}
    assert len(rec.attempts) == 2  # the one running and the one that never started
    assert squeue_ids(backend.submitted) == []


@pytest.mark.parametrize("while_away", ["finished", "still running"])
def test_detach_then_reattach_records_without_resubmitting(
    slurm_cluster: None, tmp_path: Path, while_away: str
) -> None:
    gate = tmp_path / "gate"
    params = (
        f"template:\n  train: 'while [ ! -e {gate} ]; do sleep 0.1; done'\n"
        "  eval: echo done {lr}\n---\nlr: [1, 2]\n"
    )
    first = RecordingRecorder()
    first.on_start = lambda attempt: first.stop.set()
    detached = SlurmBackend()
    execute(detached, make_items(tmp_path, params), first, options(tmp_path, detach=True))
    assert first.attempts and {a["status"] for a in first.attempts} == {"running"}
    assert len(squeue_ids(detached.submitted)) == 2  # left running

    history = [dict(a) for a in first.attempts]
    if while_away == "finished":
        gate.touch()
        deadline = time.monotonic() + 30
        while squeue_ids(detached.submitted):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        for a in history:  # what the scheduler's orphan sweep does to a dead runner's attempts
            a.update(status="lost", ended_at=time.time())
    else:
        threading.Timer(1.0, gate.touch).start()  # finishes only after the reattach

    second = RecordingRecorder(history=history)
    backend = SlurmBackend()
    execute(backend, make_items(tmp_path, params), second, options(tmp_path))
    assert backend.submitted == []  # reattached: nothing submitted again
    new = second.attempts[len(history) :]
    finals = {(a["task"], a["command"]): a["status"] for a in second.attempts}
    assert finals == {
        ("Lr_1", "train"): "finished",
        ("Lr_1", "eval"): "finished",
        ("Lr_2", "train"): "finished",
        ("Lr_2", "eval"): "finished",
    }
    assert {a["job_id"] for a in second.attempts} == set(detached.submitted)
    if while_away == "finished":
        assert len(new) == 4  # each outcome once, beside the sweep's 'lost'
    else:  # the detached runner's open attempts were ended, not duplicated
        assert len(second.attempts) == 4
        assert all(a["ended_at"] is not None for a in second.attempts)


def test_reattach_never_records_an_outcome_twice(slurm_cluster: None, tmp_path: Path) -> None:
    """A runner recorded a job's outcomes, then died before marking the submission done."""
    flag = tmp_path / "fixed"
    params = f"template:\n  train: echo train\n  eval: test -e {flag}\n---\nlr: [1]\n"
    rec = RecordingRecorder()
    execute(SlurmBackend(), make_items(tmp_path, params), rec, options(tmp_path))
    assert [(a["command"], a["status"]) for a in rec.attempts] == [("train", "finished"), ("eval", "failed")]
    jobs = tmp_path / "out dir" / ".mlrunner" / "slurm" / "jobs"
    for done in (jobs / "done").glob("*.json"):  # as if the runner died before this move
        done.rename(jobs / done.name)

    flag.touch()
    resumed = RecordingRecorder(history=rec.attempts)
    backend = SlurmBackend()
    (item,) = make_items(tmp_path, params)
    item.commands = item.commands[1:]  # what the ledger says is left: eval
    execute(backend, [item], resumed, options(tmp_path))
    assert resumed.attempts[:2] == rec.attempts  # nothing recorded again
    assert [(a["command"], a["status"]) for a in resumed.attempts[2:]] == [("eval", "finished")]
    assert len(backend.submitted) == 1
    assert Registry(jobs).active() == []


def test_resume_after_a_fix_submits_exactly_the_failed_task(slurm_cluster: None, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    params = f"template:\n  train: test {{lr}} != 2 || test -e {flag}\n---\nlr: [1, 2, 3]\n"
    items = make_items(tmp_path, params)
    rec = RecordingRecorder()
    execute(SlurmBackend(), items, rec, options(tmp_path))
    assert sorted((a["task"], a["status"]) for a in rec.attempts) == [
        ("Lr_1", "finished"),
        ("Lr_2", "failed"),
        ("Lr_3", "finished"),
    ]
    flag.touch()
    again = [i for i in make_items(tmp_path, params) if i.task.name == "Lr_2"]  # what the ledger says is left
    resumed = RecordingRecorder(history=rec.attempts)
    backend = SlurmBackend()
    execute(backend, again, resumed, options(tmp_path))
    assert len(backend.submitted) == 1
    assert [(a["task"], a["status"]) for a in resumed.attempts[3:]] == [("Lr_2", "finished")]


def test_retries_resubmit_from_the_failing_command(slurm_cluster: None, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    params = (
        "template:\n  prep: echo prep\n"
        f"  train: 'echo x >> {counter}; test $(wc -l < {counter}) -ge 3'\n---\nlr: [1]\n"
    )
    rec = RecordingRecorder()
    opts = options(tmp_path)
    opts.retries = 2
    backend = SlurmBackend()
    execute(backend, make_items(tmp_path, params), rec, opts)
    assert [(a["command"], a["status"]) for a in rec.attempts] == [
        ("prep", "finished"),
        ("train", "failed"),
        ("train", "failed"),
        ("train", "finished"),
    ]
    assert len(backend.submitted) == 3
    logs = [a["log_path"] for a in rec.attempts if a["command"] == "train"]
    assert len(set(logs)) == 3  # each attempt keeps its own log


def test_hostile_names_and_commands(slurm_cluster: None, tmp_path: Path) -> None:
    params = """
template:
  train: echo {msg} "$(echo sub)" > "it's here.txt"; cat "it's here.txt"
---
msg: ["a b $(touch /tmp/PWNED-mlrunner) 'q' \\"dq\\" ../x"]
"""
    items = make_items(tmp_path, params, output="out 'dir' $(x)")
    rec = RecordingRecorder()
    execute(SlurmBackend(), items, rec, options(tmp_path, output="out 'dir' $(x)"))
    assert [a["status"] for a in rec.attempts] == ["finished"]
    text = Path(rec.attempts[0]["log_path"]).read_text()
    assert "a b $(touch /tmp/PWNED-mlrunner) 'q' \"dq\" ../x sub" in text
    assert not Path("/tmp/PWNED-mlrunner").exists()
    assert Path(tmp_path, "it's here.txt").exists()  # commands run in the run's cwd


def test_sbatch_refusal_is_a_backend_error(slurm_cluster: None, tmp_path: Path) -> None:
    rec = RecordingRecorder()
    opts = options(tmp_path, slurm={"partition": "no-such-partition"})
    with pytest.raises(BackendError, match="no-such-partition|invalid partition"):
        execute(SlurmBackend(), make_items(tmp_path, "template:\n  t: 'true'\n---\nx: [1]\n"), rec, opts)
    assert rec.attempts == []
    assert Registry(tmp_path / "out dir" / ".mlrunner" / "slurm" / "jobs").active() == []


def test_result_files_are_left_in_the_experiment_dir(slurm_cluster: None, tmp_path: Path) -> None:
    items = make_items(tmp_path, "template:\n  a: 'true'\n  b: exit 3\n---\nx: [1]\n")
    rec = RecordingRecorder()
    backend = SlurmBackend()
    execute(backend, items, rec, options(tmp_path, slurm={"gpus_per_task": 2, "time": 5}))
    task: Task = items[0].task
    found = sorted(os.listdir(slurm_job.results_dir(task.output_dir)))
    assert len(found) == 2 and all(n.endswith(".json") for n in found)
    records = [
        r
        for t in {n.split(".")[0] for n in found}
        for r in slurm_job.read_results(slurm_job.results_dir(task.output_dir), t).values()
    ]
    assert sorted((r["command"], r["status"], r["exit_code"]) for r in records) == [
        ("a", "finished", 0),
        ("b", "failed", 3),
    ]
    assert all(len(r["gpus"]) == 2 for r in records)

"""The Slurm backend's parts that need no cluster: option mapping, state mapping, result
files, a job's results reported to a recorder, and the in-job runner (run for real in a
subprocess with Slurm's variables set)."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from mlrunner import procs
from mlrunner.backends.base import JobRef, Outcome, Placement, RunOptions, WorkItem
from mlrunner.backends.slurm import (
    JobState,
    Reporter,
    SlurmBackend,
    Timing,
    Track,
    command_status,
    expand_job_ids,
    gpus_override,
    submitit_parameters,
)
from mlrunner.backends.slurm import job as slurm_job
from mlrunner.errors import BackendError, SpecError
from mlrunner.plan import plan
from mlrunner.spec import parse_spec
from mlrunner.status import AttemptStatus, FailureClass, RunStatus, TaskStatus

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------- options
def test_parameters_map_to_submitit() -> None:
    got = submitit_parameters(
        {
            "partition": "gpu",
            "time": 90,
            "gpus_per_task": 2,
            "cpus_per_task": 8,
            "mem": "32GB",
            "array_parallelism": 16,
            "account": "proj",
            "qos": "high",
            "constraint": "a100",
            "additional_parameters": {"mail_type": "END", "exclusive": True, "hint": False},
            "_ask_on_interrupt": True,  # the CLI's own flag rides along and is ignored
        }
    )
    assert got == {
        "partition": "gpu",
        "time": 90,
        "cpus_per_task": 8,
        "mem": "32GB",
        "array_parallelism": 16,
        "account": "proj",
        "qos": "high",
        "constraint": "a100",
        "additional_parameters": {"mail-type": "END", "exclusive": True},
    }
    assert gpus_override({"gpus_per_task": 2}) == 2 and gpus_override({"gpus_per_task": 0}) == 0
    assert gpus_override({}) is None


def test_time_defaults_to_the_partition_not_to_submitits_five_minutes() -> None:
    assert submitit_parameters({})["time"] is None
    assert submitit_parameters({"time": 0.5})["time"] == 1  # whole minutes, rounded up
    assert submitit_parameters({"time": "120"})["time"] == 120
    assert submitit_parameters({"time": "1-12:00:00"})["time"] == "1-12:00:00"
    assert submitit_parameters({"mem": 16000})["mem"] == "16000"


@pytest.mark.parametrize(
    ("slurm", "pattern"),
    [
        ({"partion": "gpu"}, r"unknown slurm option 'partion'[\s\S]*did you mean 'partition'"),
        ({"gpus": 2}, r"valid keys: partition, time, gpus_per_task"),
        ({"time": -5}, r"slurm.time.*> 0"),
        ({"time": "tomorrow"}, r"cannot read 'tomorrow' as a time limit"),
        ({"time": True}, r"slurm.time"),
        ({"cpus_per_task": 0}, r"slurm.cpus_per_task.*>= 1"),
        ({"cpus_per_task": True}, r"slurm.cpus_per_task"),
        ({"gpus_per_task": -1}, r"slurm.gpus_per_task.*>= 0"),
        ({"mem": "lots"}, r"cannot read 'lots' as memory"),
        ({"partition": ""}, r"slurm.partition.*non-empty"),
        ({"partition": ["a", "b"]}, r"slurm.partition"),
        ({"additional_parameters": "mail-type=END"}, r"mapping of sbatch options"),
        ({"additional_parameters": {"array": "0-3"}}, r"'array' is set by mlrunner"),
        ({"additional_parameters": {"--output": "x"}}, r"'output' is set by mlrunner"),
        ({"additional_parameters": {"a b; rm -rf /": 1}}, r"not an sbatch option name"),
        ({"additional_parameters": {"gres": ["gpu:1"]}}, r"string, number or true"),
    ],
)
def test_bad_options_are_clear_errors(slurm: dict[str, Any], pattern: str) -> None:
    if "gpus_per_task" in slurm:
        with pytest.raises(SpecError, match=pattern):
            gpus_override(slurm)
        return
    with pytest.raises(SpecError, match=pattern):
        submitit_parameters(slurm)


def test_execute_rejects_a_bad_option_before_touching_anything(tmp_path: Path) -> None:
    opts = RunOptions(output=str(tmp_path / "out"), cwd=str(tmp_path), extra={"slurm": {"partitoin": "x"}})
    with pytest.raises(SpecError, match="did you mean 'partition'"):
        SlurmBackend().execute([], _NoRecorder(), opts)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


class _NoRecorder:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the recorder was used: {name}")


def test_missing_submitit_names_the_extra_to_install(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["submitit"] = None  # as if it were not installed
        from mlrunner.backends.base import RunOptions
        from mlrunner.backends.slurm import SlurmBackend
        from mlrunner.errors import BackendError
        try:
            SlurmBackend().execute([], None, RunOptions(output={str(tmp_path)!r}, cwd={str(tmp_path)!r}))
        except BackendError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "needs the 'submitit' package" in out
    assert "pip install 'mlrunner[slurm]'" in out


def test_no_slurm_client_on_path_is_a_backend_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, squeue, scancel, srun here
    with pytest.raises(BackendError, match="no Slurm client here: sbatch, squeue, scancel, srun") as info:
        SlurmBackend().execute([], _NoRecorder(), RunOptions(output=str(tmp_path), cwd=str(tmp_path)))  # type: ignore[arg-type]
    assert "start-local-slurm.sh" in str(info.value)


SLURM_PKG = ROOT / "mlrunner" / "backends" / "slurm"
SLURM_MODULES = sorted(p.stem for p in SLURM_PKG.glob("*.py") if p.stem != "__init__")


def test_importing_the_backend_does_not_import_submitit() -> None:
    assert {"backend", "cluster", "job", "registry", "session", "submit", "track"} <= set(SLURM_MODULES)
    imports = ", ".join(f"mlrunner.backends.slurm.{m}" for m in SLURM_MODULES)
    code = f"import sys, mlrunner.backends.slurm, {imports}\nprint('submitit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _names_not_values(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings, dict keys or subscripts (field names)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
        elif isinstance(node, ast.Dict):
            skip.update(id(k) for k in node.keys if k is not None)
        elif isinstance(node, ast.Subscript):
            skip.add(id(node.slice))
    return skip


def test_no_status_is_spelt_as_a_string_in_the_backend() -> None:
    """Statuses come from mlrunner.status; Slurm's own state names stay text."""
    statuses = {str(s) for enum in (AttemptStatus, TaskStatus, RunStatus, FailureClass) for s in enum}
    found = []
    for path in sorted(SLURM_PKG.glob("*.py")):
        tree = ast.parse(path.read_text())
        skip = _names_not_values(tree)
        found += [
            f"{path.name}:{node.lineno}: {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in statuses and id(node) not in skip
        ]
    assert not found, "\n".join(found)


# ---------------------------------------------------------------------- states
def test_expand_job_ids() -> None:
    assert expand_job_ids("123") == ["123"]
    assert expand_job_ids("123_4") == ["123_4"]
    assert expand_job_ids("123_[1-3,7%2]") == ["123_1", "123_2", "123_3", "123_7"]
    assert expand_job_ids("55_[0]") == ["55_0"]


@pytest.mark.parametrize(
    ("result", "sig", "state", "by_us", "expected"),
    [
        (None, None, "CANCELLED", False, "cancelled"),  # cancelled while pending
        ("running", None, "CANCELLED", False, "cancelled"),
        ("interrupted", 15, "CANCELLED", False, "cancelled"),
        ("interrupted", 15, "TIMEOUT", False, "timeout"),
        ("interrupted", 15, "PREEMPTED", False, "preempted"),
        ("running", None, "NODE_FAIL", False, "node_fail"),
        ("failed", 9, "OUT_OF_MEMORY", False, "oom"),
        (None, None, "OUT_OF_MEMORY", False, "oom"),
        ("failed", 9, "FAILED", False, "failed"),  # a signal from elsewhere: plain failure
        ("failed", None, "FAILED", False, "failed"),
        ("running", None, "FAILED", False, "lost"),  # the job died without a result
        ("running", None, "COMPLETED", False, "lost"),
        (None, None, "GONE", False, "lost"),
        ("interrupted", 15, "CANCELLED", True, "interrupted"),  # we cancelled it (Ctrl-C)
        (None, None, "CANCELLED", True, "interrupted"),
        ("interrupted", 15, "TIMEOUT", True, "timeout"),  # the time limit won the race
    ],
)
def test_job_states_map_to_ledger_statuses(
    result: str | None, sig: int | None, state: str, by_us: bool, expected: str
) -> None:
    got = command_status(result, sig, JobState(state), by_us)
    assert got is AttemptStatus(expected)


def test_terminal_states() -> None:
    for state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY"):
        assert JobState(state).terminal
    for state in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED", "SUSPENDED", "CONFIGURING"):
        assert not JobState(state).terminal


# ---------------------------------------------------------------------- results -> recorder
class _Calls:
    """A recorder that keeps the calls the reporter makes."""

    def __init__(self) -> None:
        self.started: list[tuple[str, Placement, Path]] = []
        self.ended: list[tuple[int, str, Outcome, Path]] = []

    def command_started(self, item: WorkItem, command: Any, placement: Placement, log_path: Path) -> int:
        self.started.append((command.name, placement, log_path))
        return len(self.started)

    def command_ended(
        self,
        attempt_id: int,
        item: WorkItem,
        command: Any,
        outcome: Outcome,
        log_path: Path,
        *,
        last: bool = False,
    ) -> AttemptStatus | FailureClass:
        assert not last  # the backend releases its claims itself
        self.ended.append((attempt_id, command.name, outcome, log_path))
        return outcome.failure_class or outcome.status


def _track(tmp_path: Path, state: str, records: list[dict[str, Any]]) -> tuple[Track, _Calls, Reporter]:
    """A submitted track of a two-command task whose job wrote ``records`` and is now in ``state``."""
    spec = parse_spec("template:\n  prep: 'true'\n  train: 'true'\n---\nx: [1]\n")
    (task,) = plan(spec, output=str(tmp_path / "out"), time="20240101.000000").tasks
    item = WorkItem(task=task, commands=task.commands, position=1, total=1)
    results = slurm_job.results_dir(tmp_path / "exp")
    results.mkdir(parents=True)
    logs = [str(tmp_path / "exp" / f"log.{c.name}") for c in task.commands]
    entry = {
        "token": "tok-0",
        "job_id": "5_0",
        "results_dir": str(results),
        "slurm_log": None,
        "commands": [
            {"name": c.name, "log_path": log, "log": log} for c, log in zip(task.commands, logs, strict=True)
        ],
    }
    for index, record in enumerate(records):
        base = {"job_id": "5_0", "node": "n1", "resource": "0", "gpus": [0], "log_path": logs[index]}
        slurm_job.atomic_write_json(slurm_job.result_path(results, "tok-0", 0, index), {**base, **record})
    t = Track(item, entry, list(task.commands), state=JobState(state, "n1"))
    t.terminal_since = time.monotonic() - 5.0 if t.state is not None and t.state.terminal else None
    calls = _Calls()
    return t, calls, Reporter(calls, Timing(result_settle=0.0))  # type: ignore[arg-type]


def test_out_of_memory_is_oom_with_the_host_oom_failure_class(tmp_path: Path) -> None:
    t, calls, reporter = _track(
        tmp_path,
        "OUT_OF_MEMORY",
        [
            {"status": "finished", "exit_code": 0, "signal": None},
            {"status": "failed", "exit_code": None, "signal": 9},  # the OOM killer's SIGKILL
        ],
    )
    reporter.advance(t)
    assert t.done and t.outcome is AttemptStatus.OOM and t.stopped_at == 1
    placement = Placement(resource="0", gpus=(0,), job=JobRef("5_0", "n1"))
    assert [(name, p) for name, p, _ in calls.started] == [("prep", placement), ("train", placement)]
    assert [(a, name, o) for a, name, o, _ in calls.ended] == [
        (1, "prep", Outcome(AttemptStatus.FINISHED, 0, None)),
        (2, "train", Outcome(AttemptStatus.OOM, None, 9, FailureClass.HOST_OOM)),
    ]
    assert calls.ended[1][3] == Path(tmp_path, "exp", "log.train")


def test_out_of_memory_without_a_result_is_still_host_oom(tmp_path: Path) -> None:
    t, calls, reporter = _track(tmp_path, "OUT_OF_MEMORY", [])
    reporter.advance(t)
    assert [o for _, _, o, _ in calls.ended] == [
        Outcome(AttemptStatus.OOM, failure_class=FailureClass.HOST_OOM)
    ]
    assert calls.started[0][1] == Placement(resource="-", job=JobRef("5_0", "n1"))  # never said where


def test_other_ends_leave_the_failure_class_to_the_log(tmp_path: Path) -> None:
    t, calls, reporter = _track(
        tmp_path, "TIMEOUT", [{"status": "interrupted", "exit_code": None, "signal": 15}]
    )
    reporter.advance(t)
    assert [o for _, _, o, _ in calls.ended] == [Outcome(AttemptStatus.TIMEOUT, None, 15, None)]
    t, calls, reporter = _track(
        tmp_path / "b", "FAILED", [{"status": "failed", "exit_code": 3, "signal": None}]
    )
    reporter.advance(t)
    assert [o for _, _, o, _ in calls.ended] == [Outcome(AttemptStatus.FAILED, 3, None, None)]
    assert t.outcome is AttemptStatus.FAILED


def test_a_running_job_is_started_not_ended(tmp_path: Path) -> None:
    t, calls, reporter = _track(
        tmp_path, "RUNNING", [{"status": "running", "exit_code": None, "signal": None}]
    )
    reporter.advance(t)
    reporter.advance(t)  # polled again: no second start
    assert [name for name, _, _ in calls.started] == ["prep"] and calls.ended == []
    assert not t.done and t.open == {0: (1, 0)}


# ---------------------------------------------------------------------- result files
def test_result_files_latest_restart_wins_and_junk_is_ignored(tmp_path: Path) -> None:
    d = tmp_path / slurm_job.RESULTS_DIR
    d.mkdir()
    slurm_job.atomic_write_json(slurm_job.result_path(d, "tok-0", 0, 0), {"status": "interrupted"})
    slurm_job.atomic_write_json(slurm_job.result_path(d, "tok-0", 1, 0), {"status": "finished"})
    slurm_job.atomic_write_json(slurm_job.result_path(d, "tok-0", 1, 1), {"status": "running"})
    slurm_job.atomic_write_json(slurm_job.result_path(d, "tok-01", 0, 0), {"status": "failed"})  # other token
    (d / "tok-0.r0.c2.json").write_text('{"status": "fini')  # torn (never written by us: no temp file)
    (d / ".tok-0.r0.c3.json.77.tmp").write_text("{}")
    got = slurm_job.read_results(d, "tok-0")
    assert sorted(got) == [0, 1]
    assert got[0]["status"] == "finished" and got[0]["restart"] == 1
    assert [e["status"] for e in got[0]["earlier"]] == ["interrupted"]
    assert got[1]["status"] == "running"
    assert slurm_job.read_results(tmp_path / "missing", "tok-0") == {}


def test_gpus_from_env_prefers_the_nodes_own_indices() -> None:
    assert slurm_job.gpus_from_env({"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_GPUS": "2,3"}) == (
        "0,1",
        [2, 3],
    )
    assert slurm_job.gpus_from_env({"CUDA_VISIBLE_DEVICES": "1"}) == ("1", [1])
    assert slurm_job.gpus_from_env({"CUDA_VISIBLE_DEVICES": "GPU-5f2a"}) == ("GPU-5f2a", None)
    assert slurm_job.gpus_from_env({}) == ("", None)
    assert (
        slurm_job.job_id_from_env(
            {"SLURM_JOB_ID": "9", "SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "2"}
        )
        == "7_2"
    )
    assert slurm_job.job_id_from_env({"SLURM_JOB_ID": "9"}) == "9"


# ---------------------------------------------------------------------- the in-job runner
def _job(
    tmp_path: Path, commands: list[tuple[str, str]], env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    exp = tmp_path / "exp dir"
    exp.mkdir(exist_ok=True)
    payload = {
        "token": "abc-0",
        "cwd": str(tmp_path),
        "results_dir": str(exp / slurm_job.RESULTS_DIR),
        "grace": 2.0,
        "commands": [{"name": n, "text": t, "log_path": str(exp / f"log.{n}")} for n, t in commands],
    }
    code = (
        "import json, sys\nfrom mlrunner.backends.slurm.job import run_task\n"
        "print(json.dumps(run_task(json.loads(sys.argv[1]))))"
    )
    full_env = dict(os.environ)
    full_env.update(
        {
            "SLURM_JOB_ID": "41",
            "SLURM_ARRAY_JOB_ID": "40",
            "SLURM_ARRAY_TASK_ID": "1",
            "SLURMD_NODENAME": "node-7",
            "CUDA_VISIBLE_DEVICES": "2,3",
            "SUBMITIT_FOLDER": "/nowhere",
        }
    )
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(payload)], env=full_env, stdout=subprocess.PIPE, text=True
    )


def _results(tmp_path: Path) -> dict[int, dict[str, Any]]:
    return slurm_job.read_results(tmp_path / "exp dir" / slurm_job.RESULTS_DIR, "abc-0")


def test_job_runs_commands_in_order_and_a_failure_stops_the_task(tmp_path: Path) -> None:
    proc = _job(
        tmp_path,
        [
            ("prep", 'echo "gpus=$CUDA_VISIBLE_DEVICES submitit=${SUBMITIT_FOLDER:-unset} pwd=$PWD"'),
            ("train", "echo training; exit 7"),
            ("eval", "echo never > never.txt"),
        ],
    )
    assert proc.wait(30) == 7  # sacct shows FAILED with the command's exit code
    got = _results(tmp_path)
    assert [(got[i]["command"], got[i]["status"], got[i]["exit_code"]) for i in sorted(got)] == [
        ("prep", "finished", 0),
        ("train", "failed", 7),
    ]
    prep = got[0]
    assert prep["job_id"] == "40_1" and prep["node"] == "node-7"
    assert prep["resource"] == "2,3" and prep["gpus"] == [2, 3]
    assert prep["started_at"] <= prep["ended_at"]
    log = (tmp_path / "exp dir" / "log.prep").read_text()
    assert log == f"gpus=2,3 submitit=unset pwd={tmp_path}\n"
    assert (tmp_path / "exp dir" / "log.train").read_text() == "training\n"
    assert not (tmp_path / "never.txt").exists()


def test_job_success_returns_a_summary(tmp_path: Path) -> None:
    proc = _job(tmp_path, [("a", "true"), ("b", "echo $((6*7))")])
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert json.loads(out) == {"token": "abc-0", "job_id": "40_1", "finished": ["a", "b"]}
    assert (tmp_path / "exp dir" / "log.b").read_text() == "42\n"


def test_requeued_job_skips_what_it_finished_before(tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    commands = [("a", f"echo a >> '{marker}'"), ("b", f"echo b >> '{marker}'; test -e '{tmp_path}/go'")]
    assert _job(tmp_path, commands).wait(30) == 1
    (tmp_path / "go").touch()
    assert _job(tmp_path, commands, {"SLURM_RESTART_COUNT": "1"}).wait(30) == 0
    assert marker.read_text() == "a\nb\nb\n"
    got = _results(tmp_path)
    assert got[1]["status"] == "finished" and got[1]["restart"] == 1
    assert [e["status"] for e in got[1]["earlier"]] == ["failed"]


def test_sigterm_to_the_job_stops_the_whole_command_tree(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    # a grandchild that ignores SIGTERM: SIGKILL after the grace period must reach it
    proc = _job(
        tmp_path,
        [("train", f'bash -c \'trap "" TERM; echo $$ > "{pidfile}"; while :; do sleep 0.1; done\' & wait')],
    )
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    assert _results(tmp_path)[0]["status"] == "running"
    proc.send_signal(signal.SIGTERM)  # what scancel / the time limit does
    assert proc.wait(30) == 128 + signal.SIGTERM
    record = _results(tmp_path)[0]
    assert record["status"] == "interrupted"
    assert record["signal"] == signal.SIGTERM or record["exit_code"] == 128 + signal.SIGTERM
    deadline = time.monotonic() + 5
    while procs.proc_start_time(grandchild) is not None:
        assert time.monotonic() < deadline, "the grandchild survived"
        time.sleep(0.05)


def test_job_that_cannot_start_a_command_records_why(tmp_path: Path) -> None:
    exp = tmp_path / "exp dir"
    exp.mkdir()
    payload_log = exp / "gone" / "log.train"  # its directory does not exist
    payload = {
        "token": "abc-1",
        "cwd": str(tmp_path),
        "results_dir": str(exp / slurm_job.RESULTS_DIR),
        "commands": [{"name": "train", "text": "true", "log_path": str(payload_log)}],
    }
    code = (
        "import json, sys\nfrom mlrunner.backends.slurm.job import run_task as r\nr(json.loads(sys.argv[1]))"
    )
    assert subprocess.run([sys.executable, "-c", code, json.dumps(payload)], cwd=ROOT).returncode == 127
    record = slurm_job.read_results(exp / slurm_job.RESULTS_DIR, "abc-1")[0]
    assert record["status"] == "failed" and record["exit_code"] == 127
    assert "cannot start" in record["error"]

"""What runs inside a Slurm job, and the result files it leaves behind.

Imported on the compute node by the pickled call submitit makes, so it uses only the
standard library, :mod:`mlrunner.procs`, :mod:`mlrunner.status` and
:mod:`mlrunner.backends.base` (the commands' MLRUNNER_* environment). A job runs one task's
commands in order, each through bash in its own session with its whole output in the
experiment's log file (as the local backend does) and ``CUDA_VISIBLE_DEVICES`` as Slurm
set it. A failing command stops the task.

Compute nodes never touch the SQLite ledger. For every command the job writes one small
JSON *result file* into ``<exp>/.mlrunner-results/``, atomically (temp file, fsync,
``os.replace``): first with status ``running`` when the command starts, then with its end.
The submitting ``run`` process polls these files and writes the ledger.

Result file name: ``<token>.r<restart>.c<index>.json`` where ``token`` names one
submission of one task, ``restart`` is Slurm's ``SLURM_RESTART_COUNT`` (a requeued job
runs again under the same job id) and ``index`` is the command's position in the job.
Statuses a job writes: ``running``, ``finished``, ``failed`` (exit code or signal kept),
``interrupted`` (the job was told to stop: SIGTERM from ``scancel``, the time limit or
preemption; the submitter names the reason from Slurm accounting).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlrunner import procs
from mlrunner.backends.base import attempt_env
from mlrunner.status import AttemptStatus

RESULTS_DIR = ".mlrunner-results"
RESULT_VERSION = 1
_NAME = re.compile(r"^(?P<token>[A-Za-z0-9_-]+)\.r(?P<restart>\d+)\.c(?P<index>\d+)\.json$")


# ---------------------------------------------------------------------- result files
def results_dir(output_dir: str | os.PathLike[str]) -> Path:
    return Path(output_dir, RESULTS_DIR)


def result_path(results: str | os.PathLike[str], token: str, restart: int, index: int) -> Path:
    return Path(results, f"{token}.r{restart}.c{index}.json")


def atomic_write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON so that a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_results(results: str | os.PathLike[str], token: str) -> dict[int, dict[str, Any]]:
    """The latest record per command index of submission ``token`` (highest restart wins).

    Each record carries ``restart``; records of earlier restarts of a requeued job are
    returned under ``earlier`` (a list) so the reader can tell what a requeue cut short.
    Unreadable or foreign files are skipped: a half-copied file is never trusted.
    """
    out: dict[int, dict[str, Any]] = {}
    try:
        names = os.listdir(results)
    except OSError:
        return out
    prefix = token + "."
    found: list[tuple[int, int, str]] = []
    for name in names:
        if not name.startswith(prefix):
            continue
        m = _NAME.match(name)
        if m is None or m.group("token") != token:
            continue
        found.append((int(m.group("index")), int(m.group("restart")), name))
    for index, restart, name in sorted(found):
        try:
            with open(Path(results, name), encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        record["restart"] = restart
        previous = out.get(index)
        if previous is not None:
            record["earlier"] = [*previous.pop("earlier", []), previous]
        out[index] = record
    return out


# ---------------------------------------------------------------------- job identity
def job_id_from_env(env: Mapping[str, str]) -> str | None:
    """``<array>_<index>`` for an array element, else the plain job id (as squeue shows it)."""
    array, index = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return env.get("SLURM_JOB_ID")


def gpus_from_env(env: Mapping[str, str]) -> tuple[str, list[int] | None]:
    """(``CUDA_VISIBLE_DEVICES`` as the command sees it, the node's GPU indices or None).

    Slurm renumbers ``CUDA_VISIBLE_DEVICES`` from 0 when devices are cgroup-constrained;
    ``SLURM_JOB_GPUS`` keeps the node's own indices, so it is preferred for the ledger.
    """
    visible = env.get("CUDA_VISIBLE_DEVICES", "")
    for source in (env.get("SLURM_STEP_GPUS"), env.get("SLURM_JOB_GPUS"), visible):
        if source:
            parts = [p.strip() for p in source.split(",")]
            if all(p.isdigit() for p in parts):
                return visible, [int(p) for p in parts]
    return visible, None


# ---------------------------------------------------------------------- the job
class _Stop:
    """SIGTERM/SIGINT inside the job: TERM the live command, KILL it after the grace period."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.since: float | None = None
        self.proc_pid: int | None = None
        self.known: list[tuple[int, int]] = []  # descendants seen, (pid, start time)

    def requested(self) -> bool:
        """A stop was asked for (the handler may set it at any moment)."""
        return self.since is not None

    def __call__(self, signum: int, frame: object) -> None:
        if self.since is None:
            self.since = time.monotonic()
        self.signal_live(signal.SIGTERM)

    def signal_live(self, sig: int) -> None:
        pid = self.proc_pid
        if pid is None:
            return
        self.known = sorted(set(self.known) | set(procs.descendant_ids(pid)))
        procs.signal_tree(pid, pid, sig, self.known)


def _command_env() -> dict[str, str]:
    """The job's environment minus submitit's own variables: commands see what they see locally."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SUBMITIT_")}


def run_task(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Run one task's commands in order inside a Slurm job; the entry point submitit pickles.

    ``payload``: ``token``, ``cwd``, ``results_dir``, ``grace``, ``commands`` (a list
    of ``{"name", "text", "log_path"}``), ``env`` (the task's extra environment) and
    ``attempt`` (the first command's attempt number; a requeue adds its restart count).
    Returns a summary on success; when a command fails or is interrupted the job exits
    with the command's exit code (128+N for a signal), so ``sacct`` shows FAILED with that code.
    """
    env = os.environ
    token = str(payload["token"])
    results = Path(payload["results_dir"])
    results.mkdir(parents=True, exist_ok=True)
    restart = int(env.get("SLURM_RESTART_COUNT") or 0)
    job_id = job_id_from_env(env)
    visible, gpus = gpus_from_env(env)
    where = {
        "job_id": job_id,
        "node": env.get("SLURMD_NODENAME") or socket.gethostname(),
        "resource": visible,
        "gpus": gpus,
    }
    stop = _Stop(float(payload.get("grace", 10.0)))
    _handle_signals(stop)

    # a requeued job (same token, higher restart) skips what an earlier run of it finished
    done_before = {
        i for i, r in read_results(results, token).items() if r.get("status") == AttemptStatus.FINISHED
    }
    summary: dict[str, Any] = {"token": token, "job_id": job_id, "finished": []}
    for index, command in enumerate(payload["commands"]):
        if index in done_before:
            continue
        if stop.requested():
            break
        record: dict[str, Any] = {
            "version": RESULT_VERSION,
            "token": token,
            "index": index,
            "command": command["name"],
            "status": AttemptStatus.RUNNING,
            "exit_code": None,
            "signal": None,
            "started_at": time.time(),
            "ended_at": None,
            **where,
            "log_path": command["log_path"],
            "pid": None,
            "error": None,
        }
        path = result_path(results, token, restart, index)
        attempt = (int(payload.get("attempt", 1)) if index == 0 else 1) + restart  # a requeue retries
        command_env = {**_command_env(), **payload.get("env", {}), **attempt_env(attempt)}
        status, exit_code, sig = _run_command(command, payload["cwd"], record, path, stop, command_env)
        if status is not AttemptStatus.FINISHED:
            code = exit_code if exit_code is not None else 128 + (sig or 0)
            sys.exit(min(max(code, 1), 255))
        summary["finished"].append(command["name"])
    if stop.requested():  # told to stop between two commands: the rest never started
        sys.exit(128 + signal.SIGTERM)
    return summary


def _handle_signals(stop: _Stop) -> None:
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # submitit's pre-timeout USR2 handler would requeue the job; Slurm's own TERM at the
    # time limit is what ends a command here.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _run_command(
    command: Mapping[str, Any], cwd: str, record: dict[str, Any], path: Path, stop: _Stop, env: dict[str, str]
) -> tuple[AttemptStatus, int | None, int | None]:
    """Run one command to its end, ``record`` written to ``path`` at its start and its end.

    Returns (status, exit code, signal).
    """
    try:
        proc = procs.spawn(command["text"], log_path=command["log_path"], env=env, cwd=cwd)
    except OSError as exc:  # log dir not writable, cwd gone, no bash ...
        record.update(
            status=AttemptStatus.FAILED, exit_code=127, ended_at=time.time(), error=f"cannot start: {exc}"
        )
        atomic_write_json(path, record)
        return AttemptStatus.FAILED, 127, None
    stop.proc_pid, stop.known = proc.pid, []
    record["pid"] = proc.pid
    atomic_write_json(path, record)
    rc = _wait(proc, stop)
    exit_code, sig = (None, -rc) if rc < 0 else (rc, None)  # bash's 128+N stays an exit code
    if rc == 0:
        status = AttemptStatus.FINISHED
    elif stop.requested():
        status = AttemptStatus.INTERRUPTED
    else:
        status = AttemptStatus.FAILED
    record.update(status=status, exit_code=exit_code, signal=sig, ended_at=time.time())
    atomic_write_json(path, record)
    return status, exit_code, sig


def _wait(proc: procs.Child, stop: _Stop) -> int:
    """The command's return code; once a stop is asked for, SIGKILL after the grace period and
    nothing of its process tree left behind."""
    killed = False
    while (rc := proc.wait(timeout=0.2)) is None:  # keep waiting; SIGKILL after the grace
        if stop.since is not None and not killed and time.monotonic() - stop.since >= stop.grace:
            stop.signal_live(signal.SIGKILL)
            killed = True
    stop.proc_pid = None
    if stop.since is not None:  # the command is gone; what it left goes too (proven only)
        deadline = stop.since + stop.grace
        while time.monotonic() < deadline and any(procs.proc_start_time(p) == s for p, s in stop.known):
            time.sleep(0.05)
        for pid, start in stop.known:
            procs.kill_proven(pid, start, signal.SIGKILL)
    return rc

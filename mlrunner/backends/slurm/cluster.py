"""What mlrunner asks of Slurm, apart from running jobs.

The ``slurm:`` section of params.yaml (plus ``--slurm KEY=VALUE`` overrides) checked and
mapped to submitit's ``SlurmExecutor`` parameters; job states from ``squeue`` and
``sacct``; ``scancel``; and how a job's final state names a command's ledger status
(Slurm's state names are Slurm's text; the statuses they map to are
:class:`~mlrunner.status.AttemptStatus`). Standard library only: submitit itself is
imported by :func:`import_submitit`, lazily.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mlrunner.errors import BackendError, SpecError, did_you_mean
from mlrunner.spec import SLURM_KEYS  # the one list of valid `slurm:` keys
from mlrunner.status import AttemptStatus, FailureClass

INSTALL_HINT = "pip install 'mlrunner[slurm]'"
# sbatch options mlrunner sets itself: passing them through would break result tracking
_RESERVED = frozenset({"array", "output", "error", "open-mode", "comment", "wrap", "parsable"})

TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
        "GONE",  # ours: neither squeue nor sacct knows the job any more
    }
)
# a job's final Slurm state -> the status of the command it cut short
STATE_STATUS: dict[str, AttemptStatus] = {
    "CANCELLED": AttemptStatus.CANCELLED,
    "REVOKED": AttemptStatus.CANCELLED,
    "TIMEOUT": AttemptStatus.TIMEOUT,
    "DEADLINE": AttemptStatus.TIMEOUT,
    "NODE_FAIL": AttemptStatus.NODE_FAIL,
    "BOOT_FAIL": AttemptStatus.NODE_FAIL,
    "PREEMPTED": AttemptStatus.PREEMPTED,
    "OUT_OF_MEMORY": AttemptStatus.OOM,
}
# the failure class an attempt status carries when Slurm alone knows it (OUT_OF_MEMORY: host memory)
STATUS_FAILURE_CLASS: dict[AttemptStatus, FailureClass] = {AttemptStatus.OOM: FailureClass.HOST_OOM}


# ---------------------------------------------------------------------- parameters
def _positive_int(key: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"must be an integer >= {minimum}, got {value!r}", key=f"slurm.{key}")
    return value


def _text(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or str(value).strip() == "":
        raise SpecError(f"must be a non-empty string, got {value!r}", key=f"slurm.{key}")
    return str(value).strip()


def _time(value: Any) -> int | str:
    """Minutes as a number, or a string in sbatch's own time format (``1-00:00:00``)."""
    if isinstance(value, bool):
        raise SpecError(
            f"must be minutes (a number) or an sbatch time string, got {value!r}", key="slurm.time"
        )
    if isinstance(value, (int, float)):
        if value <= 0:
            raise SpecError(f"must be > 0 minutes, got {value!r}", key="slurm.time")
        return max(1, int(-(-value // 1)))  # round up to whole minutes
    text = _text("time", value)
    if text.isdigit():
        return _time(int(text))
    if not re.fullmatch(r"(\d+-)?\d+(:\d+){0,2}|\d+-\d+", text):
        raise SpecError(
            f"cannot read {text!r} as a time limit",
            key="slurm.time",
            hint="give minutes (e.g. 90) or sbatch's format: MM:SS, HH:MM:SS, D-HH or D-HH:MM:SS",
        )
    return text


def validate_slurm_options(slurm: Mapping[str, Any] | None) -> None:
    """Raise :class:`SpecError` for an unknown key or a bad value of the ``slurm:`` section."""
    submitit_parameters(slurm)
    gpus_override(slurm)


def submitit_parameters(slurm: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``slurm:`` section (with CLI overrides merged in) as ``SlurmExecutor`` parameters.

    ``time`` is always present: ``None`` leaves the limit to the partition's default
    (submitit would otherwise ask for 5 minutes). ``gpus_per_task`` is not included: the
    GPU request is per task (see :func:`gpus_override`).
    """
    # keys starting with '_' are the CLI's own flags riding along, not sbatch options
    slurm = {k: v for k, v in (slurm or {}).items() if not str(k).startswith("_")}
    for key in slurm:
        if key not in SLURM_KEYS:
            close = did_you_mean(str(key), SLURM_KEYS)
            hint = (close + " " if close else "") + "valid keys: " + ", ".join(SLURM_KEYS)
            raise SpecError(f"unknown slurm option '{key}'", key=f"slurm.{key}", hint=hint)
    out: dict[str, Any] = {"time": None}
    for key in ("partition", "account", "qos", "constraint"):
        if slurm.get(key) is not None:
            out[key] = _text(key, slurm[key])
    if slurm.get("time") is not None:
        out["time"] = _time(slurm["time"])
    if slurm.get("cpus_per_task") is not None:
        out["cpus_per_task"] = _positive_int("cpus_per_task", slurm["cpus_per_task"])
    if slurm.get("array_parallelism") is not None:
        out["array_parallelism"] = _positive_int("array_parallelism", slurm["array_parallelism"])
    if slurm.get("mem") is not None:
        out["mem"] = _mem(slurm["mem"])
    if slurm.get("additional_parameters") is not None:
        passed = _additional_parameters(slurm["additional_parameters"])
        if passed:
            out["additional_parameters"] = passed
    return out


def _mem(mem: Any) -> str:
    if isinstance(mem, int) and not isinstance(mem, bool):
        return str(_positive_int("mem", mem))  # sbatch: a bare number is megabytes
    text = _text("mem", mem)
    if not re.fullmatch(r"\d+[KMGT]?B?", text, flags=re.IGNORECASE):
        raise SpecError(f"cannot read {text!r} as memory", key="slurm.mem", hint="e.g. 16000 (MB) or 16G")
    return text


def _additional_parameters(extra: Any) -> dict[str, Any]:
    """``additional_parameters`` checked: sbatch option names (never mlrunner's own) to values."""
    if not isinstance(extra, Mapping):
        raise SpecError(
            "must be a mapping of sbatch options to values",
            key="slurm.additional_parameters",
            hint="e.g. additional_parameters: {mail-type: END, exclusive: true}",
        )
    passed: dict[str, Any] = {}
    for name, value in extra.items():
        flag = str(name).strip().lstrip("-").replace("_", "-")
        if not flag or not re.fullmatch(r"[A-Za-z0-9-]+", flag):
            raise SpecError(f"'{name}' is not an sbatch option name", key="slurm.additional_parameters")
        if flag in _RESERVED:
            raise SpecError(
                f"'{flag}' is set by mlrunner itself and cannot be passed through",
                key=f"slurm.additional_parameters.{name}",
            )
        if isinstance(value, bool):
            if value:
                passed[flag] = True
            continue
        if not isinstance(value, (str, int, float)):
            raise SpecError(
                f"must be a string, number or true, got {value!r}",
                key=f"slurm.additional_parameters.{name}",
            )
        passed[flag] = value
    return passed


def gpus_override(slurm: Mapping[str, Any] | None) -> int | None:
    """``gpus_per_task`` of the ``slurm:`` section: when set, it replaces each task's ``_gpus``."""
    value = (slurm or {}).get("gpus_per_task")
    return None if value is None else _positive_int("gpus_per_task", value, minimum=0)


def import_submitit() -> Any:
    try:
        import submitit
    except ImportError as exc:
        raise BackendError(
            "the Slurm backend needs the 'submitit' package, which is not installed",
            key="--backend",
            hint=f"install it with: {INSTALL_HINT}",
        ) from exc
    logging.getLogger("submitit").setLevel(logging.CRITICAL + 1)  # errors reach the user as BackendError
    return submitit


def require_slurm_client() -> None:
    missing = [tool for tool in ("sbatch", "squeue", "scancel", "srun") if shutil.which(tool) is None]
    if missing:
        raise BackendError(
            f"no Slurm client here: {', '.join(missing)} not found on PATH",
            key="--backend",
            hint="run from a Slurm login node, or start a local test cluster: "
            "sudo scripts/start-local-slurm.sh",
        )


# ---------------------------------------------------------------------- cluster queries
@dataclass(frozen=True)
class JobState:
    state: str  # squeue/sacct state name, e.g. RUNNING, CANCELLED (sacct's "CANCELLED by 0" -> CANCELLED)
    node: str | None = None
    reason: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def expand_job_ids(text: str) -> list[str]:
    """``123_[1-3,7%2]`` -> ``123_1 123_2 123_3 123_7``; plain ids come back as they are."""
    m = re.fullmatch(r"(\d+)_\[([0-9,\-]+)(%\d+)?\]", text.strip())
    if m is None:
        return [text.strip()]
    out: list[str] = []
    for part in m.group(2).split(","):
        low, _, high = part.partition("-")
        if low.isdigit():
            out.extend(f"{m.group(1)}_{n}" for n in range(int(low), int(high or low) + 1))
    return out


def _call(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _parse_table(text: str, wanted: set[str], out: dict[str, JobState], nodes_blank: str = "") -> None:
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        state = parts[1].split()[0].upper() if parts[1].strip() else "UNKNOWN"
        node = parts[2] if len(parts) > 2 and parts[2] not in ("", nodes_blank, "None assigned") else None
        reason = parts[3] if len(parts) > 3 and parts[3] not in ("", "None") else None
        for job_id in expand_job_ids(parts[0]):
            if job_id in wanted and job_id not in out:
                out[job_id] = JobState(state, node, reason)


def query_states(job_ids: Iterable[str]) -> dict[str, JobState] | None:
    """What Slurm says about each job id (``squeue`` first, ``sacct`` for the rest).

    Ids neither knows are absent from the answer. None when ``squeue`` could not be asked
    at all (controller down, timeout): nothing may be concluded from that.
    """
    wanted = {j for j in job_ids if j}
    if not wanted:
        return {}
    bases = sorted({j.split("_")[0] for j in wanted})
    proc = _call(["squeue", "-h", "--states=all", "-o", "%i|%T|%N|%r", "-j", ",".join(bases)])
    if proc is None:
        return None
    out: dict[str, JobState] = {}
    if proc.returncode == 0:
        _parse_table(proc.stdout, wanted, out)
    elif "invalid job id" not in (proc.stderr or "").lower():
        return None
    rest = wanted - set(out)
    if rest:
        acct = _call(["sacct", "-X", "-n", "-P", "-o", "JobID,State,NodeList", "-j", ",".join(sorted(rest))])
        if acct is not None and acct.returncode == 0:
            _parse_table(acct.stdout, rest, out, nodes_blank="None assigned")
    return out


def find_jobs_by_comment(comment: str) -> list[str] | None:
    """Ids of this user's queued/running jobs whose ``--comment`` is ``comment`` (None: no answer)."""
    proc = _call(["squeue", "-h", "--me", "-o", "%i|%k"])
    if proc is None or proc.returncode != 0:
        return None
    found: list[str] = []
    for line in proc.stdout.splitlines():
        job, _, text = line.partition("|")
        if text.strip() == comment:
            found.extend(expand_job_ids(job))
    return found


def cancel_jobs(job_ids: Iterable[str], *, kill: bool = False) -> None:
    ids = sorted({j for j in job_ids if j})
    if not ids:
        return
    argv = ["scancel", "--signal=KILL", "--full", *ids] if kill else ["scancel", *ids]
    _call(argv)


def command_status(
    result: str | None, signal: int | None, job: JobState | None, stopped_by_us: bool
) -> AttemptStatus:
    """The ledger status of a command from its last result record and its job's final state.

    ``result``: None (no record), ``running`` (no end record), ``failed`` or ``interrupted``.
    """
    state = job.state if job is not None else "GONE"
    mapped = STATE_STATUS.get(state)
    if stopped_by_us and state in ("CANCELLED", "GONE", "COMPLETED", "FAILED"):
        return AttemptStatus.INTERRUPTED
    if result in (None, AttemptStatus.RUNNING):
        return mapped or AttemptStatus.LOST
    if result == AttemptStatus.INTERRUPTED:
        return mapped or AttemptStatus.INTERRUPTED
    if result == AttemptStatus.FAILED and signal is not None and mapped:
        return mapped
    return AttemptStatus.FAILED


def failure_class(status: AttemptStatus) -> FailureClass | None:
    """What the scheduler knows beyond the status (``oom`` -> ``host_oom``); None: ask the log."""
    return STATUS_FAILURE_CLASS.get(status)


__all__ = [
    "INSTALL_HINT",
    "SLURM_KEYS",
    "STATE_STATUS",
    "STATUS_FAILURE_CLASS",
    "TERMINAL_STATES",
    "JobState",
    "cancel_jobs",
    "command_status",
    "expand_job_ids",
    "failure_class",
    "find_jobs_by_comment",
    "gpus_override",
    "import_submitit",
    "query_states",
    "require_slurm_client",
    "submitit_parameters",
    "validate_slurm_options",
]

"""Failure triage: ``mlrunner failures``. The failed commands of a run, grouped by what
went wrong (their *signature*), read from what the ledger stored of each failed attempt:
its status, exit code, signal, failure class and log tail.

A signature is, first match wins: the status ``timeout`` or ``stalled``; ``CUDA out of
memory`` (failure class ``gpu_oom``); ``host out of memory`` (status ``oom`` / class
``host_oom``); the last exception line of a Python traceback in the log tail
(``ValueError: bad lr``); ``node failure``; ``signal N (SIGNAME)`` (also for an exit code
128 + N: bash, every command's shepherd, reports a child killed by signal N so);
``exit code N``.
"""

from __future__ import annotations

import re
import shlex
import signal as signals
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlrunner.logtext import ESCAPES
from mlrunner.status import FAILED_STATUSES, AttemptStatus, FailureClass

if TYPE_CHECKING:
    from mlrunner.ledger.store import Ledger

TRACEBACK = "Traceback (most recent call last):"
GPU_OOM = "CUDA out of memory"
HOST_OOM = "host out of memory"
MAX_SIGNATURE = 300  # characters of an exception line kept in a signature
# an exception line: a (dotted) class name, then ': message' or nothing
_EXCEPTION = re.compile(r"([A-Za-z_][\w.]*)(?::\s.*|:)?")
_NAMED = re.compile(r"[\w.]*(?:Error|Exception|Exit|Interrupt|Fault|Failure|Warning)")


def signature(
    status: str, exit_code: int | None, signal: int | None, failure_class: str | None, log_tail: str | None
) -> str:
    """What a failed attempt died of, as one line (see the module's docstring)."""
    if status in (AttemptStatus.TIMEOUT, AttemptStatus.STALLED):
        return str(status)
    if failure_class == FailureClass.GPU_OOM:
        return GPU_OOM
    if status == AttemptStatus.OOM or failure_class == FailureClass.HOST_OOM:
        return HOST_OOM
    exception = python_exception(log_tail or "")
    if exception is not None:
        return exception
    if status == AttemptStatus.NODE_FAIL:
        return "node failure"
    if signal is None and exit_code is not None and exit_code > 128 and _signal_name(exit_code - 128):
        signal = exit_code - 128  # how bash (every command's shepherd) reports a child's signal
    if signal is not None:
        name = _signal_name(signal)
        return f"signal {signal}" + (f" ({name})" if name else "")
    if exit_code is not None:
        return f"exit code {exit_code}"
    return str(status)


def python_exception(text: str) -> str | None:
    """The exception line of the last Python traceback in ``text`` (``KeyError: 'lr'``), or
    None. Frames are indented; the exception line is the first line after them that is
    not. A prefix before the traceback's header (``[rank0]: ``) is taken off every line.
    When the header was cut off the tail, the last exception-like line after a frame."""
    lines = [ESCAPES.sub("", line).rstrip() for line in text.replace("\r", "\n").split("\n")]
    start = None
    for i in range(len(lines) - 1, -1, -1):
        if TRACEBACK in lines[i]:
            start = i
            break
    if start is not None:
        prefix = lines[start][: lines[start].index(TRACEBACK)]
        for line in lines[start + 1 :]:
            if prefix and line.startswith(prefix):
                line = line[len(prefix) :]
            if not line.strip() or line[:1].isspace():
                continue  # a frame, its code, its carets
            return _exception_line(line)
        return None
    seen_frame = False
    found = None
    for line in lines:
        stripped = line.lstrip()
        if stripped.startswith('File "') and line[:1].isspace():
            seen_frame = True
        elif seen_frame and not line[:1].isspace() and _named_exception(line):
            found = line
    return _exception_line(found) if found is not None else None


def _named_exception(line: str) -> bool:
    m = _EXCEPTION.fullmatch(line)
    return m is not None and _NAMED.fullmatch(m[1].rsplit(".", 1)[-1]) is not None


def _exception_line(line: str) -> str | None:
    line = line.strip()
    if not _EXCEPTION.fullmatch(line):
        return None
    return line if len(line) <= MAX_SIGNATURE else line[: MAX_SIGNATURE - 1] + "…"


def _signal_name(number: int) -> str | None:
    try:
        return signals.Signals(number).name
    except ValueError:
        return None


def rerun_command(run_id: int, output: str, names: Sequence[str]) -> str:
    """The shell command that reruns exactly these experiments of the run (each quoted)."""
    only = " ".join(f"--only {shlex.quote(n)}" for n in names)
    return f"run --resume {run_id} -o {shlex.quote(output)} {only}"


def failures_doc(ledger: Ledger, run_id: int, output: str) -> list[dict[str, Any]]:
    """``mlrunner failures --json``: the run's failed commands (their latest attempt
    failed) grouped by signature, most frequent first: ``[{"signature", "count",
    "experiments", "log_tail", "rerun"}]``. ``experiments``: the names, in run order;
    ``log_tail``: the first failed command's; ``rerun``: the command that reruns exactly
    those experiments (``output`` as the user wrote it)."""
    detail = ledger.run_detail(run_id)
    groups: dict[str, dict[str, Any]] = {}
    for task in detail.tasks:
        for command in task["commands"]:
            a = detail.latest.get((task["key"], command))
            if a is None or a["status"] not in FAILED_STATUSES:
                continue
            sig = signature(a["status"], a["exit_code"], a["signal"], a["failure_class"], a["log_tail"])
            group = groups.setdefault(
                sig, {"signature": sig, "count": 0, "experiments": [], "log_tail": a["log_tail"]}
            )
            group["count"] += 1
            if task["name"] not in group["experiments"]:
                group["experiments"].append(task["name"])
    out = sorted(groups.values(), key=lambda g: -g["count"])  # stable: first seen first among equals
    for g in out:
        g["rerun"] = rerun_command(run_id, output, g["experiments"])
    return out

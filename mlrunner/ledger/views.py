"""The documents shown of a ledger: ``mlrunner ledger ls/show --json``, ``mlrunner status
--json`` and the Examiner's ledger columns, built from the records the
:class:`~mlrunner.ledger.store.Ledger` returns. JSON-ready: times as ISO 8601 strings.

Task status is derived from the latest attempt of each of its commands
(:func:`mlrunner.status.task_status`) and is global to the ledger: a task shared by
several runs has one status, its current one.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mlrunner.errors import UsageError, did_you_mean
from mlrunner.status import FAILED_STATUSES, RunStatus, TaskStatus, task_status

if TYPE_CHECKING:
    from mlrunner.ledger.store import Ledger

TASK_STATUSES = tuple(TaskStatus)


def iso(t: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 local time with milliseconds and offset (None stays None):
    a short command's start and end stay apart."""
    if t is None:
        return None
    local = time.localtime(t)  # 3x faster than datetime.astimezone(), same text
    offset = local.tm_gmtoff or 0
    sign = "-" if offset < 0 else "+"
    offset = abs(offset)
    ms = min(int((t % 1) * 1000), 999)
    when = time.strftime("%Y-%m-%dT%H:%M:%S", local)
    return f"{when}.{ms:03d}{sign}{offset // 3600:02d}:{offset % 3600 // 60:02d}"


def _run_row(run: dict[str, Any]) -> dict[str, Any]:
    done = run["n_finished"] + run["n_skipped"] + run["n_failed"] + run["n_running"] + run["n_interrupted"]
    return {
        "id": run["id"],
        "status": run["status"],
        "started_at": iso(run["started_at"]),
        "finished_at": iso(run["ended_at"]),
        "git_commit": run["git_commit"],
        "git_dirty": run["git_dirty"],
        "snapshot_id": run["snapshot_id"],
        "env_hash": run.get("env_hash"),
        "n_tasks": run["n_tasks"],
        "n_finished": run["n_finished"],
        "n_skipped": run["n_skipped"],
        "n_failed": run["n_failed"],
        "n_running": run["n_running"],
        "n_interrupted": run["n_interrupted"],
        "n_pending": run["n_tasks"] - done,
        "n_commands": run["n_commands"],
        "n_commands_finished": run["n_done"],
        "params_path": run["params_path"],
        "cwd": run["cwd"],
        "argv": run["argv"],
        "backend": run["backend"],
        "host": run["host"],
        "pid": run["pid"],
    }


def runs_doc(ledger: Ledger) -> list[dict[str, Any]]:
    """``ledger ls --json``: one row per run, oldest first.

    Counts are of the run's tasks by their current status: n_tasks, n_finished (its
    result from this run), n_skipped (finished by another run: skipped by this one, or
    redone later), n_failed, n_running, n_interrupted (interrupted or lost), n_pending,
    plus n_commands and n_commands_finished.
    """
    return [_run_row(run) for run in ledger.run_summaries()]


def check_task_status(status: str | None) -> None:
    """UsageError unless ``status`` (a ``--status`` filter) is a task status or None."""
    if status is not None and status not in TASK_STATUSES:
        raise UsageError(
            f"unknown task status '{status}' (one of: {', '.join(TASK_STATUSES)})",
            hint=did_you_mean(status, TASK_STATUSES),
        )


def run_doc(ledger: Ledger, run_id: int, status: str | None = None) -> dict[str, Any]:
    """``ledger show --json``: a run, its tasks and their commands.

    ``{"run": {...}, "tasks": [{"name", "output_dir", "status", "params", "key",
    "position", "commands": [{"name", "status", "exit_code", "signal", "attempts",
    "resource", "started_at", "ended_at", "log", "failure_class", "log_tail"}]}]}``;
    ``status`` keeps only the tasks with that status.
    """
    check_task_status(status)
    detail = ledger.run_detail(run_id)
    run = dict(detail.run)
    for name in ("started_at", "ended_at"):
        run[name] = iso(run[name])
    run.pop("params_text", None)
    run["finished_at"] = run["ended_at"]
    tasks = []
    for task in detail.tasks:
        commands = [_command(name, detail.latest.get((task["key"], name))) for name in task["commands"]]
        state = task_status(None if c["status"] == TaskStatus.PENDING else c["status"] for c in commands)
        if status is None or state == status:
            tasks.append(
                {
                    "name": task["name"],
                    "output_dir": task["output_dir"],
                    "status": state,
                    "params": task["params"],
                    "key": task["key"],
                    "position": task["position"],
                    "commands": commands,
                }
            )
    return {"run": run, "tasks": tasks}


def _command(name: str, a: dict[str, Any] | None) -> dict[str, Any]:
    if a is None:
        return {
            "name": name, "status": TaskStatus.PENDING, "exit_code": None, "signal": None, "attempts": 0,
            "resource": None, "started_at": None, "ended_at": None, "log": None, "failure_class": None,
            "log_tail": None,
        }  # fmt: skip
    return {
        "name": name,
        "status": a["status"],
        "exit_code": a["exit_code"],
        "signal": a["signal"],
        "attempts": a["n_attempts"],
        "resource": a["resource"],
        "started_at": iso(a["started_at"]),
        "ended_at": iso(a["ended_at"]),
        "log": a["log_path"],
        "failure_class": a["failure_class"],
        "log_tail": a["log_tail"],
    }


def live_doc(ledger: Ledger) -> dict[str, Any]:
    """``status --json``: ``{"live": the running attempts whose runner is alive (every
    attempt column, epoch times, the task's name and output_dir), "orphaned": those whose
    runner died while the command still runs (running without a runner: ``run --resume``
    waits for them), "stopped": runners of this host that are stopped (Ctrl-Z, SIGSTOP),
    "runs": the running runs (rows of :func:`runs_doc`)}``."""
    live = ledger.live_attempts()
    orphaned = [a for a in ledger.orphaned_attempts() if a.get("command_alive") and not a.get("job_id")]
    runs = runs_doc(ledger)
    return {
        "live": live,
        "orphaned": orphaned,
        "stopped": ledger.stopped_runners(),
        "runs": [r for r in runs if r.get("status") == RunStatus.RUNNING],
    }


def experiment_summary(ledger: Ledger) -> dict[str, dict[str, Any]]:
    """Ledger columns for the Examiner, keyed by os.path.realpath(task output dir).

    Values: status (current task status), run_id (the run of the task's latest attempt:
    the run that produced the experiment; else the latest run that registered it),
    git_commit, git_dirty (that run's snapshot), started_at (epoch: earliest
    start among the latest attempt of each command, or None), duration_s (sum of the
    latest attempts' end - start, None if none ended), resource (of the latest
    attempt), attempts (total), code_changed (an attempt ran other code than its run's
    snapshot), failure_class (of the latest failed attempt among the latest attempt of
    each command, else None), env (that run's environment hash, or None). When several
    tasks share an output dir, the one registered by the most recent run wins.
    """
    rows = ledger.experiment_rows()
    out: dict[str, dict[str, Any]] = {}
    rank: dict[str, tuple[int, int]] = {}
    for task in rows.tasks:
        attempts = rows.latest.get(task["key"], {})
        commands = task["commands"]
        current = [attempts[c] for c in commands if c in attempts]
        ended = [a["ended_at"] - a["started_at"] for a in current if a["ended_at"] is not None]
        failed = [a for a in current if a["status"] in FAILED_STATUSES]
        last = max(current, key=lambda a: a["id"], default=None)  # the task's latest attempt
        # provenance: the run whose attempts produced the experiment, never a run that
        # only skipped it (issue 13)
        run_id = last["run_id"] if last is not None and last.get("run_id") else task["run_id"]
        git_commit, git_dirty, env = rows.runs.get(run_id, (None, None, None))
        order = (task["run_id"] or 0, 0 if last is None else last["id"])
        if task["output_real"] in rank and rank[task["output_real"]] > order:
            continue
        rank[task["output_real"]] = order
        out[task["output_real"]] = {
            "status": task_status(attempts[c]["status"] if c in attempts else None for c in commands),
            "run_id": run_id,
            "git_commit": git_commit,
            "git_dirty": git_dirty,
            "started_at": min((a["started_at"] for a in current), default=None),
            "duration_s": sum(ended) if ended else None,
            "resource": None if last is None else last["resource"],
            "attempts": task["n_attempts"],
            "code_changed": task["key"] in rows.code_changed,
            "failure_class": max(failed, key=lambda a: a["id"])["failure_class"] if failed else None,
            "env": env,
        }
    return out

"""``mlrunner ledger recover``: a lost or damaged ledger rebuilt from what is left on disk.

The damaged file (and its WAL) is kept beside it as ``ledger.db.damaged-<time>``. The new
ledger starts from the last backup a run left (``ledger.db.bak``, written at the end of
every run) when it is sound, then every experiment dir adds what it knows:

- ``param``: the task (its params, name, the run's time string), ``git.json`` its code;
- each ``log.<cmd>.<time>[.N]``: one attempt of that command (times from the file);
- the exit file beside a log (``.log.<cmd>.<time>.exit``, written by the command's
  shepherd): how that attempt ended, its real exit code;
- ``stat``: how the latest attempt of each command ended, where no exit file says it.

Runs are rebuilt one per run time string; a task's identity is recomputed from the params
file the run copied into the output root when it is there (so a later ``run`` recognises
its finished commands), else made up from the dir (``run`` then relies on the ``stat``
files, as for 0.5.9's dirs). What cannot be recovered is said, never invented.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlrunner import expdir, procs
from mlrunner.errors import LedgerError
from mlrunner.status import AttemptStatus, RunStatus

TIME_FORMAT = "%Y%m%d.%H%M%S"


@dataclass
class RecoverReport:
    """What ``recover`` did: the damaged file kept, the backup used, what was rebuilt, and
    what could not be."""

    kept: list[str] = field(default_factory=list)
    backup: str | None = None
    runs: int = 0
    tasks: int = 0
    attempts: int = 0
    problems: list[str] = field(default_factory=list)


def recover_ledger(output: str) -> RecoverReport:
    """Rebuild the ledger of ``output`` (see the module doc)."""
    from mlrunner.ledger import Ledger, ledger_path

    report = RecoverReport()
    path = ledger_path(output)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if path.exists():
        for suffix in ("", "-wal", "-shm"):
            old = Path(f"{path}{suffix}")
            if old.exists():
                kept = old.with_name(f"{old.name}.damaged-{stamp}")
                os.replace(old, kept)
                report.kept.append(str(kept))
    backup = path.with_name(path.name + ".bak")
    if backup.is_file() and _sound(backup):
        shutil.copyfile(backup, path)
        report.backup = str(backup)
    elif backup.is_file():
        report.problems.append(f"the backup {backup} is damaged too: not used")
    with Ledger(output) as ledger:
        _from_dirs(ledger, output, report)
    return report


def _sound(db: Path) -> bool:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return bool(con.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
        finally:
            con.close()
    except sqlite3.Error:
        return False


def _planned(output: str, params_file: str | None, run_time: str) -> dict[str, Any]:
    """Absolute dir -> the task the params file the run copied into the output root plans
    for it (its identity, as ``run`` computes it); empty when there is no such file or it
    does not plan (a time string of the run makes ``{_time}`` the same)."""
    if params_file is None:
        return {}
    from mlrunner.errors import MlrunnerError
    from mlrunner.plan import plan
    from mlrunner.spec import load_spec

    try:
        tasks = plan(load_spec(params_file), output=output, time=run_time or "00000000.000000").tasks
    except (MlrunnerError, OSError):
        return {}
    return {os.path.abspath(t.output_dir): t for t in tasks}


def _from_dirs(ledger: Any, output: str, report: RecoverReport) -> None:
    known_tasks = {t["output_dir"] for t in ledger.all_tasks()}
    runs: dict[str, int] = {}  # run time string -> run id
    params_file = _params_copy(output)
    plans: dict[str, dict[str, Any]] = {}  # run time string -> its plan
    for exp in sorted(_experiment_dirs(output)):
        problems: list[str] = []
        param = expdir.read_param(exp, problems)
        report.problems.extend(problems)
        if param is None:
            report.problems.append(f"{exp}: no readable param file: not recovered")
            continue
        out = os.path.abspath(exp)
        if out in known_tasks:  # the backup has it (and its attempts): nothing to add
            continue
        run_time = str(param.get("_time") or "")
        logs = _logs(exp)
        commands = list(dict.fromkeys([*(param.get("_scripts") or {}), *(c for c, _ in logs)]))
        stat = expdir.read_stat(exp)
        commands += [c for c in stat if c not in commands]
        if not commands:
            report.problems.append(f"{exp}: no command known (no log, no stat): not recovered")
            continue
        run_id = runs.get(run_time)
        if run_id is None:
            run_id = _new_run(ledger, output, run_time, params_file)
            runs[run_time] = run_id
            report.runs += 1
        params = {k: v for k, v in param.items() if not str(k).startswith("_")}
        if run_time not in plans:
            plans[run_time] = _planned(output, params_file, run_time)
        task = plans[run_time].get(out)
        if task is not None:  # its identity as `run` computes it: its finished commands stay so
            key = task.key
            commands = [c.name for c in task.commands] + [c for c in commands if c not in task.commands]
            commands = list(dict.fromkeys(commands))
        else:
            key = _task_key(out, params, commands)
            report.problems.append(
                f"{exp}: not planned by {params_file or 'any params file'}: identity made up"
            )
        name = str(param.get("_name") or exp.name)
        ledger.register_tasks(
            run_id, [{"key": key, "name": name, "output_dir": out, "params": params, "commands": commands}]
        )
        report.tasks += 1
        for command in commands:
            report.attempts += _attempts(ledger, run_id, key, command, exp, logs, stat.get(command), report)


def _experiment_dirs(output: str) -> list[Path]:
    try:
        entries = list(os.scandir(output))
    except OSError as exc:
        raise LedgerError(f"cannot read {output}: {exc.strerror or exc}") from exc
    return [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]


def _params_copy(output: str) -> str | None:
    for name in sorted(os.listdir(output)):
        if name.endswith((".yaml", ".yml")) and os.path.isfile(os.path.join(output, name)):
            return os.path.join(output, name)
    return None


def _new_run(ledger: Any, output: str, run_time: str, params_file: str | None) -> int:
    text = None
    if params_file is not None:
        try:
            text = Path(params_file).read_text(encoding="utf-8")
        except OSError:
            text = None
    run_id = int(
        ledger.create_run(
            argv=["mlrunner", "ledger", "recover"],
            cwd=os.path.dirname(os.path.abspath(output)),
            params_path=params_file,
            params_text=text,
            options={"output": output, "time": run_time or None, "recovered": True},
            snapshot=None,
        )
    )
    try:
        started = time.mktime(time.strptime(run_time, TIME_FORMAT)) if run_time else None
    except ValueError:
        started = None
    ledger.update_run(run_id, status=RunStatus.INTERRUPTED, ended_at=started or time.time(), runner=False)
    return run_id


def _task_key(out: str, params: dict[str, Any], commands: list[str]) -> str:
    import hashlib

    text = json.dumps(["recovered", os.path.basename(out), params, commands], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _times(log: Path | None) -> tuple[float | None, float | None]:
    """(start, end) of an attempt from its log: created, last written (None: unknown)."""
    if log is None:
        return None, None
    try:
        st = log.stat()
    except OSError:
        return None, None
    return min(st.st_ctime, st.st_mtime), st.st_mtime


def _logs(exp: Path) -> list[tuple[str, Path]]:
    """(command, log) of every log in the dir, oldest first."""
    out = []
    for p in sorted(exp.glob("log.*"), key=lambda p: p.stat().st_mtime):
        parts = p.name.split(".")
        if len(parts) >= 4:
            out.append((parts[1], p))
    return out


def _attempts(
    ledger: Any,
    run_id: int,
    key: str,
    command: str,
    exp: Path,
    logs: list[tuple[str, Path]],
    stat_word: str | None,
    report: RecoverReport,
) -> int:
    mine = [log for c, log in logs if c == command]
    found: list[tuple[Path | None, AttemptStatus, int | None]] = []
    if not mine:
        if stat_word != AttemptStatus.FINISHED:
            return 0
        report.problems.append(f"{exp}: '{command}' finished (stat) but its log is gone: recorded without it")
        found.append((None, AttemptStatus.FINISHED, None))
    for i, log in enumerate(mine):
        code = procs.read_exit(procs.exit_path(log))
        last = i == len(mine) - 1
        if code is not None:
            status = AttemptStatus.FINISHED if code == 0 else AttemptStatus.FAILED
        elif last and stat_word in (AttemptStatus.FINISHED, AttemptStatus.FAILED):
            status = AttemptStatus(stat_word)
        else:
            status = AttemptStatus.LOST
            report.problems.append(f"{log}: how it ended is unknown (no exit file): recorded lost")
        found.append((log, status, code))
    for entry, status, code in found:
        times = _times(entry)
        attempt = ledger.start_attempt(
            run_id=run_id, task_key=key, command=command, resource=None, gpus=None,
            log_path=None if entry is None else str(entry), started_at=times[0],
        )  # fmt: skip
        tail = expdir.log_tail(entry) if entry is not None and status is not AttemptStatus.FINISHED else None
        ledger.end_attempt(attempt, status=status, exit_code=code, log_tail=tail, ended_at=times[1])
    return len(found)

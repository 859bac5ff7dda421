"""Turning run events into terminal output (used by the CLI only).

Not a TTY: 0.5.9's plain lines (``START   gpu: 0, train   : 1/ 5, output/...``).
A TTY: a live rich display, one line per running command and an overall progress bar.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlrunner.events import (
    CommandEvent,
    DryLine,
    DryTask,
    Ended,
    Event,
    InfoMessage,
    Orphans,
    PlanReady,
    RunSummary,
    Skipped,
    Started,
    Stopping,
    Summary,
    WarningMessage,
)
from mlrunner.logtext import tail_lines
from mlrunner.status import AttemptStatus, RunStatus

if TYPE_CHECKING:
    from mlrunner.cli.console import ConsoleLog, TextSink

CPU_SLOT = "cpu:"  # mlrunner.spec's CPU_SLOT_PREFIX (not imported: this module starts light)
STOPPING = "Stopping: no new commands; running ones get SIGTERM (Ctrl-C again to kill at once)"
TAIL_INDENT = " " * 8  # a failed command's last log lines, under its FAIL line


def _info(e: CommandEvent) -> str:
    return f"{e.command:8}:{e.position:2d}/{e.total:2d}, {e.output_dir}"


def _where(e: Started) -> str:
    parts = []
    if e.job_id:
        parts.append(f"job: {e.job_id}")
    if e.node:
        parts.append(f"node: {e.node}")
    if e.resource is not None and e.resource.startswith(CPU_SLOT):
        parts.append(f"slot: {e.resource[len(CPU_SLOT) :]}")
    else:
        parts.append(f"gpu: {e.resource if e.resource is not None else '-'}")
    return ", ".join(parts)


def _fail_line(e: Ended) -> str:
    if e.exit_code is not None:
        why = f"exit {e.exit_code}"
    elif e.signal is not None:
        why = f"signal {e.signal}"
    else:
        why = "never started"
    if e.failure_class:
        why += f", {e.failure_class}"
    word = {AttemptStatus.INTERRUPTED: "STOP   ", AttemptStatus.CANCELLED: "CANCEL "}.get(e.status, "FAIL   ")
    return f"{word} {_info(e)} ({e.status}: {why}; log: {e.log})"


def _tail_block(e: Ended) -> str:
    """A failed command's last log lines, indented under its FAIL line ('' for none)."""
    if not e.status.failed:
        return ""
    return "".join(f"\n{TAIL_INDENT}{line}" for line in tail_lines(e.log_tail))


def _dry_line(e: DryLine) -> str:
    return f"DRY     {_info(e)}\n        {e.line}"


def orphans_line(params: Sequence[str]) -> str:
    return "Orphan params: " + ("{" + ", ".join(repr(p) for p in params) + "}" if params else "set()")


def summary_lines(s: RunSummary, output: str) -> list[str]:
    lines: list[str] = []
    if s.status is RunStatus.DRY_RUN:
        lines.append(f"Dry run: {s.n_tasks} tasks, {s.n_commands} commands; nothing was run or written.")
        return lines
    if s.skipped:
        lines.append(
            f"Skipped commands: {s.skipped}/{s.n_commands} (already finished; -f/--force reruns them)"
        )
    if s.failed_dirs:
        lines.append(f"Failed tasks: {len(s.failed_dirs)}/{s.n_tasks}")
        lines.extend(f"    {d}" for d in s.failed_dirs)
    elif s.status is not RunStatus.INTERRUPTED:
        lines.append("No task failed.")
    run = f" (run {s.run_id})" if s.run_id is not None else ""
    lines.append(
        f"Commands: {s.finished} finished, {s.failed} failed, {s.skipped} skipped, "
        f"{s.interrupted} interrupted, {s.not_started} not started"
        + (f", {s.elsewhere} by another runner" if s.elsewhere else "")
        + run
    )
    if s.status is RunStatus.INTERRUPTED or s.failed:
        lines.append(f"Finish what is unfinished with: run --resume -o {_quote(output)}")
    return lines


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


class PlainRenderer:
    """0.5.9-compatible lines; warnings go to stderr. ``log``: the run's console log, opened
    once the run's id is known (see :mod:`mlrunner.cli.console`)."""

    def __init__(
        self,
        output: str,
        out: TextSink | None = None,
        err: TextSink | None = None,
        log: ConsoleLog | None = None,
    ) -> None:
        self.output = output
        self.out: TextSink = out or sys.stdout
        self.err: TextSink = err or sys.stderr
        self.log = log

    def __call__(self, event: Event) -> None:
        match event:
            case Orphans(params=params):
                line = orphans_line(params)
            case PlanReady(tasks=tasks, commands=commands, run_id=run_id):
                if self.log is not None:
                    self.log.open(self.output, run_id)
                line = f"Tasks: {tasks}, Commands: {commands}"
            case Started():
                line = f"START   {_where(event)}, {_info(event)}"
            case Skipped():
                line = f"SKIP    {_info(event)}"
            case Ended() if not event.finished:
                line = _fail_line(event) + _tail_block(event)
            case DryLine():
                line = _dry_line(event)
            case WarningMessage(message=message):
                self._print("WARNING: " + message, self.err)
                return
            case InfoMessage(message=message):
                self._print(message, self.out)
                return
            case Stopping():
                self._print(STOPPING, self.err)
                return
            case Summary(summary=summary):
                lines = summary_lines(summary, self.output)
                if not lines:
                    return
                line = "\n".join(lines)
            case _:
                return
        self.out.write(line + "\n")
        self.out.flush()

    def _print(self, line: str, file: TextSink) -> None:
        file.write(line + "\n")
        file.flush()

    def close(self) -> None:
        """Nothing to tear down (every line is flushed as it is written)."""


class JsonRenderer:
    """``--dry-run --json``: stdout gets one JSON array of the tasks (run order), nothing else;
    the other lines (orphans, warnings, the seed) go to stderr."""

    def __init__(self, out: TextSink | None = None, err: TextSink | None = None) -> None:
        self.out: TextSink = out or sys.stdout
        self.lines = PlainRenderer("", out=err or sys.stderr, err=err or sys.stderr)
        self.tasks: list[dict[str, Any]] = []

    def __call__(self, event: Event) -> None:
        match event:
            case DryTask():
                self.tasks.append(
                    {
                        "name": event.name,
                        "output_dir": event.output_dir,
                        "params": {k: _json_value(v) for k, v in event.params.items()},
                        "commands": dict(event.commands),
                        "status": event.status,
                    }
                )
            case Summary():
                import json

                self.out.write(json.dumps(self.tasks, indent=2) + "\n")
                self.out.flush()
                self.lines(event)
            case DryLine():
                return
            case _:
                self.lines(event)

    def close(self) -> None:
        """Nothing to tear down (the array is written with the summary)."""


def _json_value(v: object) -> object:
    """A param as strict JSON takes it: inf and nan as text (JSON has no such numbers)."""
    return str(v) if isinstance(v, float) and not math.isfinite(v) else v

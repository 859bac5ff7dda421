"""Turning run events into terminal output (used by the CLI only).

Not a TTY: 0.5.9's plain lines (``START   gpu: 0, train   : 1/ 5, output/...``).
A TTY: a live rich display, one line per running command and an overall progress bar.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

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
from mlrunner.status import AttemptStatus, RunStatus

CPU_SLOT = "cpu:"  # mlrunner.spec's CPU_SLOT_PREFIX (not imported: this module starts light)
STOPPING = "Stopping: no new commands; running ones get SIGTERM (Ctrl-C again to kill at once)"


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
    why = f"exit {e.exit_code}" if e.exit_code is not None else f"signal {e.signal}"
    if e.failure_class:
        why += f", {e.failure_class}"
    word = "FAIL   " if e.status is not AttemptStatus.INTERRUPTED else "STOP   "
    return f"{word} {_info(e)} ({e.status}: {why}; log: {e.log})"


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
        f"{s.interrupted} interrupted, {s.not_started} not started{run}"
    )
    if s.status is RunStatus.INTERRUPTED or s.failed:
        lines.append(f"Finish what is unfinished with: run --resume -o {_quote(output)}")
    return lines


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


class PlainRenderer:
    """0.5.9-compatible lines; warnings go to stderr."""

    def __init__(self, output: str, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.output = output
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        match event:
            case Orphans(params=params):
                line = orphans_line(params)
            case PlanReady(tasks=tasks, commands=commands):
                line = f"Tasks: {tasks}, Commands: {commands}"
            case Started():
                line = f"START   {_where(event)}, {_info(event)}"
            case Skipped():
                line = f"SKIP    {_info(event)}"
            case Ended() if not event.finished:
                line = _fail_line(event)
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
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    def _print(self, line: str, file: TextIO) -> None:
        with self._lock:
            print(line, file=file, flush=True)

    def close(self) -> None:
        """Nothing to tear down (every line is flushed as it is written)."""


class JsonRenderer:
    """``--dry-run --json``: stdout gets one JSON array of the tasks (run order), nothing else;
    the other lines (orphans, warnings, the seed) go to stderr."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
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


class LiveRenderer:
    """A rich live display: one line per running command, an overall bar with ETA."""

    def __init__(self, output: str) -> None:
        from rich.console import Console

        self.output = output
        self.console = Console()
        self.err = Console(stderr=True)
        self._lock = threading.Lock()
        self.running: dict[tuple[str, str], tuple[Started, float]] = {}  # -> (start, t0)
        self.total = 0
        self.done = 0
        self.failed = 0
        self.skipped = 0
        self.started_at = time.monotonic()
        self._live: Any = None

    def _table(self) -> Any:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        now = time.monotonic()
        with self._lock:
            rows = list(self.running.values())
            done, failed, total, skipped = self.done, self.failed, self.total, self.skipped
        for r, t0 in rows:
            table.add_row(f"[cyan]{_where(r)}[/]", r.command, r.output_dir, f"{now - t0:6.0f}s")
        finished = done + failed
        work = max(total - skipped, 0)
        elapsed = now - self.started_at
        eta = "?"
        if finished and work > finished:
            eta = f"{elapsed / finished * (work - finished):.0f}s"
        width = 30
        frac = (finished / work) if work else 1.0
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        table.add_row(
            f"[bold]{bar}[/]",
            f"{done} done",
            f"[red]{failed} failed[/] / {work} to run ({skipped} skipped)",
            f"ETA {eta}",
        )
        return table

    def __call__(self, event: Event) -> None:
        from rich.live import Live
        from rich.markup import escape

        match event:
            case PlanReady(tasks=tasks, commands=commands):
                with self._lock:
                    self.total = commands
                self.console.print(f"Tasks: {tasks}, Commands: {commands}")
                if self._live is None:
                    self._live = Live(get_renderable=self._table, console=self.console, refresh_per_second=4)
                    self._live.start()
            case Orphans(params=params):
                self.console.print(escape(orphans_line(params)), style="red" if params else None)
            case Started():
                with self._lock:
                    self.running[(event.output_dir, event.command)] = (event, time.monotonic())
            case Ended():
                with self._lock:
                    self.running.pop((event.output_dir, event.command), None)
                    if event.finished:
                        self.done += 1
                    else:
                        self.failed += 1
                if not event.finished:
                    self.console.print(
                        escape(f"FAIL    {_info(event)} ({event.status}; log: {event.log})"), style="red"
                    )
            case Skipped():
                with self._lock:
                    self.skipped += 1
            case DryLine():
                self.console.print(escape(_dry_line(event)), highlight=False)
            case WarningMessage(message=message):
                self.err.print(escape("WARNING: " + message), style="yellow")
            case InfoMessage(message=message):
                self.console.print(escape(message))
            case Stopping():
                self.err.print(STOPPING)
            case Summary(summary=summary):
                self.close()
                for line in summary_lines(summary, self.output):
                    self.console.print(escape(line), highlight=False)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

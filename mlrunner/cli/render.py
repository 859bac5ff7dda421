"""Turning run events into terminal output (used by the CLI only).

Not a TTY: 0.5.9's plain lines (``START   gpu: 0, train   : 1/ 5, output/...``).
A TTY: a live rich display, one line per running command and an overall progress bar.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from mlrunner.events import Event, RunSummary


def _info(data: dict[str, Any]) -> str:
    return f"{data['command']:8}:{data['position']:2d}/{data['total']:2d}, {data['output_dir']}"


def _where(data: dict[str, Any]) -> str:
    parts = []
    if data.get("job_id"):
        parts.append(f"job: {data['job_id']}")
    if data.get("node"):
        parts.append(f"node: {data['node']}")
    parts.append(f"gpu: {data.get('resource') if data.get('resource') is not None else '-'}")
    return ", ".join(parts)


def plain_table(headers: list[str], rows: list[list[str]]) -> str:
    """Aligned columns for pipes and files (no rich import, nothing wrapped)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def orphans_line(params: list[str]) -> str:
    return "Orphan params: " + ("{" + ", ".join(repr(p) for p in params) + "}" if params else "set()")


def summary_lines(s: RunSummary, output: str) -> list[str]:
    lines: list[str] = []
    if s.status == "dry-run":
        lines.append(f"Dry run: {s.n_tasks} tasks, {s.n_commands} commands; nothing was run or written.")
        return lines
    if s.skipped:
        lines.append(
            f"Skipped commands: {s.skipped}/{s.n_commands} (already finished; -f/--force reruns them)"
        )
    if s.failed_dirs:
        lines.append(f"Failed tasks: {len(s.failed_dirs)}/{s.n_tasks}")
        lines.extend(f"    {d}" for d in s.failed_dirs)
    elif s.status != "interrupted":
        lines.append("No task failed.")
    run = f" (run {s.run_id})" if s.run_id is not None else ""
    lines.append(
        f"Commands: {s.finished} finished, {s.failed} failed, {s.skipped} skipped, "
        f"{s.interrupted} interrupted, {s.not_started} not started{run}"
    )
    if s.status == "interrupted" or s.failed:
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
        d = event.data
        k = event.kind
        if k == "orphans":
            line = orphans_line(d["params"])
        elif k == "plan":
            line = f"Tasks: {d['tasks']}, Commands: {d['commands']}"
        elif k == "start":
            line = f"START   {_where(d)}, {_info(d)}"
        elif k == "skip":
            line = f"SKIP    {_info(d)}"
        elif k == "fail":
            why = f"exit {d['exit_code']}" if d.get("exit_code") is not None else f"signal {d.get('signal')}"
            if d.get("failure_class"):
                why += f", {d['failure_class']}"
            word = "FAIL   " if d["status"] != "interrupted" else "STOP   "
            line = f"{word} {_info(d)} ({d['status']}: {why}; log: {d['log']})"
        elif k == "dry":
            line = f"DRY     {_info(d)}\n        {d['line']}"
        elif k in ("warning", "info"):
            with self._lock:
                prefix = "WARNING: " if k == "warning" else ""
                print(prefix + d["message"], file=self.err if k == "warning" else self.out, flush=True)
            return
        elif k == "stopping":
            with self._lock:
                print(
                    "Stopping: no new commands; running ones get SIGTERM (Ctrl-C again to kill at once)",
                    file=self.err,
                    flush=True,
                )
            return
        elif k == "summary":
            lines = summary_lines(d["summary"], self.output)
            if not lines:
                return
            line = "\n".join(lines)
        else:
            return
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()


class LiveRenderer:
    """A rich live display: one line per running command, an overall bar with ETA."""

    def __init__(self, output: str) -> None:
        from rich.console import Console

        self.output = output
        self.console = Console()
        self.err = Console(stderr=True)
        self._lock = threading.Lock()
        self.running: dict[tuple[str, str], dict[str, Any]] = {}
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
        for r in rows:
            table.add_row(f"[cyan]{_where(r)}[/]", r["command"], r["output_dir"], f"{now - r['t0']:6.0f}s")
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

        d = event.data
        k = event.kind
        if k == "plan":
            with self._lock:
                self.total = d["commands"]
            self.console.print(f"Tasks: {d['tasks']}, Commands: {d['commands']}")
            if self._live is None:
                self._live = Live(get_renderable=self._table, console=self.console, refresh_per_second=4)
                self._live.start()
        elif k == "orphans":
            self.console.print(escape(orphans_line(d["params"])), style="red" if d["params"] else None)
        elif k == "start":
            with self._lock:
                self.running[(d["output_dir"], d["command"])] = dict(d, t0=time.monotonic())
        elif k in ("finish", "fail"):
            with self._lock:
                self.running.pop((d["output_dir"], d["command"]), None)
                if k == "finish":
                    self.done += 1
                else:
                    self.failed += 1
            if k == "fail":
                self.console.print(
                    escape(f"FAIL    {_info(d)} ({d['status']}; log: {d['log']})"), style="red"
                )
        elif k == "skip":
            with self._lock:
                self.skipped += 1
        elif k == "dry":
            self.console.print(escape(f"DRY     {_info(d)}\n        {d['line']}"), highlight=False)
        elif k == "warning":
            self.err.print(escape("WARNING: " + d["message"]), style="yellow")
        elif k == "info":
            self.console.print(escape(d["message"]))
        elif k == "stopping":
            self.err.print(
                "Stopping: no new commands; running ones get SIGTERM (Ctrl-C again to kill at once)"
            )
        elif k == "summary":
            self.close()
            for line in summary_lines(d["summary"], self.output):
                self.console.print(escape(line), highlight=False)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

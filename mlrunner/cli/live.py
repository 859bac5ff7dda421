"""The live display on a terminal: one line per running command, an overall bar.

Each running command's line: where it runs, the command, its experiment (cut in the
middle when the terminal is narrow, so that the end of the name, often the seed, stays),
how long it has run and, when there is room, the last line of its log (the training's
progress). A failed command's line says how it ended, with its log's last line under it.
The bar counts finished, failed and interrupted commands apart; after Ctrl-C it
says so instead of an ETA; at the end it says how long the sweep took.
"""

from __future__ import annotations

import time
from typing import IO, TYPE_CHECKING, Any, cast

from mlrunner.cli.render import (
    STOPPING,
    TAIL_INDENT,
    _dry_line,
    _fail_line,
    _where,
    orphans_line,
    summary_lines,
)
from mlrunner.events import (
    DryLine,
    Ended,
    Event,
    InfoMessage,
    Orphans,
    PlanReady,
    Skipped,
    Started,
    Stopping,
    Summary,
    WarningMessage,
)
from mlrunner.logtext import tail_lines
from mlrunner.status import AttemptStatus

if TYPE_CHECKING:
    from mlrunner.cli.console import ConsoleLog, TextSink

TAIL_BYTES = 512  # of a running command's log, read for its last line
MIN_LOG_COLUMN = 16  # a last log line is shown only with at least this much room


def cut_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut in the middle with '…'."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = (width - 1) // 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def last_line(path: str | None) -> str:
    """The last non-empty line of a log (a progress bar's latest state after a '\\r')."""
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read()
    except OSError:
        return ""
    for raw in reversed(data.replace(b"\r", b"\n").split(b"\n")):
        text = raw.decode("utf-8", "replace").strip()
        if text:
            return "".join(ch if ch.isprintable() else " " for ch in text)
    return ""


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LiveRenderer:
    """A rich live display over ``out`` (warnings too: a second stream would tear the
    display; ``err`` is not used); ``log``: the run's console log, opened once the run id
    is known."""

    def __init__(self, output: str, out: TextSink, err: TextSink, log: ConsoleLog | None = None) -> None:
        from rich.console import Console

        self.output = output
        self.log = log
        self.console = Console(file=cast(IO[str], out), force_terminal=True)
        self.running: dict[tuple[str, str], tuple[Started, float]] = {}  # -> (start, t0)
        self.total = self.done = self.failed = self.interrupted = self.skipped = 0
        self.started_at = time.monotonic()
        self.stopping = False
        self.ended_after: float | None = None
        self._live: Any = None

    # --- the table, redrawn 4 times a second
    def _rows(self, width: int) -> list[tuple[str, str, str, str, str]]:
        """(where, command, experiment, time, last log line) per running command, sized to
        the content and cut to ``width`` (the experiment in the middle)."""
        now = time.monotonic()
        prefix = self.output.rstrip("/") + "/"
        rows = []
        for e, t0 in list(self.running.values()):
            name = e.output_dir[len(prefix) :] if e.output_dir.startswith(prefix) else e.output_dir
            rows.append((_where(e), e.command, name, duration(now - t0), e.log or ""))
        if not rows:
            return []
        w_where = max(len(r[0]) for r in rows)
        w_cmd = max(len(r[1]) for r in rows)
        w_time = max(len(r[3]) for r in rows)
        w_name = max(len(r[2]) for r in rows)
        room = width - (w_where + w_cmd + w_time + 6) - 1  # 3 gaps of 2, the terminal's last column free
        w_log = room - w_name - 2
        if w_log < MIN_LOG_COLUMN:
            w_log = 0
            w_name = min(w_name, max(room, 8))
        out = []
        for where, cmd, name, took, log in rows:
            tail = cut_middle(last_line(log), w_log) if w_log else ""
            out.append(
                (where.ljust(w_where), cmd.ljust(w_cmd), cut_middle(name, w_name), took.rjust(w_time), tail)
            )
        return out

    def _bar(self, width: int) -> str:
        finished = self.done + self.failed + self.interrupted
        work = max(self.total - self.skipped, 0)
        elapsed = time.monotonic() - self.started_at
        if self.ended_after is not None:
            tail = f"{'stopped after' if self.stopping else 'took'} {duration(self.ended_after)}"
        elif self.stopping:
            tail = "stopping: waiting for the running commands to end"
        elif finished and work > finished:
            tail = f"ETA {duration(elapsed / finished * (work - finished))}"
        elif work:
            tail = "ETA after the first command ends"
        else:
            tail = ""
        counts = f"{self.done} done, {self.failed} failed"
        if self.interrupted:
            counts += f", {self.interrupted} interrupted"
        counts += f" / {work} to run"
        if self.skipped:
            counts += f" ({self.skipped} skipped)"
        size = max(10, min(30, width - len(counts) - len(tail) - 6))
        frac = (finished / work) if work else 1.0
        bar = "#" * int(frac * size) + "-" * (size - int(frac * size))
        return f"{bar}  {counts}  {tail}".rstrip()

    def _table(self) -> Any:
        """One line per running command, then the bar; every line fits the terminal."""
        from rich.console import Group
        from rich.text import Text

        width = self.console.width
        lines = []
        for where, cmd, name, took, tail in self._rows(width):
            line = Text(no_wrap=True, overflow="crop")
            line.append(where, style="cyan")
            line.append(f"  {cmd}  {name}  {took}")
            if tail:
                line.append(f"  {tail}", style="dim")
            lines.append(line)
        lines.append(Text(self._bar(width), style="bold", no_wrap=True, overflow="crop"))
        return Group(*lines)

    # --- events
    def __call__(self, event: Event) -> None:
        from rich.live import Live
        from rich.text import Text

        match event:
            case PlanReady(tasks=tasks, commands=commands, run_id=run_id):
                if self.log is not None:
                    self.log.open(self.output, run_id)
                self.total = commands
                self.console.print(Text(f"Tasks: {tasks}, Commands: {commands}"))
                if self._live is None:
                    self._live = Live(get_renderable=self._table, console=self.console, refresh_per_second=4)
                    self._live.start()
            case Orphans(params=params):
                self.console.print(Text(orphans_line(params), style="red" if params else ""))
            case Started():
                self.running[(event.output_dir, event.command)] = (event, time.monotonic())
            case Ended():
                self.running.pop((event.output_dir, event.command), None)
                if event.finished:
                    self.done += 1
                elif event.status in (AttemptStatus.INTERRUPTED, AttemptStatus.CANCELLED):
                    self.interrupted += 1
                    self.console.print(Text(_fail_line(event), style="yellow"))
                else:
                    self.failed += 1
                    self.console.print(Text(_fail_line(event), style="red"))
                    last = tail_lines(event.log_tail, 1) if event.status.failed else []
                    if last:  # the log's last line, under the FAIL line
                        line = cut_middle(TAIL_INDENT + last[0].strip(), max(self.console.width - 1, 10))
                        self.console.print(Text(line, style="dim"), no_wrap=True, overflow="crop")
            case Skipped():
                self.skipped += 1
            case DryLine():
                self.console.print(Text(_dry_line(event)))
            case WarningMessage(message=message):  # on the live console: the display stays whole
                self.console.print(Text("WARNING: " + message, style="yellow"))
            case InfoMessage(message=message):
                self.console.print(Text(message))
            case Stopping():
                self.stopping = True
                self.console.print(Text(STOPPING, style="yellow"))
            case Summary(summary=summary):
                self.running.clear()
                self.ended_after = time.monotonic() - self.started_at
                self.close()
                for line in summary_lines(summary, self.output):
                    self.console.print(Text(line))

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()  # draws the table one last time: no running line, the total time
            self._live = None

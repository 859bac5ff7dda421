"""The terminal, as the run loop must see it: never blocking, never fatal, never lost.

A :class:`ConsoleStream` stands for stdout or stderr. ``write`` only puts the text in a
queue (``queue.SimpleQueue``: safe even from a signal handler that interrupted another
write) and returns; a thread of its own writes it out, so neither the run loop nor a
Ctrl-C handler ever waits on a terminal. When the reader is slow (a full pipe) at most
:data:`QUEUE_LINES` writes wait; further text is dropped and counted, with one line saying
how much once the reader catches up. When the stream breaks (``| head`` exited, a dropped
ssh session: EPIPE, EIO, a closed descriptor) it goes quiet and the sweep goes on.
Everything written also goes to the run's console log under the output root
(:class:`ConsoleLog`), so nothing is lost.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path
from typing import Protocol, TextIO


class TextSink(Protocol):
    """What a renderer writes to: a :class:`ConsoleStream`, or any text file."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


QUEUE_LINES = 2000  # at most this many writes wait for a slow terminal; more are dropped
CLOSE_WAIT_S = 2.0  # at the end, how long to wait for a slow terminal to take what is queued


class ConsoleLog:
    """The run's console log, ``<output>/.mlrunner/runs/<run id>.log`` (a resume appends).
    Text written before the run id is known is written once it is; a thread writes."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self.path: Path | None = None
        self._thread = threading.Thread(target=self._run, name="mlrunner-console-log", daemon=True)
        self._thread.start()

    def open(self, output: str, run_id: int) -> None:
        """Start writing to the log of run ``run_id`` under ``output``."""
        if self.path is None:
            self.path = Path(output, ".mlrunner", "runs", f"{run_id}.log")
            self._queue.put(("open", str(self.path)))

    def write(self, text: str) -> None:
        self._queue.put(("text", text))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(CLOSE_WAIT_S)

    def _run(self) -> None:
        early: list[str] = []
        file: TextIO | None = None
        broken = False
        while True:
            item = self._queue.get()
            if item is None:
                break
            kind, text = item
            if kind == "open":
                try:
                    Path(text).parent.mkdir(parents=True, exist_ok=True)
                    file = open(text, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
                    file.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n")
                    file.write("".join(early))
                    file.flush()
                except OSError:  # the run reports its own file errors; this is only a copy
                    broken = True
                    file = None
                early = []
            elif file is not None:
                try:
                    file.write(text)
                    file.flush()
                except OSError:
                    file, broken = None, True
            elif not broken and len(early) < QUEUE_LINES:
                early.append(text)
        if file is not None:
            try:
                file.close()
            except OSError:
                pass


class ConsoleStream:
    """A text stream for the renderers over ``target`` (sys.stdout or sys.stderr), also
    copied to ``log``. ``write`` never blocks and never raises."""

    def __init__(self, target: TextIO, log: ConsoleLog | None = None) -> None:
        self.target = target
        self.log = log
        self.broken = False
        self.dropped = 0
        self.pending = 0  # writes queued, not written yet (approximate under races: a bound)
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="mlrunner-console", daemon=True)
        self._thread.start()

    # --- what rich and print need of a file
    def write(self, text: str) -> int:
        if self.log is not None:
            self.log.write(text)
        if self.broken or not text:
            return len(text)
        if self.pending >= QUEUE_LINES:
            self.dropped += 1
            return len(text)
        self.pending += 1
        self._queue.put(text)
        return len(text)

    def flush(self) -> None:
        """Nothing to wait for: the writer thread flushes after each write."""

    def isatty(self) -> bool:
        try:
            return self.target.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.target, "encoding", None) or "utf-8"

    def close(self) -> None:
        """Let the writer take what is queued (at most :data:`CLOSE_WAIT_S`), then stop it."""
        self._queue.put(None)
        self._thread.join(CLOSE_WAIT_S)

    # --- the writer thread
    def _run(self) -> None:
        while True:
            text = self._queue.get()
            if text is None:
                return
            self.pending -= 1
            if self.broken:
                continue
            dropped, self.dropped = self.dropped, 0
            if dropped:
                where = f" (all of it is in {self.log.path})" if self.log and self.log.path else ""
                text = f"... {dropped} writes not shown: the terminal was too slow{where}\n" + text
            try:
                self.target.write(text)
                self.target.flush()
            except (OSError, ValueError):  # EPIPE, EIO (hung-up tty), closed: go quiet
                self.broken = True

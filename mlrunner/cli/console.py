"""The terminal, as the run loop must see it: never blocking, never fatal, never lost.

A :class:`ConsoleStream` stands for stdout or stderr. ``write`` writes at once with one
``os.write`` when the descriptor can take it without blocking (``poll``: a pipe or a tty
with room, the common case: no thread, no copy); otherwise the text waits in a queue
(``queue.SimpleQueue``: safe even from a signal handler that interrupted another write)
that a thread drains, so neither the run loop nor a Ctrl-C handler ever waits on a
terminal. When the reader is slow (a full pipe) at most :data:`QUEUE_LINES` writes wait;
further text is dropped and counted, with one line saying how much once the reader catches
up. When the stream breaks (``| head`` exited, a dropped ssh session: EPIPE, EIO, a closed
descriptor) it goes quiet and the sweep goes on. Everything written also goes to the run's
console log under the output root (:class:`ConsoleLog`), so nothing is lost.
"""

from __future__ import annotations

import os
import queue
import select
import threading
import time
from pathlib import Path
from typing import Protocol, TextIO

QUEUE_LINES = 2000  # at most this many writes wait for a slow terminal; more are dropped
CLOSE_WAIT_S = 2.0  # at the end, how long to wait for a slow terminal to take what is queued


class TextSink(Protocol):
    """What a renderer writes to: a :class:`ConsoleStream`, or any text file."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class ConsoleLog:
    """The run's console log, ``<output>/.mlrunner/runs/<run id>.log`` (a resume appends).
    Text written before the run id is known is written once it is. Each write is one
    ``os.write`` of an ``O_APPEND`` descriptor: a regular file never blocks for long, and a
    signal handler may write while another write was interrupted."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self._fd: int | None = None
        self._early: list[bytes] = []
        self.broken = False

    def open(self, output: str, run_id: int) -> None:
        """Start writing to the log of run ``run_id`` under ``output``."""
        if self.path is not None:
            return
        self.path = Path(output, ".mlrunner", "runs", f"{run_id}.log")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
        except OSError:  # the run reports its own file errors; this is only a copy
            self.broken = True
            return
        head = f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n".encode()
        early, self._early = self._early, []
        self._put(head + b"".join(early))

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        if self._fd is None:
            if not self.broken and len(self._early) < QUEUE_LINES:
                self._early.append(data)
            return
        self._put(data)

    def _put(self, data: bytes) -> None:
        if self._fd is None:
            return
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:  # a full disk: the run says so itself; the copy stops
            self.close()
            self.broken = True

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
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
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # starts the thread once
        try:
            target.flush()  # what Python buffered before us goes first
            self._fd: int | None = target.fileno()
        except (OSError, ValueError, AttributeError):
            self._fd = None
        self._poll = select.poll()
        if self._fd is not None:
            self._poll.register(self._fd, select.POLLOUT)

    # --- what rich and print need of a file
    def write(self, text: str) -> int:
        if self.log is not None:
            self.log.write(text)
        if self.broken or not text:
            return len(text)
        data = text.encode(self.encoding, "replace")
        # a pipe or a tty that polls writable takes PIPE_BUF bytes without blocking
        if self.pending == 0 and self._fd is not None and len(data) <= select.PIPE_BUF and self._ready():
            try:  # the common case: the terminal keeps up, one system call
                n = os.write(self._fd, data)
                if n == len(data):
                    return len(text)
                data = data[n:]
            except BlockingIOError:
                pass
            except OSError:  # EPIPE, EIO (hung-up tty): go quiet
                self.broken = True
                return len(text)
        if self.pending >= QUEUE_LINES:
            self.dropped += 1
            return len(text)
        self.pending += 1
        self._queue.put(data)
        self._start()
        return len(text)

    def _ready(self) -> bool:
        try:
            return any(ev & select.POLLOUT for _, ev in self._poll.poll(0))
        except OSError:
            return False

    def flush(self) -> None:
        """Nothing to wait for: a write is written, or queued for the writer thread."""

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
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(CLOSE_WAIT_S)

    # --- the writer thread, started the first time the terminal could not keep up
    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="mlrunner-console", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            data = self._queue.get()
            if data is None:
                return
            if self.broken:
                self.pending -= 1
                continue
            dropped, self.dropped = self.dropped, 0
            if dropped:
                where = f" (all of it is in {self.log.path})" if self.log and self.log.path else ""
                data = f"... {dropped} writes not shown: the terminal was too slow{where}\n".encode() + data
            try:
                if self._fd is None:
                    self.target.write(data.decode(self.encoding, "replace"))
                    self.target.flush()
                else:
                    while data:  # blocks here, in this thread only
                        data = data[os.write(self._fd, data) :]
            except OSError:  # EPIPE, EIO (hung-up tty), closed: go quiet
                self.broken = True
            self.pending -= 1

"""The notifier: sits between the run and its renderer, forwards every event, and sends the
notifications ``notify:`` asks for. Sending happens in a daemon thread per target: the run
only queues a message. At the run's end (its :class:`~mlrunner.events.Summary`) the ``end``
message is queued and the queue is given ``timeout`` seconds to go out; what could not be
sent becomes a warning, emitted from the run's thread before the summary, never an error.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from dataclasses import dataclass

from mlrunner.events import Emit, Ended, Event, PlanReady, RunSummary, Summary, WarningMessage
from mlrunner.logtext import tail_lines
from mlrunner.notify.targets import Target, load_targets
from mlrunner.spec import NotifySpec

TAIL_SENT = 20  # log lines in a failure's message


@dataclass(frozen=True)
class Message:
    title: str
    body: str


class Notifier:
    """An :data:`~mlrunner.events.Emit` that forwards to ``emit`` and notifies.

    Built when a run starts (its targets are checked then: a SpecError for one apprise
    does not know). ``output``: the run's output root, named in the messages. Each target
    has its own sending thread: a slow one holds up neither the run nor the others.
    """

    def __init__(self, config: NotifySpec, path: str, emit: Emit, output: str) -> None:
        self.events = frozenset(config.events)
        self.timeout = config.timeout
        self.emit = emit
        self.output = os.path.abspath(output)
        self.started = time.monotonic()
        self.run_id: int | None = None
        self.failures = 0
        self._cond = threading.Condition()
        self._problems: list[str] = []  # found by the senders, reported from the run's thread
        self._senders = [_Sender(t, self._cond, self._problems) for t in load_targets(config, path)]

    def __call__(self, event: Event) -> None:
        self._report()
        match event:
            case PlanReady(run_id=run_id):
                self.run_id = run_id
            case Ended() if event.status.failed:
                self.failures += 1
                first = self.failures == 1 and "first_failure" in self.events
                if first or "failure" in self.events:
                    self._send(failure_message(event, self.run_id, first=first))
            case Summary(summary=summary):
                if "end" in self.events:
                    took = time.monotonic() - self.started
                    self._send(end_message(summary, self.output, took))
                self._drain()
                self._report()
        self.emit(event)

    def _send(self, message: Message) -> None:
        for sender in self._senders:
            sender.put(message)

    def _drain(self) -> None:
        """Wait up to ``timeout`` seconds for every queued message to be handled; then a
        problem per target that missed messages."""
        deadline = time.monotonic() + self.timeout
        with self._cond:
            try:
                while any(s.done < s.queued for s in self._senders):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            except KeyboardInterrupt:  # a second Ctrl-C while waiting: give up on them
                pass
            for s in self._senders:
                late = s.queued - s.done
                if late:
                    self._problems.append(
                        f"{late} notification(s) not sent to {s.target.shown} within {self.timeout:g} s "
                        "(notify: timeout): the target is slow or unreachable"
                    )
                if s.failed > 1:
                    self._problems.append(f"{s.failed} notifications in all not sent to {s.target.shown}")

    def _report(self) -> None:
        if not self._problems:
            return
        with self._cond:
            problems = self._problems[:]
            self._problems.clear()
        for problem in problems:
            self.emit(WarningMessage(f"notify: {problem}"))


class _Sender:
    """One target's queue and daemon thread (started with its first message)."""

    def __init__(self, target: Target, cond: threading.Condition, problems: list[str]) -> None:
        self.target = target
        self.cond = cond  # guards the counts and ``problems``
        self.problems = problems
        self.queued = self.done = self.failed = 0
        self._queue: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def put(self, message: Message) -> None:
        with self.cond:
            self.queued += 1
        self._queue.put(message)
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="mlrunner-notify", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            message = self._queue.get()
            try:
                why = self.target.send(message.title, message.body)
            except Exception as exc:  # a plugin's own bug must not end the sender
                why = f"{type(exc).__name__}: {exc}"
            with self.cond:
                self.done += 1
                if why is not None:
                    self.failed += 1
                    if self.failed == 1:  # once: a dead webhook would repeat it for every failure
                        self.problems.append(f"not sent to {self.target.shown}: {why}")
                self.cond.notify_all()


def end_message(s: RunSummary, output: str, took: float) -> Message:
    """``end``: the counts ("9 finished, 1 failed"), how long it took, where."""
    counts = [f"{s.finished} finished", f"{s.failed} failed"]
    for n, what in ((s.interrupted, "interrupted"), (s.skipped, "skipped"), (s.not_started, "not started")):
        if n:
            counts.append(f"{n} {what}")
    run = f"run {s.run_id}" if s.run_id is not None else "run"
    body = [
        f"{', '.join(counts)} in {_duration(took)}.",
        f"output: {output}",
        f"host: {socket.gethostname()}",
    ]
    if s.failed_dirs:
        body.append("failed: " + ", ".join(s.failed_dirs[:10]) + (" ..." if len(s.failed_dirs) > 10 else ""))
    return Message(f"mlrunner: {run} {s.status} ({', '.join(counts[:2])})", "\n".join(body))


def failure_message(e: Ended, run_id: int | None, *, first: bool = False) -> Message:
    """``failure`` / ``first_failure``: the command, how it ended, its log's last lines."""
    why = f"exit {e.exit_code}" if e.exit_code is not None else f"signal {e.signal}"
    if e.failure_class:
        why += f", {e.failure_class}"
    run = f" (run {run_id})" if run_id is not None else ""
    head = f"{e.command} {e.status} ({why}) in {e.output_dir}{run}"
    body = [head, f"log: {e.log}"]
    tail = tail_lines(e.log_tail, TAIL_SENT)
    if tail:
        body += ["", *tail]
    title = "mlrunner: first failure" if first else "mlrunner: failure"
    return Message(
        f"{title}: {e.command} in {os.path.basename(e.output_dir) or e.output_dir}", "\n".join(body)
    )


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"

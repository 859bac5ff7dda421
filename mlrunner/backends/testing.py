"""A test double for backends: :class:`MemoryRecorder`, an in-memory :class:`~mlrunner.backends.base.Recorder`
(as httpx's ``MockTransport`` stands in for the network).

It records what a backend reports, in order, as typed events (:class:`Claimed`,
:class:`Released`, :class:`Started`, :class:`Ended`), and can be told to refuse claims
(another runner holds the task), to report a failure class for a task's first failed
attempt (``classify={"t": FailureClass.GPU_OOM}``), or to raise when a task's command
starts (a broken ledger). It is strict where the real recorder would be: ending an attempt
that was never started, or twice, raises. No ledger, no files but the log paths it names.

    rec = MemoryRecorder(tmp_path)
    LocalBackend(allocator).execute(items, rec, RunOptions(output=..., cwd=...))
    assert [e.outcome.status for e in rec.ends("t")] == [AttemptStatus.FINISHED]
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, Union

from mlrunner.backends.base import Adopted, Outcome, Placement, ProcessRef, WorkItem
from mlrunner.status import AttemptStatus, FailureClass

if TYPE_CHECKING:
    from mlrunner.plan import Command


@dataclass(frozen=True)
class Claimed:
    task: str
    ok: bool  # False: refused


@dataclass(frozen=True)
class Released:
    task: str


@dataclass(frozen=True)
class Started:
    attempt: int
    task: str
    command: str
    placement: Placement
    log_path: Path
    batched: bool  # recorded inside a batch() block


@dataclass(frozen=True)
class Ended:
    attempt: int
    task: str
    command: str
    outcome: Outcome
    log_path: Path
    last: bool
    result: AttemptStatus | FailureClass  # what command_ended returned
    batched: bool


Event = Union[Claimed, Released, Started, Ended]
E = TypeVar("E", Claimed, Released, Started, Ended)


class MemoryRecorder:
    """An in-memory Recorder; thread-safe."""

    def __init__(
        self,
        logs: Path,
        *,
        refuse: Iterable[str] = (),
        classify: Mapping[str, FailureClass] | None = None,
        fail_start: Iterable[str] = (),
        jobs: Mapping[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        """``logs``: where log paths point. ``refuse``: tasks whose claim is refused.
        ``classify``: task -> the failure class its first failed attempt returns.
        ``fail_start``: tasks whose command_started raises RuntimeError.
        ``jobs``: task -> what previous_jobs returns for it."""
        self.stop = threading.Event()
        self.kill_now = threading.Event()
        self.logs = logs
        self.refuse = set(refuse)
        self.classify = dict(classify or {})
        self.fail_start = set(fail_start)
        self.jobs = {k: list(v) for k, v in (jobs or {}).items()}
        self.events: list[Event] = []
        self.batches = 0  # batch() blocks entered
        self._depth = 0
        self._next_attempt = 1
        self._open: dict[int, Started] = {}
        self.warnings: list[str] = []
        self.cancels: set[str] = set()
        self.never_started: list[tuple[str, str]] = []
        self.processes: dict[int, ProcessRef] = {}  # attempt id -> what process_started said
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ reading
    def of(self, kind: type[E], task: str | None = None) -> list[E]:
        """The events of one kind (of one task), in order."""
        with self._lock:
            return [e for e in self.events if isinstance(e, kind) and (task is None or e.task == task)]

    def starts(self, task: str | None = None) -> list[Started]:
        return self.of(Started, task)

    def ends(self, task: str | None = None) -> list[Ended]:
        return self.of(Ended, task)

    def claims(self, task: str | None = None) -> list[Claimed]:
        return self.of(Claimed, task)

    def releases(self, task: str | None = None) -> list[Released]:
        return self.of(Released, task)

    @property
    def open_attempts(self) -> list[Started]:
        """Started and not ended."""
        with self._lock:
            return list(self._open.values())

    # ------------------------------------------------------------------ Recorder
    @contextmanager
    def batch(self) -> Iterator[None]:
        with self._lock:
            self.batches += 1
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1

    def _add(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def claim(self, item: WorkItem) -> bool:
        ok = item.task.name not in self.refuse
        self._add(Claimed(item.task.name, ok))
        return ok

    def release(self, item: WorkItem) -> None:
        self._add(Released(item.task.name))

    def cancelled(self) -> set[str]:
        """``cancels``: the task keys a test cancels (set it at any time)."""
        with self._lock:
            return set(self.cancels)

    def command_cancelled(self, item: WorkItem, command: Command) -> None:
        """Kept in ``never_started`` as (task name, command name)."""
        with self._lock:
            self.never_started.append((item.task.name, command.name))

    def warn(self, message: str) -> None:
        """Kept in ``warnings``."""
        with self._lock:
            self.warnings.append(message)

    def process_started(self, attempt_id: int, process: ProcessRef) -> None:
        """Kept in ``processes`` (attempt id -> its process)."""
        with self._lock:
            self.processes[attempt_id] = process

    def adopt(self, item: WorkItem) -> Adopted | None:
        """``item.adopted`` (set by the test), as the real recorder returns a settled one; its
        attempt is open from then on."""
        adopted = item.adopted
        if adopted is not None:
            placement = Placement(resource=adopted.resource, process=adopted.process)
            started = Started(
                adopted.attempt_id,
                item.task.name,
                adopted.command,
                placement,
                adopted.log_path,
                batched=False,
            )
            with self._lock:
                self._open[adopted.attempt_id] = started
                self.events.append(started)
        return adopted

    def log_path(self, item: WorkItem, command: Command) -> Path:
        n = sum(1 for e in self.starts(item.task.name) if e.command == command.name)
        return self.logs / f"{item.task.name}.{command.name}.{n}.log"

    def command_started(self, item: WorkItem, command: Command, placement: Placement, log_path: Path) -> int:
        if item.task.name in self.fail_start:
            raise RuntimeError(f"recorder broke on {item.task.name}")
        with self._lock:
            attempt = self._next_attempt
            self._next_attempt += 1
            started = Started(attempt, item.task.name, command.name, placement, log_path, self._depth > 0)
            self._open[attempt] = started
            self.events.append(started)
        return attempt

    def command_ended(
        self,
        attempt_id: int,
        item: WorkItem,
        command: Command,
        outcome: Outcome,
        log_path: Path,
        *,
        last: bool = False,
    ) -> AttemptStatus | FailureClass:
        name = item.task.name
        with self._lock:
            started = self._open.pop(attempt_id, None)
            if started is None:
                raise KeyError(f"attempt {attempt_id} of {name} is not open (never started, or ended twice)")
            if (started.task, started.command) != (name, command.name):
                raise ValueError(f"attempt {attempt_id} is {started.task}/{started.command}, not {name}")
            result: AttemptStatus | FailureClass = outcome.status
            if outcome.status is AttemptStatus.FAILED and name in self.classify:
                result = self.classify.pop(name)
            elif outcome.failure_class is not None:
                result = outcome.failure_class
            self.events.append(
                Ended(attempt_id, name, command.name, outcome, log_path, last, result, self._depth > 0)
            )
        return result

    def previous_jobs(self, item: WorkItem) -> list[dict[str, Any]]:
        return list(self.jobs.get(item.task.name, []))

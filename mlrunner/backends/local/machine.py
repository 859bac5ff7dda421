"""The local backend's state machine: one work item's way through the loop, with no processes,
selectors or threads (the loop in :mod:`.loop` drives it and does the system calls).

A :class:`Job` has one :class:`Phase` and moves only along :data:`TRANSITIONS` (as
dask/distributed's worker state machine); any other move raises :class:`InvalidTransition`.
The decisions the loop used to spell out inline live here too: how a command ended
(:meth:`Job.exited`), whether it is the item's last (:meth:`Job.is_last`), what follows its
end (:meth:`Job.after_end`: the next command, a retry, a new allocation after a GPU OOM, or
nothing), and what a stop does to a job in each phase (:meth:`Job.on_stop`).

::

    QUEUED --> ACQUIRING (the loop takes a fixed slot) --+--> CLAIMING --> READY --> SPAWNING
       \\--> ASKING (for a helper) --> WAITING (helper) --/                   |  ^          |
                                                                            |  |       STARTED
    ENDING <-- EXITED <-- RUNNING <----(adopted: left running by a dead runner)  |          |
       |  ^                  ^-------------------------------------------------------------/
       |  +------------- SIGNALLED <-- (stop) <-- RUNNING or STARTED
       +--> READY (next command, retry) | ASKING/ACQUIRING (GPU OOM) | DONE

The *transient* phases (ACQUIRING, CLAIMING, SPAWNING, ENDING) are entered and left within
one call of the loop; a job found in one by the stop step was left there by an exception
(from the recorder, the allocator or a spawn) and nothing of it runs: it is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from mlrunner.backends.base import Allocation, Outcome, WorkItem
from mlrunner.status import AttemptStatus, FailureClass

if TYPE_CHECKING:
    from mlrunner.plan import Command


class Phase(Enum):
    QUEUED = auto()  # not admitted yet (capacity items hold or wait for an allocation)
    ASKING = auto()  # admitted; its helper thread (to ask the allocator) not started yet
    WAITING = auto()  # a helper thread waits in the allocator for it
    ACQUIRING = auto()  # transient: the loop itself takes a fixed slot (never blocks)
    CLAIMING = auto()  # transient: holds an allocation, claiming its task in the ledger
    READY = auto()  # allocation and claim held: its command is to start
    SPAWNING = auto()  # transient: its command is being spawned (by the loop itself)
    STARTED = auto()  # its command is alive, its start not recorded (yet, or recording failed)
    RUNNING = auto()  # its command is alive and recorded as running
    SIGNALLED = auto()  # its command got SIGTERM from the stop: a non-zero end is interrupted
    EXITED = auto()  # its command was reaped (``outcome`` set): its end is to be recorded
    ENDING = auto()  # transient: its end is being recorded
    DONE = auto()  # claim and allocation given back: nothing more happens to it


TRANSIENT = frozenset({Phase.ACQUIRING, Phase.CLAIMING, Phase.SPAWNING, Phase.ENDING})
ALIVE = frozenset({Phase.STARTED, Phase.RUNNING, Phase.SIGNALLED})  # a process of it may run

P = Phase
# (from, to) -> why: the only moves a job makes
TRANSITIONS: dict[tuple[Phase, Phase], str] = {
    (P.QUEUED, P.ACQUIRING): "admitted; a fixed slot is free: the loop takes it",
    (P.QUEUED, P.ASKING): "admitted; the allocation may block: a helper thread will ask",
    (P.QUEUED, P.DONE): "stopped before it was admitted",
    (P.ASKING, P.WAITING): "its helper thread started",
    (P.ASKING, P.DONE): "stopped before its helper started",
    (P.WAITING, P.CLAIMING): "the helper handed back an allocation",
    (P.WAITING, P.DONE): "the helper handed back nothing (stopped) or an error; or after the loop",
    (P.ACQUIRING, P.CLAIMING): "the allocator gave a slot",
    (P.ACQUIRING, P.DONE): "the allocator gave nothing (stopped) or raised",
    (P.CLAIMING, P.READY): "claimed (or claimed before an OOM re-allocation)",
    (P.CLAIMING, P.DONE): "the claim was refused, the run stops, or the claim raised",
    (P.READY, P.SPAWNING): "its command is spawned",
    (P.READY, P.RUNNING): "its command, left running by a runner that died, is adopted: watched",
    (P.READY, P.DONE): "stopped before its command started",
    (P.SPAWNING, P.STARTED): "spawned",
    (P.SPAWNING, P.EXITED): "the spawn failed (a command line over the kernel's limit...): it failed",
    (P.SPAWNING, P.DONE): "the spawn raised",
    (P.STARTED, P.RUNNING): "its start is recorded",
    (P.STARTED, P.SIGNALLED): "stopped (recording its start raised)",
    (P.STARTED, P.EXITED): "reaped after the loop, its start never recorded",
    (P.RUNNING, P.SIGNALLED): "stopped: SIGTERM to its process tree",
    (P.RUNNING, P.EXITED): "it exited on its own",
    (P.SIGNALLED, P.EXITED): "it exited after the signal",
    (P.EXITED, P.ENDING): "its end is recorded",
    (P.EXITED, P.DONE): "after the loop: its end never recorded",
    (P.ENDING, P.READY): "its next command, or a retry of the failed one",
    (P.ENDING, P.ACQUIRING): "GPU out of memory: a new fixed slot at once",
    (P.ENDING, P.ASKING): "GPU out of memory: wait for an allocation with free memory again",
    (P.ENDING, P.DONE): "its last command ended, the run stops, or recording the end raised",
}
del P


class InvalidTransition(RuntimeError):
    """A job was asked to move along a pair that :data:`TRANSITIONS` does not hold."""

    def __init__(self, task: str, phase: Phase, to: Phase) -> None:
        super().__init__(f"{task}: no transition {phase.name} -> {to.name}")
        self.phase = phase
        self.to = to


class StopAction(Enum):
    DROP = auto()  # to DONE now: give back claim and allocation (nothing of it runs)
    SIGNAL = auto()  # to SIGNALLED: TERM its process tree
    WAIT = auto()  # nothing now: a helper, the process or its end record will move it


class Next(Enum):
    """What follows a recorded end."""

    NEXT = auto()  # the item's next command (READY)
    RETRY = auto()  # the same command again (READY): a failure with retries left, or lost
    REALLOCATE = auto()  # give back the allocation, ask for a new one (GPU OOM)
    DONE = auto()  # nothing more: give back claim and allocation


_STOP: dict[Phase, StopAction] = {
    Phase.QUEUED: StopAction.DROP,
    Phase.ASKING: StopAction.DROP,
    Phase.WAITING: StopAction.WAIT,
    Phase.READY: StopAction.DROP,
    Phase.STARTED: StopAction.SIGNAL,
    Phase.RUNNING: StopAction.SIGNAL,
    Phase.SIGNALLED: StopAction.WAIT,
    Phase.EXITED: StopAction.WAIT,
    Phase.DONE: StopAction.WAIT,
    **{p: StopAction.DROP for p in TRANSIENT},
}


def outcome_of(returncode: int | None, signalled: AttemptStatus | None) -> Outcome:
    """How a command ended, from its return code (negative: killed by that signal; None:
    unknown, an adopted command that left no exit status) and why the loop signalled it, if
    it did (``signalled``: interrupted by a stop, timeout, stalled, cancelled): ``finished``
    when 0, else the reason it was signalled, else ``failed`` (``lost`` when unknown).
    bash's 128+N stays an exit code."""
    if returncode is None:
        return Outcome(status=signalled or AttemptStatus.LOST)
    if returncode == 0:
        status = AttemptStatus.FINISHED
    elif signalled is not None:
        status = signalled
    else:
        status = AttemptStatus.FAILED
    if returncode < 0:
        return Outcome(status=status, exit_code=None, signal=-returncode)
    return Outcome(status=status, exit_code=returncode, signal=None)


A = TypeVar("A", bound=Allocation)


@dataclass(eq=False)
class Job(Generic[A]):
    """One work item on its way through the loop (``A``: the allocator's allocations)."""

    item: WorkItem
    phase: Phase = Phase.QUEUED
    alloc: A | None = None  # the allocation held (CLAIMING..ENDING)
    env: dict[str, str] | None = None  # the commands' environment under that allocation
    claimed: bool = False  # its task is claimed in the ledger (from the first CLAIMING on)
    index: int = 0  # the command of item.commands to run, running or just ended
    failures: int = 0  # failed tries of that command
    reason: AttemptStatus = AttemptStatus.INTERRUPTED  # why it was signalled (SIGNALLED)
    deadline: float | None = None  # monotonic time past which its command times out
    asked_adopt: bool = False  # the recorder was asked for a command left running (before the first start)
    pid: int | None = None  # its command's process (ALIVE phases)
    attempt: int | None = None  # the ledger attempt of that command, once recorded
    log: Path | None = None  # that command's log
    outcome: Outcome | None = None  # how it ended (EXITED, ENDING)

    @property
    def command(self) -> Command:
        return self.item.commands[self.index]

    def to(self, phase: Phase) -> None:
        """Move to ``phase``; InvalidTransition unless the table holds the move."""
        if (self.phase, phase) not in TRANSITIONS:
            raise InvalidTransition(self.item.task.name, self.phase, phase)
        self.phase = phase

    # ------------------------------------------------------------------ events
    def started(self, pid: int, log: Path) -> None:
        """SPAWNING -> STARTED: its command runs as ``pid``, writing to ``log``."""
        self.to(Phase.STARTED)
        self.pid, self.log, self.attempt, self.outcome = pid, log, None, None

    def recorded(self, attempt: int) -> None:
        """STARTED -> RUNNING: the recorder returned the attempt id."""
        self.to(Phase.RUNNING)
        self.attempt = attempt

    def adopted(self, pid: int, log: Path, attempt: int) -> None:
        """READY -> RUNNING: its command, left running by a dead runner (attempt
        ``attempt``, writing to ``log``), is watched instead of started."""
        self.to(Phase.RUNNING)
        self.pid, self.log, self.attempt, self.outcome = pid, log, attempt, None

    def spawn_failed(self, attempt: int, log: Path, reason: str | None = None) -> Outcome:
        """SPAWNING -> EXITED: its recorded attempt could not start (``reason``); it failed."""
        self.to(Phase.EXITED)
        self.pid, self.log, self.attempt = None, log, attempt
        self.outcome = Outcome(status=AttemptStatus.FAILED, reason=reason)
        self.failures += 1
        return self.outcome

    def exited(self, returncode: int | None) -> Outcome:
        """ALIVE -> EXITED: gone with ``returncode`` (None: unknown); counts a failure (a
        timeout or a stall is one)."""
        reason = self.reason if self.phase is Phase.SIGNALLED else None
        outcome = outcome_of(returncode, reason)
        self.to(Phase.EXITED)
        self.pid, self.outcome, self.reason = None, outcome, AttemptStatus.INTERRUPTED
        if outcome.status.failed:
            self.failures += 1
        return outcome

    def signal(self, reason: AttemptStatus) -> None:
        """RUNNING (or STARTED) -> SIGNALLED: the loop sends its process tree SIGTERM for
        ``reason`` (interrupted: the run stops; timeout, stalled, cancelled: this command)."""
        self.to(Phase.SIGNALLED)
        self.reason = reason

    # ------------------------------------------------------------------ decisions
    def is_last(self, retries: int, stopping: bool) -> bool:
        """No command of the item follows the one that just ended (``last`` for
        command_ended): the run stops; it finished and was the item's last; it was
        interrupted; or it failed with its ``retries`` spent."""
        assert self.outcome is not None
        if stopping:
            return True
        if self.outcome.status is AttemptStatus.FINISHED:
            return self.index + 1 == len(self.item.commands)
        if self.outcome.status is AttemptStatus.LOST:  # an adopted command gone without a status
            return False  # it runs again, as one that never started
        return not self.outcome.status.failed or self.failures > retries

    def after_end(self, final: AttemptStatus | FailureClass, last: bool) -> Next:
        """What follows the recorded end (``final``: what command_ended returned; ``last``:
        no command follows, or the run stops now). Moves to the next command on success."""
        assert self.outcome is not None
        if last:
            return Next.DONE
        if self.outcome.status is AttemptStatus.FINISHED:
            self.index += 1
            self.failures = 0
            return Next.NEXT
        if final == FailureClass.GPU_OOM:
            return Next.REALLOCATE
        return Next.RETRY  # a failure with retries left, or a lost adopted command

    def on_stop(self) -> StopAction:
        """What the stop step does to a job in its current phase."""
        return _STOP[self.phase]

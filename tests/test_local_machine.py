"""The local backend's state machine (mlrunner.backends.local.machine), driven directly:
no processes, no selectors, no threads. Every legal move, every illegal one, and the
decisions the loop asks of a job (how a command ended, what follows, what a stop does)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlrunner.backends.base import WorkItem
from mlrunner.backends.local.machine import (
    ALIVE,
    TRANSIENT,
    TRANSITIONS,
    InvalidTransition,
    Job,
    Next,
    Phase,
    StopAction,
    outcome_of,
)
from mlrunner.plan import Command, Task
from mlrunner.status import AttemptStatus, FailureClass

FINISHED, FAILED, INTERRUPTED = AttemptStatus.FINISHED, AttemptStatus.FAILED, AttemptStatus.INTERRUPTED


def job(*commands: str, name: str = "t") -> Job:
    cmds = tuple(Command(c, f"echo {c}") for c in commands or ("a",))
    task = Task(0, name, f"out/{name}", {}, {}, cmds, f"key-{name}", 1)  # type: ignore[arg-type]
    return Job(WorkItem(task=task, commands=cmds, position=1, total=1))


def walk(j: Job, *phases: Phase) -> None:
    for p in phases:
        j.to(p)


def running(j: Job) -> Job:
    """QUEUED -> ... -> RUNNING through the fixed-slot way."""
    walk(j, Phase.ACQUIRING, Phase.CLAIMING, Phase.READY, Phase.SPAWNING)
    j.started(pid=4242, log=Path("log.a"))
    j.recorded(attempt=7)
    return j


def test_every_phase_is_reachable_from_queued_and_reaches_done() -> None:
    succ: dict[Phase, set[Phase]] = {}
    for a, b in TRANSITIONS:
        succ.setdefault(a, set()).add(b)
    seen, todo = {Phase.QUEUED}, [Phase.QUEUED]
    while todo:
        for n in succ.get(todo.pop(), ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    assert seen == set(Phase)
    for phase in set(Phase) - {Phase.DONE}:  # no dead end but DONE
        assert succ.get(phase), phase
    assert Phase.DONE not in succ  # DONE is final


@pytest.mark.parametrize(
    "a,b", [(a, b) for a, b in itertools.product(Phase, Phase) if (a, b) not in TRANSITIONS]
)
def test_a_move_outside_the_table_raises_and_changes_nothing(a: Phase, b: Phase) -> None:
    j = job()
    j.phase = a
    with pytest.raises(InvalidTransition) as err:
        j.to(b)
    assert j.phase is a
    assert err.value.phase is a and err.value.to is b
    assert f"{a.name} -> {b.name}" in str(err.value)


def test_every_move_in_the_table_is_taken_and_says_why() -> None:
    for (a, b), why in TRANSITIONS.items():
        j = job()
        j.phase = a
        j.to(b)
        assert j.phase is b and why


def test_a_task_of_two_commands_runs_both_then_is_done() -> None:
    j = running(job("a", "b"))
    assert j.command.name == "a" and j.pid == 4242 and j.attempt == 7
    out = j.exited(0)
    assert out.status is FINISHED and out.exit_code == 0 and j.pid is None
    walk(j, Phase.ENDING)
    assert not j.is_last(retries=0, stopping=False)
    assert j.after_end(FINISHED, last=False) is Next.NEXT
    assert j.command.name == "b"
    walk(j, Phase.READY, Phase.SPAWNING)
    j.started(pid=4343, log=Path("log.b"))
    assert j.attempt is None  # a new attempt: its id comes with the record
    j.recorded(attempt=8)
    j.exited(0)
    walk(j, Phase.ENDING)
    assert j.is_last(retries=0, stopping=False)
    assert j.after_end(FINISHED, last=True) is Next.DONE
    j.to(Phase.DONE)


def test_a_failure_is_retried_until_the_retries_are_spent() -> None:
    j = running(job("a", "b"))
    for n in range(1, 4):
        out = j.exited(3)
        assert out.status is FAILED and out.exit_code == 3 and j.failures == n
        walk(j, Phase.ENDING)
        last = j.is_last(retries=2, stopping=False)
        assert last == (n == 3)
        if last:
            assert j.after_end(FAILED, last=True) is Next.DONE
            break
        assert j.after_end(FAILED, last=False) is Next.RETRY
        assert j.command.name == "a"  # the same command again
        walk(j, Phase.READY, Phase.SPAWNING)
        j.started(pid=100 + n, log=Path("log.a"))
        j.recorded(attempt=10 + n)


def test_a_finished_command_resets_the_failure_count() -> None:
    j = running(job("a", "b"))
    j.exited(1)
    walk(j, Phase.ENDING)
    assert j.after_end(FAILED, last=j.is_last(retries=1, stopping=False)) is Next.RETRY
    walk(j, Phase.READY, Phase.SPAWNING)
    j.started(pid=1, log=Path("l"))
    j.recorded(attempt=2)
    j.exited(0)
    walk(j, Phase.ENDING)
    assert j.after_end(FINISHED, last=False) is Next.NEXT and j.failures == 0


def test_gpu_oom_asks_for_a_new_allocation() -> None:
    j = running(job())
    j.exited(1)
    walk(j, Phase.ENDING)
    assert j.after_end(FailureClass.GPU_OOM, last=j.is_last(retries=1, stopping=False)) is Next.REALLOCATE
    walk(j, Phase.ASKING)  # or ACQUIRING for a fixed slot


def test_a_stop_signals_live_commands_and_their_end_is_interrupted() -> None:
    j = running(job("a", "b"))
    assert j.on_stop() is StopAction.SIGNAL
    j.to(Phase.SIGNALLED)
    assert j.on_stop() is StopAction.WAIT  # signalled once only
    out = j.exited(-15)
    assert out.status is INTERRUPTED and out.signal == 15 and out.exit_code is None
    assert j.failures == 0  # not the command's failure
    walk(j, Phase.ENDING)
    assert j.is_last(retries=5, stopping=True)


def test_a_signalled_command_that_exits_zero_finished() -> None:
    j = running(job())
    j.to(Phase.SIGNALLED)
    assert j.exited(0).status is FINISHED


def test_what_a_stop_does_in_each_phase() -> None:
    for phase in Phase:
        j = job()
        j.phase = phase
        action = j.on_stop()
        if phase in TRANSIENT or phase in (Phase.QUEUED, Phase.ASKING, Phase.READY):
            assert action is StopAction.DROP, phase  # nothing of it runs
            if phase is not Phase.DONE:
                j.to(Phase.DONE)
        elif phase in (Phase.STARTED, Phase.RUNNING):
            assert action is StopAction.SIGNAL, phase
            j.to(Phase.SIGNALLED)
        else:
            assert action is StopAction.WAIT, phase
    assert {Phase.STARTED, Phase.RUNNING, Phase.SIGNALLED} == ALIVE


def test_illegal_event_orders_raise() -> None:
    j = job()
    with pytest.raises(InvalidTransition):
        j.started(pid=1, log=Path("l"))  # not spawning
    with pytest.raises(InvalidTransition):
        j.exited(0)  # nothing runs
    j = running(job())
    with pytest.raises(InvalidTransition):
        j.recorded(attempt=3)  # recorded twice
    j.exited(0)
    with pytest.raises(InvalidTransition):
        j.exited(0)  # reaped twice


REASONS = [None, INTERRUPTED, AttemptStatus.TIMEOUT, AttemptStatus.STALLED, AttemptStatus.CANCELLED]


@given(st.integers(min_value=-64, max_value=255), st.sampled_from(REASONS))
def test_outcome_of_a_return_code(code: int, signalled: AttemptStatus | None) -> None:
    out = outcome_of(code, signalled)
    if code == 0:
        assert out.status is FINISHED
    else:
        assert out.status is (signalled or FAILED)
    if code < 0:
        assert out.signal == -code and out.exit_code is None
    else:
        assert out.exit_code == code and out.signal is None  # bash's 128+N stays an exit code


@given(st.lists(st.sampled_from([0, 1, 2, 137, -9]), min_size=1, max_size=20), st.integers(0, 3))
def test_random_end_sequences_never_leave_the_table(codes: list[int], retries: int) -> None:
    """Drive a three-command job with random exit codes: it only ever moves along the table,
    runs its commands in order, and is done exactly when the machine says so."""
    j = running(job("a", "b", "c"))
    order = ["a"]
    pid = 1
    for code in codes:
        j.exited(code)
        j.to(Phase.ENDING)
        last = j.is_last(retries=retries, stopping=False)
        after = j.after_end(FAILED if code else FINISHED, last=last)
        if after is Next.DONE:
            j.to(Phase.DONE)
            break
        j.to(Phase.READY)
        j.to(Phase.SPAWNING)
        pid += 1
        j.started(pid=pid, log=Path("l"))
        j.recorded(attempt=pid)
        order.append(j.command.name)
    assert order == sorted(order)  # never goes back to an earlier command
    assert j.failures <= retries + 1


@pytest.mark.parametrize("reason", [AttemptStatus.TIMEOUT, AttemptStatus.STALLED])
def test_a_timeout_or_a_stall_is_a_failure_that_retries_apply_to(reason: AttemptStatus) -> None:
    j = running(job("a", "b"))
    j.signal(reason)
    assert j.phase is Phase.SIGNALLED and j.on_stop() is StopAction.WAIT
    out = j.exited(-15)
    assert out.status is reason and j.failures == 1
    j.to(Phase.ENDING)
    assert not j.is_last(retries=1, stopping=False)
    assert j.after_end(reason, last=False) is Next.RETRY and j.command.name == "a"
    j.to(Phase.READY)
    j.to(Phase.SPAWNING)
    j.started(pid=2, log=Path("l"))
    j.recorded(attempt=3)
    assert j.exited(1).status is FAILED  # the reason was for that attempt only


def test_a_cancelled_command_ends_its_task_without_a_failure() -> None:
    j = running(job("a", "b"))
    j.signal(AttemptStatus.CANCELLED)
    out = j.exited(-15)
    assert out.status is AttemptStatus.CANCELLED and j.failures == 0
    j.to(Phase.ENDING)
    assert j.is_last(retries=5, stopping=False)

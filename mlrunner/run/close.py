"""The end of a run (step 8): the summary's counts and the run row's final status."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlrunner.events import RunSummary
from mlrunner.run.recorder import RunRecorder
from mlrunner.status import FAILED_STATUSES, AttemptStatus, RunStatus

if TYPE_CHECKING:
    from mlrunner.ledger import Ledger
    from mlrunner.plan import Task

# the states of a command another runner ran or runs
_ELSEWHERE = frozenset({AttemptStatus.FINISHED, AttemptStatus.FAILED, AttemptStatus.RUNNING})
_FINISHED = AttemptStatus.FINISHED.value
_FAILED = frozenset(s.value for s in FAILED_STATUSES)


def close_run(
    ledger: Ledger,
    run_id: int,
    recorder: RunRecorder,
    summary: RunSummary,
    tasks: Sequence[Task],
    skipped: set[tuple[str, str]],
) -> None:
    """The end of step 8: the summary's counts and the run row's final status. Commands
    another runner sharing the sweep ran (or runs) are counted as such, not as not started."""
    summary.signal = recorder.signal_received
    recorder.tally()
    mine = recorder.recorded()
    states = ledger.command_states([t.key for t in tasks])
    held = ledger.held_by_others()
    for t in tasks:
        for c in t.commands:
            key = (t.key, c.name)
            if key in mine or key in skipped:
                continue
            if states.get(key) in _ELSEWHERE or t.key in held:
                summary.elsewhere += 1
    summary.not_started = max(
        0,
        summary.n_commands
        - summary.skipped
        - summary.finished
        - summary.failed
        - summary.interrupted
        - summary.elsewhere,
    )
    left = [k for t in tasks for k in ((t.key, c.name) for c in t.commands) if states.get(k) != _FINISHED]
    if summary.signal is not None or recorder.stop.is_set():
        summary.status = RunStatus.INTERRUPTED
    elif summary.failed or any(states.get(k) in _FAILED for k in left) or ledger.run_has_failed(run_id):
        summary.status = RunStatus.FAILED  # --only: the run's other tasks count too
    elif left:  # never finished while any of its commands is not (a lost one, ...)
        summary.status = RunStatus.INTERRUPTED
    else:
        summary.status = RunStatus.FINISHED
    ledger.runner_ended()
    if ledger.other_runners(run_id):  # the run ends when its last runner does
        return
    ledger.update_run(run_id, status=summary.status, ended_at=time.time())
    try:
        ledger.backup()  # what `mlrunner ledger recover` starts from if the ledger is lost
    except Exception as exc:  # a backup that cannot be made never fails the run
        recorder.warn(f"cannot back the ledger up beside it: {exc}")

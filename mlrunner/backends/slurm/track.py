"""One submission of one task (a :class:`Track`) and how what it left is reported.

A job writes a result file per command attempt (:mod:`mlrunner.backends.slurm.job`); the
:class:`Reporter` reads them together with the job's Slurm state and turns them into
``Recorder.command_started`` / ``command_ended`` calls, each command's start and end
exactly once, also across runners (a reattached track ends an earlier runner's open
attempts instead of opening new ones, and skips ends that runner already recorded).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from mlrunner.backends.base import JobRef, Outcome, Placement, Recorder, WorkItem
from mlrunner.backends.slurm.cluster import JobState, command_status, failure_class
from mlrunner.backends.slurm.job import read_results
from mlrunner.status import AttemptStatus

if TYPE_CHECKING:
    from mlrunner.plan import Command

# what is left of a task to submit: the item and the commands, in order
Work: TypeAlias = "tuple[WorkItem, tuple[Command, ...]]"


@dataclass(frozen=True)
class Timing:
    """The backend's polling and patience (see :class:`~mlrunner.backends.slurm.SlurmBackend`)."""

    poll: float = 0.25  # result files, every poll seconds
    state_poll_max: float = 15.0  # squeue/sacct: adaptive from 0.5 s up to this
    unknown_grace: float = 120.0  # a job neither squeue nor sacct knows this long is gone
    result_settle: float = 1.0  # after a job ended: how long its result files may lag
    completed_settle: float = 60.0  # the same for a COMPLETED job (which did write them)


@dataclass
class Track:
    """One submission of one task: a job running ``commands`` in order."""

    item: WorkItem
    entry: dict[str, Any]
    commands: list[Command]
    reattached: bool = False
    previous: list[dict[str, Any]] = field(default_factory=list)
    next: int = 0  # first command whose end is not recorded yet
    open: dict[int, tuple[int, int]] = field(default_factory=dict)  # index -> (attempt id, restart)
    outcomes: dict[str, AttemptStatus] = field(default_factory=dict)  # command name -> recorded status
    done: bool = False
    outcome: AttemptStatus | None = None  # finished, or the status that stopped the task
    stopped_at: int | None = None  # index of the command that did not finish
    state: JobState | None = None
    terminal_since: float | None = None
    unknown_since: float | None = None
    waiting_for_state: bool = False

    @property
    def token(self) -> str:
        return str(self.entry["token"])

    @property
    def job_id(self) -> str | None:
        job_id = self.entry.get("job_id")
        return None if job_id is None else str(job_id)

    @property
    def results(self) -> Path:
        return Path(self.entry["results_dir"])

    def planned_log(self, index: int) -> Path:
        return Path(self.entry["commands"][index]["log_path"])

    def recorded_log(self, index: int, path: str) -> Path:
        """``path`` as the recorder named it when it is the planned log (relative stays relative)."""
        planned = self.entry["commands"][index]
        return Path(planned.get("log") or path) if path == planned["log_path"] else Path(path)

    def stop(self, status: AttemptStatus) -> None:
        """The track is over: ``status`` stopped it at its current command."""
        self.done, self.outcome, self.stopped_at = True, status, self.next


class Reporter:
    """Reports tracks' results and Slurm states to the recorder.

    ``stopping``: this runner cancelled the jobs, so a job that ends cancelled (or gone)
    is recorded ``interrupted``.
    """

    def __init__(self, recorder: Recorder, timing: Timing) -> None:
        self.recorder = recorder
        self.timing = timing
        self.stopping = False

    # ------------------------------------------------------------------ reading a track
    def settled(self, t: Track) -> bool:
        """The job ended and its result files had time to show up on a shared filesystem.

        A COMPLETED job exited 0, which the job only does after every command finished:
        its results must exist, so a missing one is waited for longer (NFS directory
        caches) before the command is called lost.
        """
        if t.state is None or not t.state.terminal or t.terminal_since is None:
            return False
        wait = self.timing.completed_settle if t.state.state == "COMPLETED" else self.timing.result_settle
        return time.monotonic() - t.terminal_since >= wait

    def advance(self, t: Track) -> None:
        """Record every start and end the track's result files and job state now tell."""
        if t.done:
            return
        results = read_results(t.results, t.token)
        t.waiting_for_state = False
        while t.next < len(t.commands):
            if not self._step(t, t.next, results.get(t.next)):
                return
        t.done, t.outcome = True, AttemptStatus.FINISHED

    def _step(self, t: Track, i: int, r: Mapping[str, Any] | None) -> bool:
        """Record what is known of command ``i`` (``r``: its result record); True: it finished."""
        if r is not None and i in t.open and int(r.get("restart", 0)) > t.open[i][1]:
            # the job was requeued (preemption) while this command ran: that attempt is over
            self.end(t, i, AttemptStatus.PREEMPTED, None, None, self.log(t, i, None))
        if r is None or r.get("status") == AttemptStatus.RUNNING:
            self._without_end(t, i, r)
            return False
        status, code, sig = str(r.get("status")), r.get("exit_code"), r.get("signal")
        if status == AttemptStatus.FINISHED:
            self.end(t, i, AttemptStatus.FINISHED, code, sig, self.log(t, i, r), r)
            t.next += 1
            return True
        if status == AttemptStatus.FAILED and sig is None:
            self.end(t, i, AttemptStatus.FAILED, code, sig, self.log(t, i, r), r)
            t.stop(AttemptStatus.FAILED)
            return False
        # killed by a signal, or told to stop: the job's final Slurm state names the reason
        if not (t.state is not None and t.state.terminal):
            if i not in t.open and self.recorded(t, i, r) is None:
                self.start(t, i, r)
            t.waiting_for_state = True
            return False
        final = command_status(status, sig, t.state, self.stopping)
        self.end(t, i, final, code, sig, self.log(t, i, r), r)
        t.stop(final)
        return False

    def _without_end(self, t: Track, i: int, r: Mapping[str, Any] | None) -> None:
        """Command ``i`` has no end record: wait while one may come, else Slurm's state names the end."""
        if not self.settled(t):
            if r is not None and i not in t.open:
                self.start(t, i, r)
            t.waiting_for_state = t.state is not None and t.state.terminal
            return
        result = None if r is None else AttemptStatus.RUNNING
        status = command_status(result, None, t.state, self.stopping)
        self.end(t, i, status, None, None, self.log(t, i, r), r)
        t.stop(status)

    def log(self, t: Track, index: int, r: Mapping[str, Any] | None) -> Path:
        if r is not None and r.get("log_path"):
            return t.recorded_log(index, str(r["log_path"]))
        planned = t.planned_log(index)
        slurm_log = t.entry.get("slurm_log")
        if not planned.exists() and slurm_log and os.path.exists(slurm_log):
            return Path(slurm_log)  # the job never started the command: Slurm's own log says why
        return t.recorded_log(index, str(planned))

    # ------------------------------------------------------------------ an earlier runner's records
    def previous(self, t: Track, command: str, job_id: str | None) -> dict[str, Any] | None:
        match = [a for a in t.previous if a.get("command") == command and str(a.get("job_id")) == str(job_id)]
        return match[-1] if match else None

    def recorded(self, t: Track, i: int, r: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """An earlier runner's ended attempt of this command in this job (reattached tracks)."""
        if not t.reattached:
            return None
        prev = self.previous(t, t.commands[i].name, (r or {}).get("job_id") or t.job_id)
        return prev if prev is not None and prev.get("ended_at") is not None else None

    def _adopt_open(self, t: Track, i: int, job_id: str | None, restart: int) -> bool:
        """An earlier runner started command ``i`` in this job and never ended it: take that attempt."""
        prev = self.previous(t, t.commands[i].name, job_id)
        attempt_id = None if prev is None else prev.get("attempt_id", prev.get("id"))
        if prev is None or prev.get("ended_at") is not None or attempt_id is None:
            return False
        t.open[i] = (int(attempt_id), restart)
        t.previous.remove(prev)
        return True

    # ------------------------------------------------------------------ to the recorder
    def start(self, t: Track, i: int, r: Mapping[str, Any] | None) -> None:
        given = r or {}
        job_id = given.get("job_id") or t.job_id
        restart = int(given.get("restart", 0))
        if t.reattached and self._adopt_open(t, i, job_id, restart):
            return
        gpus = given.get("gpus")
        node = given.get("node") or (t.state.node if t.state else None)
        placement = Placement(
            resource=given.get("resource") or "-",
            gpus=None if gpus is None else tuple(int(g) for g in gpus),
            job=JobRef(str(job_id), node) if job_id else None,
        )
        attempt = self.recorder.command_started(t.item, t.commands[i], placement, self.log(t, i, r or None))
        t.open[i] = (attempt, restart)

    def end(
        self,
        t: Track,
        i: int,
        status: AttemptStatus,
        exit_code: int | None,
        sig: int | None,
        log: Path,
        r: Mapping[str, Any] | None = None,
    ) -> None:
        command = t.commands[i]
        if i not in t.open:
            prev = self.recorded(t, i, r)
            if prev is not None and prev.get("status") == status:  # recorded before this runner came
                t.outcomes[command.name] = status
                return
            self.start(t, i, r)
        attempt, _ = t.open.pop(i)
        outcome = Outcome(status, exit_code, sig, failure_class(status))
        self.recorder.command_ended(attempt, t.item, command, outcome, log)
        t.outcomes[command.name] = status

    def close(self, t: Track, status: AttemptStatus) -> None:
        """Record every open or unstarted command of a track as ``status`` and stop it."""
        if t.next < len(t.commands):
            self.end(t, t.next, status, None, None, self.log(t, t.next, None))
        for i in list(t.open):
            self.end(t, i, status, None, None, self.log(t, i, None))
        t.stop(status)

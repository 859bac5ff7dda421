"""One ``execute`` call: claim, reattach, submit, then watch the jobs until all are recorded.

Watching polls the result files every ``poll`` seconds and Slurm (``squeue``/``sacct``)
adaptively, from 0.5 s up to ``state_poll_max``. A track that ended short of its last
command is resubmitted from the command that stopped it while ``--retries`` allow. When
``recorder.stop`` is set the jobs are cancelled and recorded ``interrupted``, unless the
run detaches (``options.extra["detach"]``); ``recorder.kill_now`` sends SIGKILL.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlrunner.backends.base import Recorder, RunOptions, WorkItem
from mlrunner.backends.slurm.cluster import JobState, cancel_jobs, query_states
from mlrunner.backends.slurm.reattach import Reattacher
from mlrunner.backends.slurm.registry import Registry
from mlrunner.backends.slurm.submit import Submitter
from mlrunner.backends.slurm.track import Reporter, Timing, Track, Work
from mlrunner.status import AttemptStatus

# outcomes --retries does not resubmit: success, and what a person asked for
NO_RETRY = frozenset({AttemptStatus.FINISHED, AttemptStatus.INTERRUPTED, AttemptStatus.CANCELLED})


class Session:
    """The state of one ``execute`` call."""

    def __init__(
        self,
        submitit: Any,
        recorder: Recorder,
        options: RunOptions,
        params: dict[str, Any],
        gpus: int | None,
        timing: Timing,
        submitted: list[str],
    ) -> None:
        self.recorder = recorder
        self.options = options
        self.timing = timing
        slurm_dir = Path(os.path.abspath(os.path.join(options.cwd, options.output))) / ".mlrunner" / "slurm"
        run_id = options.extra.get("run_id")
        folder = slurm_dir / (str(run_id) if run_id is not None else "run")
        self.registry = Registry(slurm_dir / "jobs")
        self.reporter = Reporter(recorder, timing)
        self.failures: dict[tuple[str, str], int] = {}
        self.submitter = Submitter(
            submitit, recorder, options, params, gpus, self.registry, folder, submitted, self.failures
        )
        self.tracks: list[Track] = []
        self.claimed: dict[str, WorkItem] = {}
        self.stop_deadline = 0.0
        self.detached = False
        self.cancelled: set[str] = set()  # task keys whose jobs `mlrunner cancel` stopped

    @property
    def stopping(self) -> bool:
        """This runner cancelled the jobs and now waits for Slurm to confirm."""
        return self.reporter.stopping

    # ------------------------------------------------------------------ main loop
    def run(self, items: Sequence[WorkItem]) -> None:
        try:
            for item in items:
                if self.recorder.stop.is_set():
                    break
                if self.recorder.claim(item):
                    self.claimed[item.task.key] = item
            reattacher = Reattacher(self.registry, self.reporter, self.timing)
            work = reattacher.adopt(list(self.claimed.values()), self.tracks, self._release)
            if work and not self.recorder.stop.is_set():
                self._submit(work)
            self._watch()
        except BaseException:
            # the run is failing: leave no job running unwatched (results stay for a resume)
            if not self.detached:
                cancel_jobs(t.job_id for t in self._live() if t.job_id)
            raise
        finally:
            for key in list(self.claimed):
                self._release(key)

    def _live(self) -> list[Track]:
        return [t for t in self.tracks if not t.done]

    def _watch(self) -> None:
        interval, last_state, last_cancel = 0.5, float("-inf"), float("-inf")
        while self._live():
            if time.monotonic() - last_cancel >= 1.0 and not self.stopping:  # mlrunner cancel
                last_cancel = time.monotonic()
                if self._cancel_asked():
                    last_state, interval = float("-inf"), 0.5
            if self.recorder.stop.is_set() and not self.stopping:
                if self._detach():
                    self.detached = True  # the jobs keep running; `run --resume` reattaches
                    return
                self._cancel()
                last_state = float("-inf")
            if self.stopping and self.recorder.kill_now.is_set() and self.stop_deadline:
                self._kill()
            live = self._live()
            urgent = self.stopping or any(t.waiting_for_state for t in live)
            if time.monotonic() - last_state >= (0.5 if urgent else interval):
                changed = self._refresh_states(live)
                last_state = time.monotonic()
                interval = 0.5 if changed else min(interval * 1.5, self.timing.state_poll_max)
            if self._advance(live):
                interval = 0.5  # something moves: watch Slurm closely again
            if self.stopping and time.monotonic() >= self.stop_deadline:
                for t in self._live():  # Slurm did not confirm in time (or Ctrl-C twice)
                    self._close(t, AttemptStatus.INTERRUPTED)
                return
            time.sleep(self.timing.poll)

    def _cancel_asked(self) -> bool:
        """scancel the jobs of the tasks `mlrunner cancel` asked for (Slurm then reports them
        CANCELLED, recorded ``cancelled``); True when there were any."""
        keys = self.recorder.cancelled() - self.cancelled
        if not keys:
            return False
        self.cancelled |= keys
        ids = [t.job_id for t in self._live() if t.job_id and t.item.task.key in keys]
        if ids:
            cancel_jobs(ids)
        return bool(ids)

    def _detach(self) -> bool:
        """``options.extra["detach"]``: a bool, or a callable asked now (the CLI's prompt)."""
        detach = self.options.extra.get("detach")
        return bool(detach() if callable(detach) else detach)

    def _cancel(self) -> None:
        """Stop: scancel every live job and give Slurm the grace period (and 30 s) to confirm."""
        self.reporter.stopping = True
        self.stop_deadline = time.monotonic() + self.options.grace + 30.0
        cancel_jobs(t.job_id for t in self._live() if t.job_id)

    def _kill(self) -> None:
        """Ctrl-C again: SIGKILL the jobs and record them now instead of waiting for Slurm."""
        ids = [t.job_id for t in self._live() if t.job_id]
        cancel_jobs(ids, kill=True)
        cancel_jobs(ids)
        self.stop_deadline = 0.0

    def _refresh_states(self, live: list[Track]) -> bool:
        ids = [t.job_id for t in live if t.job_id]
        states = query_states(ids)
        if states is None:
            return False
        changed = False
        now = time.monotonic()
        for t in live:
            if not t.job_id:
                continue
            st = states.get(t.job_id)
            if st is None:
                if t.unknown_since is None:
                    t.unknown_since = now
                if now - t.unknown_since < self.timing.unknown_grace:
                    continue
                st = JobState("GONE")
            else:
                t.unknown_since = None
            if st != t.state:
                changed = True
                t.state = st
                if not st.terminal:
                    t.terminal_since = None  # e.g. preempted, then requeued
                elif t.terminal_since is None:
                    t.terminal_since = now
        return changed

    def _advance(self, live: list[Track]) -> bool:
        """Record what each live track tells now; True: something moved."""
        moved = False
        for t in live:
            before = (t.next, len(t.open))
            self.reporter.advance(t)
            if before != (t.next, len(t.open)) or t.done:
                moved = True
            if t.done:
                self._finished(t)
        return moved

    def _close(self, t: Track, status: AttemptStatus) -> None:
        self.reporter.close(t, status)
        self._finished(t)

    # ------------------------------------------------------------------ end of a track
    def _finished(self, t: Track) -> None:
        if t.entry.get("settled"):
            return
        t.entry["settled"] = True
        self.registry.settle(t.token)
        item = t.item
        key = item.task.key
        if t.outcome not in NO_RETRY and t.stopped_at is not None and not self.stopping:
            failed = t.commands[t.stopped_at]
            n = self.failures.get((key, failed.name), 0) + 1
            self.failures[(key, failed.name)] = n
            if n <= self.options.retries and not self.recorder.stop.is_set():
                self._submit([(item, tuple(t.commands[t.stopped_at :]))])
                return
        if not any(not o.done for o in self.tracks if o.item.task.key == key):
            self._release(key)

    def _release(self, key: str) -> None:
        item = self.claimed.pop(key, None)
        if item is not None:
            self.recorder.release(item)

    def _submit(self, work: list[Work]) -> None:
        for gpus, group in self.submitter.groups(work):
            self.tracks.extend(self.submitter.submit_group(gpus, group))

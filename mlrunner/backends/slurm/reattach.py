"""Adopting earlier submissions of the claimed tasks (``run --resume``, or another ``run``).

Every submission left in the registry is looked at before anything is submitted: a job
still queued or running becomes a track to watch (never submitted twice); the results of
a job that ended while nobody watched are recorded (deduplicated against the ledger
through ``Recorder.previous_jobs``) and count as history, so only what did not finish is
submitted again; a job that died without a result is recorded ``lost``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from mlrunner.backends.base import WorkItem
from mlrunner.backends.slurm.cluster import JobState, find_jobs_by_comment, query_states
from mlrunner.backends.slurm.job import read_results
from mlrunner.backends.slurm.registry import Registry, age
from mlrunner.backends.slurm.track import Reporter, Timing, Track, Work
from mlrunner.status import AttemptStatus


class Reattacher:
    """Turns the registry's entries for the claimed tasks into tracks (see the module docstring)."""

    def __init__(self, registry: Registry, reporter: Reporter, timing: Timing) -> None:
        self.registry = registry
        self.reporter = reporter
        self.timing = timing

    def adopt(self, items: list[WorkItem], tracks: list[Track], release: Callable[[str], None]) -> list[Work]:
        """Add the adopted tracks to ``tracks``; ``release`` a task that has nothing left to do.

        Returns what still has to be submitted.
        """
        by_key = self._entries(items)
        ids = [e["job_id"] for es in by_key.values() for e in es if e.get("job_id")]
        states = query_states(ids) if ids else {}
        work: list[Work] = []
        for item in items:
            entries = sorted(by_key.get(item.task.key, []), key=lambda e: float(e.get("submitted_at") or 0))
            entries = [e for e in entries if e.get("job_id")]
            if not entries:
                work.append((item, item.commands))
                continue
            history, live = self._adopt_task(item, entries, states, tracks)
            if not live:
                left = tuple(c for c in item.commands if history.get(c.name) != AttemptStatus.FINISHED)
                if left:
                    work.append((item, left))
                else:
                    release(item.task.key)
        return work

    def _entries(self, items: list[WorkItem]) -> dict[str, list[dict[str, Any]]]:
        """The registry's entries of these tasks by task key; a lost job id is looked for first."""
        by_key: dict[str, list[dict[str, Any]]] = {}
        wanted = {item.task.key for item in items}
        for entry in self.registry.active():
            if entry["task_key"] in wanted:
                by_key.setdefault(entry["task_key"], []).append(entry)
        for entries in by_key.values():
            for entry in entries:
                if not entry.get("job_id"):
                    self.find_lost_submission(entry)
        return by_key

    def _adopt_task(
        self,
        item: WorkItem,
        entries: list[dict[str, Any]],
        states: Mapping[str, JobState] | None,
        tracks: list[Track],
    ) -> tuple[dict[str, AttemptStatus], bool]:
        """Track each earlier job of one task, oldest first: (what ended jobs recorded, any live)."""
        previous = list(self.reporter.recorder.previous_jobs(item))
        history: dict[str, AttemptStatus] = {}
        live = False
        by_name = {c.name: c for c in item.task.commands}
        for entry in entries:
            commands = [by_name[c["name"]] for c in entry["commands"] if c["name"] in by_name]
            if len(commands) != len(entry["commands"]):  # the task changed since: forget it
                self.registry.settle(str(entry["token"]))
                continue
            t = Track(item, entry, commands, reattached=True, previous=previous)
            tracks.append(t)
            st = states.get(entry["job_id"]) if states is not None else None
            if states is not None and st is None and age(entry) >= self.timing.unknown_grace:
                st = JobState("GONE")
            t.state = st
            if st is not None and st.terminal:
                t.terminal_since = time.monotonic() - self.timing.result_settle  # long over
            self.reporter.advance(t)
            if t.done:  # ended while nobody watched: history, not this run's outcome
                t.entry["settled"] = True
                self.registry.settle(t.token)
                history.update(t.outcomes)
            else:
                live = True
        return history, live

    def find_lost_submission(self, entry: dict[str, Any]) -> None:
        """A runner died between registering a submission and learning its job id."""
        for r in read_results(entry["results_dir"], entry["token"]).values():
            if r.get("job_id"):
                entry["job_id"] = r["job_id"]
                self.registry.write(entry)
                return
        found = find_jobs_by_comment(f"mlrunner:{entry.get('batch')}")
        index = entry.get("array_index")
        if found:
            match = [j for j in found if j.endswith(f"_{index}")] if index is not None else found
            if len(match) == 1 or (index is None and len(found) == 1):
                entry["job_id"] = match[0] if match else found[0]
                self.registry.write(entry)
                return
        if found is not None:  # asked and not found: it never reached Slurm
            self.registry.settle(str(entry["token"]))

"""The Slurm backend: one task = one Slurm job (an element of a job array), via submitit.

Submission: the items are grouped by the number of GPUs they need; each group becomes
one job array (``--gres=gpu:N``, ``--array=0-K%array_parallelism``) whose element runs
:func:`mlrunner.backends.slurm.job.run_task` for one task. submitit writes its files
under ``<output>/.mlrunner/slurm/<run_id>/``.

Recording: compute nodes never write the ledger. A job writes one result file per
command attempt into ``<exp>/.mlrunner-results/``; this process polls those files (cheap,
every ``poll`` seconds) and Slurm's view of the jobs (``squeue``, then ``sacct`` for jobs
``squeue`` has forgotten; adaptive, from 0.5 s up to ``state_poll_max``), and reports to
the :class:`~mlrunner.backends.base.Recorder`. A job that ended without writing a final
result is recorded from its Slurm state (CANCELLED -> cancelled, TIMEOUT -> timeout,
NODE_FAIL -> node_fail, PREEMPTED -> preempted, OUT_OF_MEMORY -> oom, else lost), after
``result_settle`` seconds (result files on a shared filesystem may show up late; a job
that COMPLETED did write them, so for it ``completed_settle`` seconds). A job
that neither ``squeue`` nor ``sacct`` knows for ``unknown_grace`` seconds is dead.

Reattaching: every submission is registered in ``<output>/.mlrunner/slurm/jobs/<token>.json``
*before* ``sbatch`` runs (the batch token also goes into the job's ``--comment``), and moves
to ``jobs/done/`` once all its outcomes are recorded. A later ``execute`` (``run --resume``,
or another ``run`` on the same output) claims a task, then looks there first: a job still
queued or running is waited for (never submitted twice); results of a job that ended
while nobody watched are recorded (deduplicated against the ledger through
``Recorder.previous_jobs``) and count as history, so what did not finish is resubmitted;
a job that died without a result is recorded ``lost`` and resubmitted.

Stopping: when ``recorder.stop`` is set the jobs are cancelled (``scancel``) and recorded
``interrupted``, unless ``options.extra["detach"]`` is true (or a callable that returns
true when asked at that moment, e.g. an interactive prompt): then they keep running and
``execute`` returns at once. ``recorder.kill_now`` sends SIGKILL through ``scancel``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrunner.backends.base import Backend, Recorder, RunOptions, WorkItem
from mlrunner.backends.slurm import job as slurm_job
from mlrunner.backends.slurm.cluster import (
    INSTALL_HINT,
    SLURM_KEYS,
    STATE_STATUS,
    TERMINAL_STATES,
    JobState,
    cancel_jobs,
    command_status,
    expand_job_ids,
    find_jobs_by_comment,
    gpus_override,
    import_submitit,
    query_states,
    require_slurm_client,
    submitit_parameters,
    validate_slurm_options,
)
from mlrunner.errors import BackendError

if TYPE_CHECKING:
    from mlrunner.plan import Command

# outcomes --retries does not resubmit: success, and what a person asked for
NO_RETRY = frozenset({"finished", "interrupted", "cancelled"})


# ---------------------------------------------------------------------- registry
class Registry:
    """Submissions not yet fully recorded: ``<output>/.mlrunner/slurm/jobs/<token>.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, entry: Mapping[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        slurm_job.atomic_write_json(self.root / f"{entry['token']}.json", entry)

    def active(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return out
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                with open(self.root / name, encoding="utf-8") as f:
                    entry = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(entry, dict) and entry.get("token") and entry.get("task_key"):
                out.append(entry)
        return out

    def settle(self, token: str) -> None:
        done = self.root / "done"
        done.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(self.root / f"{token}.json", done / f"{token}.json")
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------- tracking
@dataclass
class _Track:
    """One submission of one task: a job running ``commands`` in order."""

    item: WorkItem
    entry: dict[str, Any]
    commands: list[Command]
    reattached: bool = False
    previous: list[dict[str, Any]] = field(default_factory=list)
    next: int = 0  # first command whose end is not recorded yet
    open: dict[int, tuple[int, int]] = field(default_factory=dict)  # index -> (attempt id, restart)
    outcomes: dict[str, str] = field(default_factory=dict)  # command name -> recorded status
    done: bool = False
    outcome: str | None = None  # 'finished', or the status that stopped the task
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
        return self.entry.get("job_id")

    @property
    def results(self) -> Path:
        return Path(self.entry["results_dir"])

    def planned_log(self, index: int) -> Path:
        return Path(self.entry["commands"][index]["log_path"])

    def recorded_log(self, index: int, path: str) -> Path:
        """``path`` as the recorder named it when it is the planned log (relative stays relative)."""
        planned = self.entry["commands"][index]
        return Path(planned.get("log") or path) if path == planned["log_path"] else Path(path)


class SlurmBackend(Backend):
    """Runs each work item as one Slurm job; see the module docstring."""

    name = "slurm"

    def __init__(
        self,
        *,
        poll: float = 0.25,
        state_poll_max: float = 15.0,
        unknown_grace: float = 120.0,
        result_settle: float = 1.0,
        completed_settle: float = 60.0,
    ) -> None:
        self.poll = poll
        self.state_poll_max = state_poll_max
        self.unknown_grace = unknown_grace
        self.result_settle = result_settle
        self.completed_settle = completed_settle
        self.submitted: list[str] = []  # job ids this backend submitted (all execute calls)

    def execute(self, items: Sequence[WorkItem], recorder: Recorder, options: RunOptions) -> None:
        slurm = dict(options.extra.get("slurm") or {})
        params = submitit_parameters(slurm)
        override = gpus_override(slurm)
        submitit = import_submitit()
        require_slurm_client()
        _Session(self, submitit, recorder, options, params, override).run(items)


class _Session:
    """The state of one ``execute`` call."""

    def __init__(
        self,
        backend: SlurmBackend,
        submitit: Any,
        recorder: Recorder,
        options: RunOptions,
        params: dict[str, Any],
        gpus: int | None,
    ) -> None:
        self.backend = backend
        self.submitit = submitit
        self.recorder = recorder
        self.options = options
        self.params = params
        self.gpus = gpus
        output = Path(os.path.abspath(os.path.join(options.cwd, options.output)))
        run_id = options.extra.get("run_id")
        self.folder = output / ".mlrunner" / "slurm" / (str(run_id) if run_id is not None else "run")
        self.registry = Registry(output / ".mlrunner" / "slurm" / "jobs")
        self.cwd = os.path.abspath(options.isolate_dir or options.cwd)
        self.tracks: list[_Track] = []
        self.claimed: dict[str, WorkItem] = {}
        self.failures: dict[tuple[str, str], int] = {}
        self.stopping = False
        self.stop_deadline = 0.0
        self.detached = False

    # ------------------------------------------------------------------ main loop
    def run(self, items: Sequence[WorkItem]) -> None:
        try:
            for item in items:
                if self.recorder.stop.is_set():
                    break
                if self.recorder.claim(item):
                    self.claimed[item.task.key] = item
            work = self._reattach(list(self.claimed.values()))
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

    def _live(self) -> list[_Track]:
        return [t for t in self.tracks if not t.done]

    def _watch(self) -> None:
        interval, last_state = 0.5, float("-inf")
        while self._live():
            rec = self.recorder
            if rec.stop.is_set() and not self.stopping:
                if self._detach():
                    self.detached = True  # the jobs keep running; `run --resume` reattaches
                    return
                self.stopping = True
                self.stop_deadline = time.monotonic() + self.options.grace + 30.0
                cancel_jobs(t.job_id for t in self._live() if t.job_id)
                last_state = float("-inf")
            if self.stopping and rec.kill_now.is_set() and self.stop_deadline:
                ids = [t.job_id for t in self._live() if t.job_id]
                cancel_jobs(ids, kill=True)
                cancel_jobs(ids)
                self.stop_deadline = 0.0  # record them now; do not wait for Slurm
            live = self._live()
            urgent = self.stopping or any(t.waiting_for_state for t in live)
            if time.monotonic() - last_state >= (0.5 if urgent else interval):
                changed = self._refresh_states(live)
                last_state = time.monotonic()
                interval = 0.5 if changed else min(interval * 1.5, self.backend.state_poll_max)
            for t in live:
                before = (t.next, len(t.open))
                self._advance(t)
                if before != (t.next, len(t.open)) or t.done:
                    interval = 0.5  # something moves: watch Slurm closely again
                if t.done:
                    self._finished(t)
            if self.stopping and time.monotonic() >= self.stop_deadline:
                for t in self._live():  # Slurm did not confirm in time (or Ctrl-C twice)
                    self._close(t, "interrupted")
                return
            time.sleep(self.backend.poll)

    def _detach(self) -> bool:
        """``options.extra["detach"]``: a bool, or a callable asked now (the CLI's prompt)."""
        detach = self.options.extra.get("detach")
        return bool(detach() if callable(detach) else detach)

    def _refresh_states(self, live: list[_Track]) -> bool:
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
                if now - t.unknown_since < self.backend.unknown_grace:
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

    # ------------------------------------------------------------------ results -> recorder
    def _settled(self, t: _Track) -> bool:
        """The job ended and its result files had time to show up on a shared filesystem.

        A COMPLETED job exited 0, which the job only does after every command finished:
        its results must exist, so a missing one is waited for longer (NFS directory
        caches) before the command is called lost.
        """
        if t.state is None or not t.state.terminal or t.terminal_since is None:
            return False
        wait = self.backend.completed_settle if t.state.state == "COMPLETED" else self.backend.result_settle
        return time.monotonic() - t.terminal_since >= wait

    def _advance(self, t: _Track) -> None:
        if t.done:
            return
        results = slurm_job.read_results(t.results, t.token)
        t.waiting_for_state = False
        while t.next < len(t.commands):
            i = t.next
            r = results.get(i)
            if r is not None and i in t.open and int(r.get("restart", 0)) > t.open[i][1]:
                # the job was requeued (preemption) while this command ran: that attempt is over
                self._end(t, i, "preempted", None, None, self._log(t, i, None))
            if r is None or r.get("status") == "running":
                if not self._settled(t):
                    if r is not None and i not in t.open:
                        self._start(t, i, r)
                    t.waiting_for_state = t.state is not None and t.state.terminal
                    return
                status = command_status(None if r is None else "running", None, t.state, self.stopping)
                self._end(t, i, status, None, None, self._log(t, i, r), r)
                return self._stop_track(t, status)
            status, code, sig = str(r.get("status")), r.get("exit_code"), r.get("signal")
            if status == "finished":
                self._end(t, i, "finished", code, sig, self._log(t, i, r), r)
                t.next += 1
                continue
            if status == "failed" and sig is None:
                self._end(t, i, "failed", code, sig, self._log(t, i, r), r)
                return self._stop_track(t, "failed")
            # killed by a signal, or told to stop: the job's final Slurm state names the reason
            if not (t.state is not None and t.state.terminal):
                if i not in t.open and self._recorded(t, i, r) is None:
                    self._start(t, i, r)
                t.waiting_for_state = True
                return
            final = command_status(status, sig, t.state, self.stopping)
            self._end(t, i, final, code, sig, self._log(t, i, r), r)
            return self._stop_track(t, final)
        t.done, t.outcome = True, "finished"

    def _stop_track(self, t: _Track, status: str) -> None:
        t.done, t.outcome, t.stopped_at = True, status, t.next

    def _log(self, t: _Track, index: int, r: Mapping[str, Any] | None) -> Path:
        if r is not None and r.get("log_path"):
            return t.recorded_log(index, str(r["log_path"]))
        planned = t.planned_log(index)
        slurm_log = t.entry.get("slurm_log")
        if not planned.exists() and slurm_log and os.path.exists(slurm_log):
            return Path(slurm_log)  # the job never started the command: Slurm's own log says why
        return t.recorded_log(index, str(planned))

    def _previous(self, t: _Track, command: str, job_id: str | None) -> dict[str, Any] | None:
        match = [a for a in t.previous if a.get("command") == command and str(a.get("job_id")) == str(job_id)]
        return match[-1] if match else None

    def _recorded(self, t: _Track, i: int, r: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """An earlier runner's ended attempt of this command in this job (reattached tracks)."""
        if not t.reattached:
            return None
        prev = self._previous(t, t.commands[i].name, (r or {}).get("job_id") or t.job_id)
        return prev if prev is not None and prev.get("ended_at") is not None else None

    def _start(self, t: _Track, i: int, r: Mapping[str, Any] | None) -> None:
        command = t.commands[i]
        job_id = (r or {}).get("job_id") or t.job_id
        restart = int((r or {}).get("restart", 0))
        if t.reattached:
            prev = self._previous(t, command.name, job_id)
            attempt_id = None if prev is None else prev.get("attempt_id", prev.get("id"))
            if prev is not None and prev.get("ended_at") is None and attempt_id is not None:
                t.open[i] = (int(attempt_id), restart)  # started by an earlier runner, never ended
                t.previous.remove(prev)
                return
        r = r or {}
        attempt = self.recorder.command_started(
            t.item,
            command,
            resource=r.get("resource") or "-",
            gpus=r.get("gpus"),
            log_path=self._log(t, i, r or None),
            job_id=job_id,
            node=r.get("node") or (t.state.node if t.state else None),
        )
        t.open[i] = (attempt, restart)

    def _end(
        self,
        t: _Track,
        i: int,
        status: str,
        exit_code: int | None,
        sig: int | None,
        log: Path,
        r: Mapping[str, Any] | None = None,
    ) -> None:
        command = t.commands[i]
        if i not in t.open:
            prev = self._recorded(t, i, r)
            if prev is not None and prev.get("status") == status:  # recorded before this runner came
                t.outcomes[command.name] = status
                return
            self._start(t, i, r)
        attempt, _ = t.open.pop(i)
        self.recorder.command_ended(
            attempt, t.item, command, status=status, exit_code=exit_code, signal=sig, log_path=log
        )
        t.outcomes[command.name] = status

    def _close(self, t: _Track, status: str) -> None:
        """Record every open or unstarted command of a track as ``status`` and end it."""
        if t.next < len(t.commands):
            self._end(t, t.next, status, None, None, self._log(t, t.next, None))
        for i in list(t.open):
            self._end(t, i, status, None, None, self._log(t, i, None))
        self._stop_track(t, status)
        self._finished(t)

    # ------------------------------------------------------------------ end of a track
    def _finished(self, t: _Track) -> None:
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

    # ------------------------------------------------------------------ reattach
    def _reattach(self, items: list[WorkItem]) -> list[tuple[WorkItem, tuple[Command, ...]]]:
        """Adopt earlier submissions of the claimed tasks; returns what still has to be submitted."""
        by_key: dict[str, list[dict[str, Any]]] = {}
        wanted = {item.task.key for item in items}
        for entry in self.registry.active():
            if entry["task_key"] in wanted:
                by_key.setdefault(entry["task_key"], []).append(entry)
        for entries in by_key.values():
            for entry in entries:
                if not entry.get("job_id"):
                    self._find_lost_submission(entry)
        ids = [e["job_id"] for es in by_key.values() for e in es if e.get("job_id")]
        states = query_states(ids) if ids else {}
        work: list[tuple[WorkItem, tuple[Command, ...]]] = []
        for item in items:
            entries = sorted(by_key.get(item.task.key, []), key=lambda e: float(e.get("submitted_at") or 0))
            entries = [e for e in entries if e.get("job_id")]
            if not entries:
                work.append((item, item.commands))
                continue
            previous = list(self.recorder.previous_jobs(item))
            history: dict[str, str] = {}
            live = False
            by_name = {c.name: c for c in item.task.commands}
            for entry in entries:
                commands = [by_name[c["name"]] for c in entry["commands"] if c["name"] in by_name]
                if len(commands) != len(entry["commands"]):  # the task changed since: forget it
                    self.registry.settle(str(entry["token"]))
                    continue
                t = _Track(item, entry, commands, reattached=True, previous=previous)
                self.tracks.append(t)
                st = states.get(entry["job_id"]) if states is not None else None
                if states is not None and st is None and _age(entry) >= self.backend.unknown_grace:
                    st = JobState("GONE")
                t.state = st
                if st is not None and st.terminal:
                    t.terminal_since = time.monotonic() - self.backend.result_settle  # long over
                self._advance(t)
                if t.done:  # ended while nobody watched: history, not this run's outcome
                    t.entry["settled"] = True
                    self.registry.settle(t.token)
                    history.update(t.outcomes)
                else:
                    live = True
            if not live:
                left = tuple(c for c in item.commands if history.get(c.name) != "finished")
                if left:
                    work.append((item, left))
                else:
                    self._release(item.task.key)
        return work

    def _find_lost_submission(self, entry: dict[str, Any]) -> None:
        """A runner died between registering a submission and learning its job id."""
        for r in slurm_job.read_results(entry["results_dir"], entry["token"]).values():
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

    # ------------------------------------------------------------------ submission
    def _gpus(self, item: WorkItem) -> int:
        return self.gpus if self.gpus is not None else int(getattr(item.task, "gpus", 1))

    def _submit(self, work: list[tuple[WorkItem, tuple[Command, ...]]]) -> None:
        groups: dict[int, list[tuple[WorkItem, tuple[Command, ...]]]] = {}
        for item, commands in work:
            groups.setdefault(self._gpus(item), []).append((item, commands))
        for gpus, group in sorted(groups.items()):
            self._submit_group(gpus, group)

    def _submit_group(self, gpus: int, group: list[tuple[WorkItem, tuple[Command, ...]]]) -> None:
        batch = uuid.uuid4().hex[:12]
        entries: list[dict[str, Any]] = []
        payloads: list[dict[str, Any]] = []
        for n, (item, commands) in enumerate(group):
            token = f"{batch}-{n}"
            exp = os.path.abspath(os.path.join(self.options.cwd, item.task.output_dir))
            results = str(slurm_job.results_dir(exp))
            given = [self.recorder.log_path(item, c) for c in commands]
            logs = [os.path.abspath(os.path.join(self.options.cwd, g)) for g in given]
            entry: dict[str, Any] = {
                "version": 1,
                "token": token,
                "batch": batch,
                "array_index": n if len(group) > 1 else None,
                "task_key": item.task.key,
                "task_name": item.task.name,
                "output_dir": exp,
                "results_dir": results,
                "run_id": self.options.extra.get("run_id"),
                "submitted_at": time.time(),
                "submitter": {"host": os.uname().nodename, "pid": os.getpid()},
                "job_id": None,
                "slurm_log": None,
                "commands": [
                    {"name": c.name, "log_path": log, "log": str(g)}
                    for c, log, g in zip(commands, logs, given, strict=True)
                ],
            }
            self.registry.write(entry)
            entries.append(entry)
            payloads.append(
                {
                    "token": token,
                    "cwd": self.cwd,
                    "results_dir": results,
                    "grace": float(self.options.grace),
                    "commands": [
                        {"name": c.name, "text": c.text, "log_path": log}
                        for c, log in zip(commands, logs, strict=True)
                    ],
                }
            )
        params = dict(self.params)
        extra = params.pop("additional_parameters", None)
        if gpus > 0:
            params["gres"] = f"gpu:{gpus}"
        params.update(job_name="mlrunner", comment=f"mlrunner:{batch}", use_srun=False)
        if extra:
            params["additional_parameters"] = extra
        try:
            executor = self.submitit.SlurmExecutor(folder=self.folder, max_num_timeout=0)
            executor.update_parameters(**params)
            quiet = io.StringIO()  # submitit prints sbatch's stderr; it goes into the error instead
            with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet), executor.batch():
                jobs = [executor.submit(slurm_job.run_task, p) for p in payloads]
        except Exception as exc:  # sbatch refused (bad partition, account ...) or submitit rejected a value
            for entry in entries:
                self.registry.settle(entry["token"])
            message = str(exc).strip() or type(exc).__name__
            raise BackendError(
                f"Slurm did not accept the jobs: {message}",
                key="slurm",
                hint="check the slurm: section of params.yaml (partition, account, qos, time ...) "
                "against `sinfo` and `sacctmgr show assoc user=$USER`",
            ) from exc
        for item_work, entry, job in zip(group, entries, jobs, strict=True):
            entry["job_id"] = str(job.job_id)
            entry["slurm_log"] = str(job.paths.stderr)
            self.registry.write(entry)
            self.backend.submitted.append(str(job.job_id))
            by_name = {c.name: c for c in item_work[1]}
            commands = [by_name[c["name"]] for c in entry["commands"]]
            self.tracks.append(_Track(item_work[0], entry, commands))


def _age(entry: Mapping[str, Any]) -> float:
    return time.time() - float(entry.get("submitted_at") or 0)


__all__ = [  # the option and state helpers live in slurm_cluster; re-exported here
    "INSTALL_HINT",
    "SLURM_KEYS",
    "STATE_STATUS",
    "TERMINAL_STATES",
    "JobState",
    "Registry",
    "SlurmBackend",
    "cancel_jobs",
    "command_status",
    "expand_job_ids",
    "gpus_override",
    "import_submitit",
    "query_states",
    "submitit_parameters",
    "validate_slurm_options",
]

"""The run loop's side of the backend interface (:class:`mlrunner.backends.base.Recorder`):
claims and attempts in the ledger, the ``param``/``stat`` files, events for the CLI."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrunner import expdir as expfiles
from mlrunner import procs
from mlrunner.backends.base import Adopted, Outcome, Placement, ProcessRef, WorkItem
from mlrunner.errors import STORAGE_ERRNOS, storage_error
from mlrunner.events import Emit, Ended, RunSummary, Started, WarningMessage
from mlrunner.run.orphans import settle_orphans
from mlrunner.status import UNFINISHED_STATUSES, AttemptStatus, FailureClass

if TYPE_CHECKING:
    from mlrunner.ledger import Ledger
    from mlrunner.plan import Command
    from mlrunner.snapshot import Snapshot

# A local command's 'running' goes into its stat file only once it has run this long: a
# command that ends sooner gets one stat write (its end) instead of two. The ledger has
# the attempt as running from its start.
RUNNING_STAT_DELAY_S = 0.1


class RunRecorder:
    """The scheduler's side of the backend interface: ledger, param/stat files, events."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        run_id: int,
        emit: Emit,
        summary: RunSummary,
        time_str: str,
        no_subdir: bool,
        force: bool,
        snapshot: Snapshot | None,
        snapshot_id: str | None,
        grace: float = 10.0,
        env_file: str | None = None,
    ) -> None:
        self.grace = grace
        self.env_file = env_file  # the run's env.json, hard-linked into each experiment dir
        self.ledger = ledger
        self.run_id = run_id
        self.emit = emit
        self.summary = summary
        self.time_str = time_str
        self.no_subdir = no_subdir
        self.force = force
        self.snapshot = snapshot
        self.snapshot_id = snapshot_id
        self.started_at = time.time()  # cancel requests from then on apply to this run
        self.stop = threading.Event()
        self.kill_now = threading.Event()
        self.signal_received: int | None = None
        self._lock = threading.Lock()
        self._stats: dict[str, dict[str, str]] = {}
        self._scripts: dict[str, dict[str, str]] = {}
        self._param_due: set[str] = set()
        # (task, command) -> (status of its last attempt, dir)
        self._final: dict[tuple[str, str], tuple[AttemptStatus, str]] = {}
        self._released: set[str] = set()  # claims dropped with a last command_ended
        self._files = expfiles.Writer()  # param and stat files ('running' ones delayed)
        self._snapshot_checked = False  # a write_snapshot has checked the run-level files
        self._takeover: set[str] = set()  # tasks claimed with an attempt of a dead runner open
        self._processes: list[tuple[int, ProcessRef]] = []  # to record with the next batch

    def tally(self) -> None:
        """Count each command once, by the status of its last attempt (retries included)."""
        s = self.summary
        for status, out in self._final.values():
            if status is AttemptStatus.FINISHED:
                s.finished += 1
            elif status in UNFINISHED_STATUSES:
                s.interrupted += 1
            else:
                s.failed += 1
                if out not in s.failed_dirs:
                    s.failed_dirs.append(out)

    def recorded(self) -> set[tuple[str, str]]:
        """(task key, command) of every command this recorder saw end (or skip)."""
        with self._lock:
            return set(self._final)

    def batch(self) -> AbstractContextManager[None]:
        """Ledger calls made within share one transaction (:meth:`mlrunner.ledger.store.Ledger.batch`);
        the processes started since the last batch are recorded first."""
        return self._batch()

    @contextmanager
    def _batch(self) -> Iterator[None]:
        with self.ledger.batch():
            self._record_processes()
            yield

    def _record_processes(self) -> None:
        with self._lock:
            todo, self._processes = self._processes, []
        for attempt, p in todo:
            self.ledger.set_attempt_process(attempt, pid=p.pid, pgid=p.pgid, proc_start=p.start)

    def process_started(self, attempt_id: int, process: ProcessRef) -> None:
        with self._lock:
            self._processes.append((attempt_id, process))

    def warn(self, message: str) -> None:
        self.emit(WarningMessage(message))

    def cancelled(self) -> set[str]:
        return self.ledger.cancelled_since(self.started_at)

    def command_cancelled(self, item: WorkItem, command: Command) -> None:
        """A cancelled command that never started: an attempt of it, cancelled at once."""
        self._never_started(item, command, AttemptStatus.CANCELLED)

    def _never_started(
        self, item: WorkItem, command: Command, status: AttemptStatus, log_tail: str | None = None
    ) -> None:
        """An attempt of a command that never started, ended at once with ``status``."""
        task = item.task
        attempt = self.ledger.start_attempt(
            run_id=self.run_id, task_key=task.key, command=command.name, resource=None, gpus=None,
            log_path=None, snapshot_id=self.snapshot_id,
        )  # fmt: skip
        self.ledger.end_attempt(attempt, status=status, log_tail=log_tail)
        with self._lock:
            self._final[(task.key, command.name)] = (status, task.output_dir)
        self.emit(
            Ended(
                position=item.position,
                total=item.total,
                output_dir=task.output_dir,
                command=command.name,
                status=status,
                exit_code=None,
                signal=None,
                failure_class=None,
                log="-",
            )
        )

    # claims ---------------------------------------------------------------
    def claim(self, item: WorkItem) -> bool:
        key = item.task.key
        states: dict[str, str] = {}  # latest attempt status per command, read with the claim
        runners: dict[str, procs.ProcessId] = {}  # ... and the runner that made it
        if not self.ledger.claim_task(key, self.run_id, states=states, runners=runners):
            return False
        if any(
            AttemptStatus(states[c.name]).failed and self.ledger.runner_alive(runners[c.name]) is not False
            for c in item.commands
            if c.name in states
        ):  # a runner sharing this sweep (alive) failed it: final for every runner of it
            self.ledger.release_task(key)
            return False
        if AttemptStatus.RUNNING in states.values() and item.adopted is None:
            # taken over from a runner that died meanwhile: its command may still run; it is
            # settled by adopt(), outside this claim's transaction (it reads /proc and files)
            with self._lock:
                self._takeover.add(key)
        if not self.force:  # another runner may have finished some of it meanwhile
            left = tuple(c for c in item.commands if states.get(c.name) != AttemptStatus.FINISHED)
            if not left:
                self.ledger.release_task(key)
                return False
            item.commands = left
        try:
            self._prepare_dir(item)
        except OSError as exc:
            if exc.errno in STORAGE_ERRNOS:
                raise storage_error(exc, item.task.output_dir) from exc
            # this experiment's dir cannot be made (removed meanwhile, a permission): its
            # command fails, with the reason; the rest of the sweep goes on
            self._failed_before_start(item, f"cannot prepare {item.task.output_dir}: {exc.strerror or exc}")
            self.ledger.release_task(key)
            return False
        return True

    def _prepare_dir(self, item: WorkItem) -> None:
        """The experiment dir, what earlier runs wrote in it, and the run's git snapshot and
        environment linked into it."""
        key, out = item.task.key, item.task.output_dir
        fresh = False
        try:
            os.mkdir(out)
            fresh = True
            stat: dict[str, str] = {}
            scripts: dict[str, str] = {}
        except FileExistsError:  # keep what earlier runs recorded for the other commands
            self._guard(out, self._files.flush)  # (and this run: --no-subdir shares one dir)
            stat = expfiles.read_stat(out)
            old = expfiles.read_param(out) or {}
            scripts = dict(old["_scripts"]) if isinstance(old.get("_scripts"), dict) else {}
        except FileNotFoundError:
            os.makedirs(out, exist_ok=True)
            stat, scripts = {}, {}
        with self._lock:
            self._stats[key] = stat
            self._scripts[key] = scripts
            self._param_due.add(key)
        if self.snapshot is not None:
            from mlrunner import snapshot as gitsnap

            if fresh and self._snapshot_checked:  # the run-level files are known good: link them
                gitsnap.link_snapshot(self.snapshot, out)
            else:
                gitsnap.write_snapshot(self.snapshot, out)
                self._snapshot_checked = True
        if self.env_file is not None:
            from mlrunner.envinfo import link_env

            link_env(self.env_file, out)

    def _guard(self, exp_dir: str, write: Callable[[], None]) -> None:
        """A write of the param/stat view files: a full or read-only disk stops the run
        (StorageError); another error (the dir removed...) is a warning: the ledger has it."""
        try:
            write()
        except OSError as exc:
            if exc.errno in STORAGE_ERRNOS:
                raise storage_error(exc, exp_dir) from exc
            self.warn(f"cannot write {exc.filename or exp_dir}: {exc.strerror or exc} (the ledger has it)")

    def _failed_before_start(self, item: WorkItem, reason: str) -> None:
        """The item's first command failed before it could start: an attempt of it, failed
        at once with ``reason`` as its log tail."""
        command = item.commands[0]
        self.warn(f"'{command.name}' of {item.task.output_dir} failed: {reason}")
        self._never_started(item, command, AttemptStatus.FAILED, log_tail=f"mlrunner: {reason}\n")

    def previous_jobs(self, item: WorkItem) -> list[dict[str, Any]]:
        """The task's attempts that ran as (Slurm) jobs, from any run, oldest first."""
        return [
            dict(a, attempt_id=a["id"]) for a in self.ledger.attempts_for(item.task.key) if a.get("job_id")
        ]

    def release(self, item: WorkItem) -> None:
        with self._lock:
            released = item.task.key in self._released
            self._released.discard(item.task.key)
        if not released:
            self.ledger.release_task(item.task.key)
        with self._lock:
            self._stats.pop(item.task.key, None)
            self._scripts.pop(item.task.key, None)
            self._param_due.discard(item.task.key)

    def adopt(self, item: WorkItem) -> Adopted | None:
        """The item's command a dead runner left running, to watch instead of start (see
        :mod:`mlrunner.run.orphans`); commands that ended meanwhile leave ``item.commands``."""
        key = item.task.key
        with self._lock:
            takeover = key in self._takeover
            self._takeover.discard(key)
        adopted = item.adopted
        if takeover:
            adopted = settle_orphans(self.ledger, self.emit, key).get(key)
            if not self.force:
                states = self.ledger.command_states([key])
                item.commands = tuple(
                    c for c in item.commands if states.get((key, c.name)) != AttemptStatus.FINISHED
                )
        if adopted is None or not item.commands or item.commands[0].name != adopted.command:
            return None
        self.emit(
            Started(
                position=item.position,
                total=item.total,
                output_dir=item.task.output_dir,
                command=adopted.command,
                resource=adopted.resource,
            )
        )
        return adopted

    # attempts -------------------------------------------------------------
    def planned_log(self, item: WorkItem, command: Command) -> str:
        name = expfiles.log_name(command.name, self.time_str, item.task.name if self.no_subdir else None)
        return os.path.join(item.task.output_dir, name)

    def log_path(self, item: WorkItem, command: Command) -> Path:
        base = self.planned_log(item, command)
        path, n = base, 1
        while os.path.exists(path):  # a retry within the same second keeps the earlier log
            n += 1
            path = f"{base}.{n}"
        return Path(path)

    def command_started(self, item: WorkItem, command: Command, placement: Placement, log_path: Path) -> int:
        """Record a new attempt as running; returns the attempt id."""
        from mlrunner.plan import shell_line
        from mlrunner.resources import visible_devices

        task = item.task
        proc, job = placement.process, placement.job
        pid = proc.pid if proc is not None else None
        proc_start = proc.start if proc is not None else None
        if pid is not None and proc_start is None:
            proc_start = procs.proc_start_time(pid)
        attempt = self.ledger.start_attempt(
            run_id=self.run_id,
            task_key=task.key,
            command=command.name,
            resource=placement.resource,
            gpus=list(placement.gpus) if placement.gpus is not None else None,
            log_path=os.path.abspath(log_path),  # absolute: a resume may run elsewhere
            snapshot_id=self.snapshot_id,
            job_id=job.job_id if job is not None else None,
            node=job.node if job is not None else None,
            pid=pid,
            pgid=proc.pgid if proc is not None else None,
            proc_start=proc_start,
        )
        # a batch job may outlive this process: its stat is written at once
        delay = RUNNING_STAT_DELAY_S if job is None else 0.0
        with self._lock:
            stat = self._stats.setdefault(task.key, {})
            stat[command.name] = AttemptStatus.RUNNING.value
            self._guard(task.output_dir, lambda: self._files.stat(task.output_dir, stat, delay))
            write_param = task.key in self._param_due
            self._param_due.discard(task.key)
            if write_param:  # once per task: every command's line, with this slot and the log names
                scripts = self._scripts.setdefault(task.key, {})
                for c in item.commands:
                    path = log_path if c is command else self.planned_log(item, c)
                    scripts[c.name] = shell_line(c, visible_devices(placement.resource), path, task.env)
                scripts_copy = dict(scripts)
        if write_param:
            params: dict[str, Any] = dict(task.params)  # the user's params
            params.update(
                _name=task.name, _output=task.output_dir, _time=self.time_str, _scripts=scripts_copy
            )
            self._guard(task.output_dir, lambda: self._files.param(task.output_dir, params))
        self.emit(
            Started(
                position=item.position,
                total=item.total,
                output_dir=task.output_dir,
                command=command.name,
                resource=placement.resource,
                job_id=job.job_id if job is not None else None,
                node=job.node if job is not None else None,
                log=str(log_path),
            )
        )
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
        """Record an attempt's end (see :class:`mlrunner.backends.base.Recorder`).

        ``last``: the backend is done with the item after this end; its claim is dropped
        in the same ledger transaction and :meth:`release` then has nothing left to do.
        """
        status = AttemptStatus(outcome.status)
        failure_class = outcome.failure_class
        tail = None
        if status is not AttemptStatus.FINISHED:
            tail = expfiles.log_tail(log_path) or outcome.reason
            if failure_class is None and status is AttemptStatus.FAILED:
                from mlrunner.resources import classify_failure

                failure_class = classify_failure(tail or "")
        task = item.task
        self.ledger.end_attempt(
            attempt_id,
            status=status,
            exit_code=outcome.exit_code,
            signal=outcome.signal,
            failure_class=failure_class,
            log_tail=tail,
            release=last,
        )
        with self._lock:
            if last:
                self._released.add(task.key)
            stat = self._stats.setdefault(task.key, {})
            stat[command.name] = status.value
            self._guard(task.output_dir, lambda: self._files.stat(task.output_dir, stat))
            self._final[(task.key, command.name)] = (status, task.output_dir)
        self.emit(
            Ended(
                position=item.position,
                total=item.total,
                output_dir=task.output_dir,
                command=command.name,
                status=status,
                exit_code=outcome.exit_code,
                signal=outcome.signal,
                failure_class=failure_class,
                log=str(log_path),
                log_tail=tail,
            )
        )
        return failure_class or status

    def close(self) -> None:
        """Record what is pending; write the delayed stat files now and stop their thread;
        raise a write that failed."""
        try:
            self._record_processes()
        finally:
            self._guard("the experiment dirs", self._files.close)

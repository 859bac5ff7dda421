"""The run loop: plan, snapshot, open the ledger, decide what is unfinished, run, record.

``Runner(request, emit).run()`` is what ``run`` does. It never prints: progress goes to
``emit`` as :class:`mlrunner.events.Event` objects, problems are raised as
:class:`mlrunner.errors.MlrunnerError`.

Resume policy for commands a crashed runner left alive: they are *stopped* (SIGTERM to
their process group and descendants, SIGKILL after the grace period), recorded as
``lost`` and run again. Their exit status cannot be known by a process that is not their
parent, so waiting for them would record a result we cannot trust.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlrunner import expdir as expfiles
from mlrunner import procs
from mlrunner.backends.base import Backend, RunOptions, WorkItem
from mlrunner.errors import UsageError
from mlrunner.events import Emit, Event, RunSummary, ignore

TIME_FORMAT = "%Y%m%d.%H%M%S"
LOG_TAIL_BYTES = 4096
# A local command's 'running' goes into its stat file only once it has run this long: a
# command that ends sooner gets one stat write (its end) instead of two. The ledger has
# the attempt as running from its start.
RUNNING_STAT_DELAY_S = 0.1
INTERRUPTED = ("interrupted", "lost", "cancelled", "preempted")

# options a resumed run takes from the stored run, and those the resume command line may change
_STORED = (
    "params_path",
    "output",
    "title",
    "commands",
    "resources",
    "force",
    "debug",
    "sample",
    "seed",
    "no_subdir",
    "isolate",
    "backend",
    "time",
    "slurm",
)
_RESUME_MAY_CHANGE = ("retries", "grace", "detach")


@dataclass
class RunRequest:
    params_path: str = "params.yaml"
    output: str = "output"
    title: str | None = None
    commands: list[str] | None = None
    resources: list[str] | None = None
    force: bool = False
    dry_run: bool = False
    debug: bool = False
    sample: int | None = None
    seed: int | None = None
    no_subdir: bool = False
    retries: int = 0
    grace: float = 10.0
    isolate: bool = False
    backend: str = "local"
    detach: bool | Callable[[], bool] = False  # a callable is asked on Ctrl-C (Slurm)
    slurm: dict[str, Any] = field(default_factory=dict)  # CLI overrides of the slurm: section
    resume: bool = False
    run_id: int | None = None
    time: str | None = None
    argv: list[str] = field(default_factory=list)
    cwd: str = field(default_factory=os.getcwd)

    def options(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in _STORED}
        out.update({k: getattr(self, k) for k in _RESUME_MAY_CHANGE})
        if callable(out["detach"]):  # an interactive question is not an option to store
            out["detach"] = False
        return out


class Runner:
    def __init__(self, request: RunRequest, emit: Emit = ignore) -> None:
        self.req = request
        self.emit = emit

    # ------------------------------------------------------------------ entry
    def run(self) -> RunSummary:
        from mlrunner import plan as sweep
        from mlrunner.spec import load_spec, parse_spec

        req = self.req
        now = time.strftime(TIME_FORMAT)
        ledger = None
        run_row: dict[str, Any] | None = None
        if req.resume:
            ledger, run_row = self._open_resumed(req)
            spec = parse_spec(run_row["params_text"], run_row["params_path"] or req.params_path)
        else:
            req.time = now
            spec = load_spec(req.params_path)
        if req.resources:
            from mlrunner.spec import parse_resource_option

            spec = dataclasses.replace(spec, resource=parse_resource_option(list(req.resources)))

        plan = sweep.plan(
            spec,
            output=req.output,
            title=req.title,
            commands=req.commands,
            sample=req.sample,
            seed=req.seed,
            no_subdir=req.no_subdir,
            time=req.time or now,
        )
        tasks = list(plan.tasks)
        force = req.force
        if req.debug:
            tasks = tasks[:1]
            force = True
        n_commands = sum(len(t.commands) for t in tasks)
        summary = RunSummary(run_id=None, n_tasks=len(tasks), n_commands=n_commands)
        self.emit(Event("orphans", {"params": list(plan.orphans)}))
        for warning in plan.warnings:
            self.emit(Event("warning", {"message": warning}))
        backend = self._backend(spec, tasks)  # validates resources before anything is written

        if req.dry_run:
            self._dry_run(tasks, spec, now)
            summary.status = "dry-run"
            self.emit(Event("summary", {"summary": summary}))
            return summary

        out = Path(req.output)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot create the output dir '{out}': {exc.strerror}", key="-o/--output"
            ) from exc
        if not req.resume:
            copy = os.path.basename(req.params_path) + (f".{req.title}" if req.title else "")
            expfiles.atomic_write(out / copy, spec.text)

        snapshot, snap_dict, isolate_dir = self._snapshot(run_row, now)
        if ledger is None:
            from mlrunner.ledger import Ledger

            ledger = Ledger(req.output)
        try:
            if run_row is not None:
                run_id = int(run_row["id"])
                ledger.update_run(run_id, status="running")
            else:
                run_id = ledger.create_run(
                    argv=req.argv,
                    cwd=req.cwd,
                    params_path=os.path.abspath(req.params_path),
                    params_text=spec.text,
                    options=req.options(),
                    snapshot=snap_dict,
                    backend=req.backend,
                )
            summary.run_id = run_id
            ledger.register_tasks(
                run_id,
                [
                    {
                        "key": t.key,
                        "name": t.name,
                        "output_dir": os.path.abspath(t.output_dir),
                        "params": t.params,
                        "commands": [c.name for c in t.commands],
                    }
                    for t in tasks
                ],
            )
            self.emit(
                Event(
                    "plan",
                    {"tasks": len(tasks), "commands": n_commands, "run_id": run_id, "resumed": req.resume},
                )
            )
            self._reap_orphans(ledger)
            items = self._unfinished(ledger, tasks, force, run_id, summary)
            recorder = RunRecorder(
                ledger=ledger,
                run_id=run_id,
                emit=self.emit,
                summary=summary,
                time_str=now,
                no_subdir=req.no_subdir,
                force=force,
                snapshot=snapshot,
                snapshot_id=snap_dict.get("snapshot_id") if snap_dict else None,
                grace=req.grace,
            )
            options = RunOptions(
                output=req.output,
                cwd=req.cwd,
                force=force,
                debug=req.debug,
                retries=req.retries,
                grace=req.grace,
                isolate_dir=isolate_dir,
                extra={
                    "slurm": dict(spec.slurm_map or {}, **req.slurm),
                    "detach": req.detach,
                    "run_id": run_id,
                },
            )
            try:
                with _signals(recorder, self.emit), ledger.background_checkpoints():
                    if items:
                        backend.execute(items, recorder, options)
            except BaseException:
                try:
                    recorder.close()  # what is queued still reaches the experiment dirs
                except Exception:  # the first error is the one to report
                    pass
                raise
            recorder.close()
            summary.signal = recorder.signal_received
            recorder.tally()
            summary.not_started = max(
                0, n_commands - summary.skipped - summary.finished - summary.failed - summary.interrupted
            )
            if summary.signal is not None or recorder.stop.is_set():
                summary.status = "interrupted"
            elif summary.failed:
                summary.status = "failed"
            else:
                summary.status = "finished"
            ledger.update_run(run_id, status=summary.status, ended_at=time.time())
        finally:
            ledger.close()
        self.emit(Event("summary", {"summary": summary}))
        return summary

    # ------------------------------------------------------------------ pieces
    def _open_resumed(self, req: RunRequest) -> tuple[Any, dict[str, Any]]:
        from mlrunner.ledger import Ledger

        ledger = Ledger(req.output, create=False)
        row = ledger.get_run(req.run_id)
        if row is None:
            ledger.close()
            which = f"run {req.run_id}" if req.run_id is not None else "any run"
            raise UsageError(
                f"no ledger entry for {which} under '{req.output}'",
                key="--resume",
                hint="`mlrunner ledger ls -o OUTPUT` lists the runs that can be resumed",
            )
        stored = row.get("options") or {}
        for key in _STORED:
            if key in stored:
                setattr(req, key, stored[key])
        for key in _RESUME_MAY_CHANGE:
            if getattr(req, key) == getattr(RunRequest, key, None) and key in stored:
                setattr(req, key, stored[key])
        self.emit(Event("info", {"message": f"Resuming run {row['id']} (started {row.get('started_at')})"}))
        return ledger, row

    def _backend(self, spec: Any, tasks: Sequence[Any]) -> Backend:
        if self.req.backend == "slurm":
            from mlrunner.backends.slurm import SlurmBackend, validate_slurm_options

            validate_slurm_options(dict(spec.slurm_map or {}, **self.req.slurm))
            return SlurmBackend()
        if self.req.backend != "local":
            raise UsageError(
                f"unknown backend '{self.req.backend}'", key="--backend", hint="use 'local' or 'slurm'"
            )
        from mlrunner.backends.local import LocalBackend
        from mlrunner.resources import SlotAllocator

        allocator = SlotAllocator(spec.resource)
        for need in sorted({t.gpus for t in tasks}):
            allocator.check(need)
        return LocalBackend(allocator)

    def _dry_run(self, tasks: Sequence[Any], spec: Any, now: str) -> None:
        from mlrunner.plan import log_name, shell_line

        slots = spec.resource.slots or ("auto",)
        total = len(tasks)
        for i, task in enumerate(tasks):
            slot = slots[i % len(slots)]
            for command in task.commands:
                log = Path(
                    task.output_dir, log_name(command.name, now, task.name if self.req.no_subdir else None)
                )
                self.emit(
                    Event(
                        "dry",
                        {
                            "position": i + 1,
                            "total": total,
                            "output_dir": task.output_dir,
                            "command": command.name,
                            "line": shell_line(command, slot, log),
                        },
                    )
                )

    def _snapshot(
        self, run_row: dict[str, Any] | None, now: str
    ) -> tuple[Any, dict[str, Any] | None, str | None]:
        """Take the run's git snapshot (once); on resume compare with the stored one."""
        from mlrunner import snapshot as gitsnap

        req = self.req
        hidden = Path(req.output, ".mlrunner")
        stored = (run_row or {}).get("snapshot") or None
        if run_row is not None and req.isolate and stored:
            snap = gitsnap.Snapshot.from_dict(stored)
        else:
            work = hidden / "snapshots" / f"{now}-{os.getpid()}"
            snap, warnings = gitsnap.take_snapshot(req.cwd, work_dir=work, exclude=[req.output])
            for w in warnings:
                self.emit(Event("warning", {"message": w}))
            if stored and not gitsnap.same_code(stored, snap):
                self.emit(
                    Event(
                        "warning",
                        {
                            "message": (
                                "the code changed since this run started: run snapshot "
                                f"{_short(stored.get('snapshot_id') or stored.get('commit'))}, now "
                                f"{_short(snap.snapshot_id or snap.commit)}; "
                                "new attempts record the new snapshot"
                            )
                        },
                    )
                )
        isolate_dir = None
        if req.isolate:
            if snap.vcs is None:
                raise UsageError(
                    "--isolate needs a git repository: the working directory is not in one",
                    key="--isolate",
                    hint="run from inside your project's git checkout, or drop --isolate",
                )
            run_key = (snap.snapshot_id or "head")[:12]
            root = gitsnap.materialize(snap, hidden / "worktrees" / run_key)
            isolate_dir = os.path.normpath(os.path.join(root, snap.subdir or "."))
        return snap, snap.to_dict(), isolate_dir

    def _reap_orphans(self, ledger: Any) -> None:
        reap_orphans(ledger, self.emit, self.req.grace)

    def _unfinished(
        self, ledger: Any, tasks: Sequence[Any], force: bool, run_id: int, summary: RunSummary
    ) -> list[WorkItem]:
        states = ledger.command_states([t.key for t in tasks])
        resume_force = force and self.req.resume
        items: list[WorkItem] = []
        total = len(tasks)
        for i, task in enumerate(tasks):
            stat: dict[str, str] | None = None
            run_done: set[str] | None = None
            remaining = []
            for command in task.commands:
                state = states.get((task.key, command.name))
                if state is None and not self.req.resume:
                    if stat is None:  # experiment dirs written by mlrunner 0.5.9 carry only a stat file
                        stat = expfiles.read_stat(task.output_dir) if os.path.isdir(task.output_dir) else {}
                    if stat.get(command.name) == "finished":
                        state = "finished"
                done = state == "finished"
                if done and resume_force:  # a forced run resumes what *it* has not finished
                    if run_done is None:
                        run_done = {
                            a["command"]
                            for a in ledger.attempts_for(task.key)
                            if a["run_id"] == run_id and a["status"] == "finished"
                        }
                    done = command.name in run_done
                elif force:
                    done = False
                if done:
                    summary.skipped += 1
                    self.emit(
                        Event(
                            "skip",
                            {
                                "position": i + 1,
                                "total": total,
                                "output_dir": task.output_dir,
                                "command": command.name,
                            },
                        )
                    )
                else:
                    remaining.append(command)
            if remaining:
                items.append(WorkItem(task=task, commands=tuple(remaining), position=i + 1, total=total))
        return items


def reap_orphans(ledger: Any, emit: Emit, grace: float, task_key: str | None = None) -> None:
    """Settle attempts whose runner died: stop a command still alive, record them ``lost``."""
    for att in ledger.orphaned_attempts(task_key) if task_key else ledger.orphaned_attempts():
        if att.get("job_id"):  # a Slurm job: the Slurm backend reattaches to it
            continue
        alive = procs.is_alive(att.get("host"), att.get("boot_id"), att.get("pid"), att.get("proc_start"))
        if alive:
            emit(
                Event(
                    "warning",
                    {
                        "message": (
                            f"stopping '{att.get('command')}' (pid {att.get('pid')}) of "
                            f"{att.get('output_dir') or att.get('task_key')}: "
                            "its runner died; it will run again"
                        )
                    },
                )
            )
            procs.terminate_tree(int(att["pid"]), att.get("pgid"), att.get("proc_start"), grace=grace)
        ledger.end_attempt(att["id"], status="lost")


def _short(sha: str | None) -> str:
    return (sha or "none")[:12]


class RunRecorder:
    """The scheduler's side of the backend interface: ledger, param/stat files, events."""

    def __init__(
        self,
        *,
        ledger: Any,
        run_id: int,
        emit: Emit,
        summary: RunSummary,
        time_str: str,
        no_subdir: bool,
        force: bool,
        snapshot: Any,
        snapshot_id: str | None,
        grace: float = 10.0,
    ) -> None:
        self.grace = grace
        self.ledger = ledger
        self.run_id = run_id
        self.emit = emit
        self.summary = summary
        self.time_str = time_str
        self.no_subdir = no_subdir
        self.force = force
        self.snapshot = snapshot
        self.snapshot_id = snapshot_id
        self.stop = threading.Event()
        self.kill_now = threading.Event()
        self.signal_received: int | None = None
        self._lock = threading.Lock()
        self._stats: dict[str, dict[str, str]] = {}
        self._scripts: dict[str, dict[str, str]] = {}
        self._param_due: set[str] = set()
        self._final: dict[tuple[str, str], tuple[str, str]] = {}  # (task, command) -> (status, dir)
        self._released: set[str] = set()  # claims dropped with a last command_ended
        self._files = expfiles.Writer()  # param and stat files ('running' ones delayed)
        self._snapshot_checked = False  # a write_snapshot has checked the run-level files

    def tally(self) -> None:
        """Count each command once, by the status of its last attempt (retries included)."""
        s = self.summary
        for status, out in self._final.values():
            if status == "finished":
                s.finished += 1
            elif status in INTERRUPTED:
                s.interrupted += 1
            else:
                s.failed += 1
                if out not in s.failed_dirs:
                    s.failed_dirs.append(out)

    def batch(self) -> AbstractContextManager[None]:
        """Ledger calls made within share one transaction (:meth:`mlrunner.ledger.store.Ledger.batch`)."""
        return self.ledger.batch()

    # claims ---------------------------------------------------------------
    def claim(self, item: WorkItem) -> bool:
        key = item.task.key
        states: dict[str, str] = {}  # latest attempt status per command, read with the claim
        if not self.ledger.claim_task(key, self.run_id, states=states):
            return False
        if "running" in states.values():
            # taken over from a runner that died meanwhile: its command may still be alive
            reap_orphans(self.ledger, self.emit, self.grace, key)
        if not self.force:  # another runner may have finished some of it meanwhile
            left = tuple(c for c in item.commands if states.get(c.name) != "finished")
            if not left:
                self.ledger.release_task(key)
                return False
            item.commands = left
        out = item.task.output_dir
        fresh = False
        try:
            os.mkdir(out)
            fresh = True
            stat: dict[str, str] = {}
            scripts: dict[str, str] = {}
        except FileExistsError:  # keep what earlier runs recorded for the other commands
            self._files.flush()  # (and this run: --no-subdir puts every task in one dir)
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
        return True

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

    # attempts -------------------------------------------------------------
    def planned_log(self, item: WorkItem, command: Any) -> str:
        from mlrunner.plan import log_name

        name = log_name(command.name, self.time_str, item.task.name if self.no_subdir else None)
        return os.path.join(item.task.output_dir, name)

    def log_path(self, item: WorkItem, command: Any) -> Path:
        base = self.planned_log(item, command)
        path, n = base, 1
        while os.path.exists(path):  # a retry within the same second keeps the earlier log
            n += 1
            path = f"{base}.{n}"
        return Path(path)

    def command_started(
        self,
        item: WorkItem,
        command: Any,
        *,
        resource: str,
        gpus: Sequence[int] | None,
        log_path: Path,
        pid: int | None = None,
        pgid: int | None = None,
        job_id: str | None = None,
        node: str | None = None,
        proc_start: int | None = None,
    ) -> int:
        from mlrunner.plan import shell_line

        task = item.task
        attempt = self.ledger.start_attempt(
            run_id=self.run_id,
            task_key=task.key,
            command=command.name,
            resource=resource,
            gpus=list(gpus) if gpus is not None else None,
            log_path=str(log_path),
            snapshot_id=self.snapshot_id,
            job_id=job_id,
            node=node,
            pid=pid,
            pgid=pgid,
            proc_start=proc_start if proc_start is not None or pid is None else procs.proc_start_time(pid),
        )
        # a batch job may outlive this process: its stat is written at once
        delay = RUNNING_STAT_DELAY_S if job_id is None else 0.0
        with self._lock:
            stat = self._stats.setdefault(task.key, {})
            stat[command.name] = "running"
            self._files.stat(task.output_dir, stat, delay)
            write_param = task.key in self._param_due
            self._param_due.discard(task.key)
            if write_param:  # once per task: every command's line, with this slot and the log names
                scripts = self._scripts.setdefault(task.key, {})
                for c in item.commands:
                    path = log_path if c is command else self.planned_log(item, c)
                    scripts[c.name] = shell_line(c, resource, path)
                scripts_copy = dict(scripts)
        if write_param:
            params = dict(task.params)
            params.update(
                _name=task.name, _output=task.output_dir, _time=self.time_str, _scripts=scripts_copy
            )
            self._files.param(task.output_dir, params)
        self.emit(Event("start", self._event_data(item, command, resource, job_id=job_id, node=node)))
        return attempt

    def command_ended(
        self,
        attempt_id: int,
        item: WorkItem,
        command: Any,
        *,
        status: str,
        exit_code: int | None,
        signal: int | None,
        log_path: Path,
        failure_class: str | None = None,
        last: bool = False,
    ) -> str:
        """Record an attempt's end (see :class:`mlrunner.backends.base.Recorder`).

        ``last``: the backend is done with the item after this end; its claim is dropped
        in the same ledger transaction and :meth:`release` then has nothing left to do.
        """
        tail = None
        if status != "finished":
            tail = _tail(log_path)
            if failure_class is None and status == "failed":
                from mlrunner.resources import classify_failure

                failure_class = classify_failure(tail or "")
        task = item.task
        self.ledger.end_attempt(
            attempt_id,
            status=status,
            exit_code=exit_code,
            signal=signal,
            failure_class=failure_class,
            log_tail=tail,
            release=last,
        )
        with self._lock:
            if last:
                self._released.add(task.key)
            stat = self._stats.setdefault(task.key, {})
            stat[command.name] = status
            self._files.stat(task.output_dir, stat)
            self._final[(task.key, command.name)] = (status, task.output_dir)
        data = self._event_data(item, command, None)
        data.update(
            {
                "status": status,
                "exit_code": exit_code,
                "signal": signal,
                "failure_class": failure_class,
                "log": str(log_path),
            }
        )
        self.emit(Event("finish" if status == "finished" else "fail", data))
        return failure_class or status

    def close(self) -> None:
        """Write the delayed stat files now and stop their thread; raise a write that failed."""
        self._files.close()

    def _event_data(self, item: WorkItem, command: Any, resource: str | None, **extra: Any) -> dict[str, Any]:
        data = {
            "position": item.position,
            "total": item.total,
            "output_dir": item.task.output_dir,
            "command": command.name,
            "resource": resource,
        }
        data.update(extra)
        return data


def _tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


class _signals:
    """Within the block: SIGINT/SIGTERM ask the run to stop; a second SIGINT kills at once."""

    def __init__(self, recorder: RunRecorder, emit: Emit) -> None:
        self.recorder = recorder
        self.emit = emit
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        rec = self.recorder
        if rec.stop.is_set():
            if signum == signal.SIGINT:
                rec.kill_now.set()
            return
        rec.signal_received = signum
        rec.stop.set()
        self.emit(Event("stopping", {"signal": signum}))

    def __enter__(self) -> _signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

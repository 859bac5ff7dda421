"""The run loop: plan, snapshot, open the ledger, decide what is unfinished, run, record.

``Runner(request, emit).run()`` is what ``run`` does, one method per step of
docs/architecture.md ("The run, step by step"). It never prints: progress goes to ``emit``
as :mod:`mlrunner.events` objects, problems are raised as
:class:`mlrunner.errors.MlrunnerError`. What the backend does with the commands is
recorded by :class:`mlrunner.run.recorder.RunRecorder`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrunner import expdir as expfiles
from mlrunner.backends.base import Adopted, Backend, RunOptions, WorkItem
from mlrunner.errors import STORAGE_ERRNOS, MlrunnerError, UsageError, storage_error
from mlrunner.events import (
    Emit,
    InfoMessage,
    Orphans,
    PlanReady,
    RunSummary,
    Skipped,
    Summary,
    WarningMessage,
    ignore,
)
from mlrunner.run.close import close_run
from mlrunner.run.dry import dry_run
from mlrunner.run.limits import time_limits
from mlrunner.run.orphans import settle_orphans
from mlrunner.run.reconcile import reconcile
from mlrunner.run.recorder import RunRecorder
from mlrunner.run.request import RunRequest
from mlrunner.run.signals import stop_on_signals
from mlrunner.status import AttemptStatus, RunStatus

if TYPE_CHECKING:
    from mlrunner.envinfo import EnvProbe
    from mlrunner.ledger import Ledger
    from mlrunner.plan import Task
    from mlrunner.snapshot import Snapshot
    from mlrunner.spec import Spec

TIME_FORMAT = "%Y%m%d.%H%M%S"


@dataclass(frozen=True)
class _Resumed:
    """The run being resumed: its ledger (open) and its row."""

    ledger: Ledger
    row: dict[str, Any]


@dataclass(frozen=True)
class _Code:
    """The run's git snapshot, as stored, and where commands run under ``--isolate``; the
    run's environment fingerprint: its ``env.json`` (linked into each experiment dir), hash."""

    snapshot: Snapshot
    stored: dict[str, Any]
    isolate_dir: str | None
    env_file: str | None = None
    env_hash: str | None = None


class Runner:
    """``ask_detach``: asked on Ctrl-C under Slurm unless the request says ``detach``
    (the CLI's prompt at a terminal): True leaves the submitted jobs running."""

    def __init__(
        self, request: RunRequest, emit: Emit = ignore, ask_detach: Callable[[], bool] | None = None
    ) -> None:
        self.request = request
        self.emit = emit
        self.ask_detach = ask_detach
        self._skipped: set[tuple[str, str]] = set()  # (task key, command) finished before
        self._timeouts: dict[str, float] = {}  # command (or "*") -> seconds
        self._stall: float | None = None

    # ------------------------------------------------------------------ entry
    def run(self) -> RunSummary:
        now = time.strftime(TIME_FORMAT)
        resumed = self._open_resumed() if self.request.resume else None
        req = self._resolve(resumed, now)  # resume: the stored options, but for those given
        probe = None
        try:
            if not req.dry_run:  # the environment fingerprint's child processes start first:
                from mlrunner.envinfo import EnvProbe  # they run while the spec loads and git works

                probe = EnvProbe(req.cwd)
            spec = self._load_spec(req, resumed)  # 1
            if spec.notify is not None:  # its targets are checked now; a dry run sends nothing
                from mlrunner.notify import Notifier

                notifier = Notifier(spec.notify, spec.path, self.emit, req.output)
                self.emit = self.emit if req.dry_run else notifier
            tasks = self._plan(req, spec, now)  # 2
            backend = self._build_backend(req, spec, tasks)  # 3
            summary = RunSummary(run_id=None, n_tasks=len(tasks), n_commands=_n_commands(tasks))
            if req.dry_run:
                dry_run(req, spec, tasks, summary, now, self.emit)
            else:
                assert probe is not None
                code = self._snapshot(req, spec, resumed, now, probe)  # 4
                with self._ledger(req, resumed) as ledger:
                    ledger.db.on_busy = lambda message: self.emit(WarningMessage(message))
                    run_id, adopted = self._open_run(ledger, req, spec, tasks, code, resumed, summary)  # 5
                    items = self._unfinished(ledger, req, tasks, run_id, summary, adopted)  # 6
                    recorder = self._execute(ledger, req, spec, backend, items, code, summary, now)  # 7, 8
                    close_run(ledger, run_id, recorder, summary, tasks, self._skipped)
        except OSError as exc:  # the run's own files (the params copy, the snapshot...)
            if exc.errno in STORAGE_ERRNOS:
                raise storage_error(exc) from exc
            raise UsageError(
                f"cannot write {exc.filename or 'a file of the run'}: {exc.strerror or exc}"
            ) from exc
        finally:
            if probe is not None:
                probe.close()
            if resumed is not None:
                resumed.ledger.close()
        self.emit(Summary(summary))
        return summary

    # ------------------------------------------------------------------ the steps
    def _open_resumed(self) -> _Resumed:
        from mlrunner.ledger import Ledger

        req = self.request
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
        started = row.get("started_at")
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "at an unknown time"
        )
        self.emit(InfoMessage(f"Resuming run {row['id']} (started {when})"))
        return _Resumed(ledger, row)

    def _resolve(self, resumed: _Resumed | None, now: str) -> RunRequest:
        """The request this run runs: a new run's gets its time, a resumed run's takes the
        stored options (but for those given explicitly, see :meth:`RunRequest.resumed`)."""
        if resumed is not None:
            stored = dict(resumed.row.get("options") or {})
            stored.setdefault("cwd", resumed.row.get("cwd"))  # runs stored before options had it
            return self.request.resumed(stored)
        seed = self.request.seed
        if seed is None:  # chosen now and stored, so a resume draws and shuffles as this run
            seed = int.from_bytes(os.urandom(4), "big") >> 1
        return dataclasses.replace(self.request, time=now, seed=seed)

    def _load_spec(self, req: RunRequest, resumed: _Resumed | None) -> Spec:
        """Step 1: params.yaml (a resumed run: the text it stored) -> a validated Spec."""
        from mlrunner.spec import load_spec, parse_resource_option, parse_spec

        if resumed is not None:
            row = resumed.row
            spec = parse_spec(row["params_text"], row["params_path"] or req.params_path)
        else:
            spec = load_spec(req.params_path)
        if req.resources:
            spec = dataclasses.replace(spec, resource=parse_resource_option(list(req.resources)))
        return spec

    def _plan(self, req: RunRequest, spec: Spec, now: str) -> list[Task]:
        """Step 2: the tasks (``--debug``: the first only); orphan params, plan warnings;
        the seed, when this run chose it and something was drawn with it."""
        from mlrunner import plan as sweep

        plan = sweep.plan(
            spec,
            # --isolate: commands run in a checkout elsewhere, so {_output} must be absolute
            # for their files to reach the experiment dir
            output=os.path.join(req.cwd, req.output) if req.isolate else req.output,
            title=req.title,
            commands=list(req.commands) if req.commands is not None else None,
            sample=req.sample,
            seed=req.seed,
            no_subdir=req.no_subdir,
            time=req.time or now,
            order=req.order,
            max_tasks=req.max_tasks if req.max_tasks is not None else sweep.MAX_TASKS,
            allow_orphans=req.allow_orphans,
        )
        tasks = list(plan.tasks)
        if req.only is not None:
            tasks = sweep.only_tasks(tasks, req.only)
        if req.debug:
            tasks = tasks[:1]
        self.emit(Orphans(tuple(plan.orphans)))
        if plan.drew and self.request.seed is None and not req.resume:
            self.emit(InfoMessage(f"Seed: {plan.seed} (of random draws and order; --seed {plan.seed} again)"))
        for warning in plan.warnings:
            self.emit(WarningMessage(warning))
        return tasks

    def _build_backend(self, req: RunRequest, spec: Spec, tasks: Sequence[Task]) -> Backend:
        """Step 3: the backend, its resources (and the time limits) checked before anything
        is written."""
        self._timeouts, self._stall = time_limits(req, spec)
        if req.backend == "slurm":
            from mlrunner.backends.slurm import SlurmBackend, validate_slurm_options

            validate_slurm_options(_slurm_options(req, spec))
            return SlurmBackend()
        if req.backend != "local":
            raise UsageError(
                f"unknown backend '{req.backend}'", key="--backend", hint="use 'local' or 'slurm'"
            )
        from mlrunner.backends.local import LocalBackend
        from mlrunner.resources import SlotAllocator

        allocator = SlotAllocator(spec.resource)
        for need in sorted({t.gpus for t in tasks}):
            allocator.check(need)
        return LocalBackend(allocator)

    def _snapshot(
        self, req: RunRequest, spec: Spec, resumed: _Resumed | None, now: str, probe: EnvProbe
    ) -> _Code:
        """Step 4: the output root with the params file's copy; the run's git snapshot
        (once; a resume compares it with the stored one) and environment fingerprint
        (probed meanwhile, written once as the run's env.json); the ``--isolate`` worktree."""
        from mlrunner import envinfo
        from mlrunner import snapshot as gitsnap

        out = Path(req.output)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot create the output dir '{out}': {exc.strerror}", key="-o/--output"
            ) from exc
        if resumed is None:
            copy = os.path.basename(req.params_path) + (f".{req.title}" if req.title else "")
            expfiles.atomic_write(out / copy, spec.text)

        hidden = Path(req.output, ".mlrunner")
        stored = (resumed.row if resumed else {}).get("snapshot") or None
        work = hidden / "snapshots" / f"{now}-{os.getpid()}"
        if resumed is not None and req.isolate and stored:
            snap = gitsnap.Snapshot.from_dict(stored)
        else:
            snap, warnings = gitsnap.take_snapshot(req.cwd, work_dir=work, exclude=[req.output])
            for w in warnings:
                self.emit(WarningMessage(w))
            # outside git there is no code to compare: nothing to warn about
            if stored and stored.get("vcs") and snap.vcs is not None and not gitsnap.same_code(stored, snap):
                self.emit(
                    WarningMessage(
                        "the code changed since this run started: run snapshot "
                        f"{_short(stored.get('snapshot_id') or stored.get('commit'))}, now "
                        f"{_short(snap.snapshot_id or snap.commit)}; "
                        "new attempts record the new snapshot"
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
        env = probe.result()
        env_hash = envinfo.env_hash(env)
        stored_env = (resumed.row if resumed else {}).get("env_hash")
        if stored_env and stored_env != env_hash:
            self.emit(
                WarningMessage(
                    f"the environment changed since this run started: env {stored_env[:10]}, now "
                    f"{env_hash[:10]} (`mlrunner diff` shows what); new experiment dirs record the "
                    "new env.json"
                )
            )
        for problem in env.get("errors", ()):
            self.emit(WarningMessage(f"environment fingerprint: {problem}"))
        env_file = envinfo.write_env(env, work)
        return _Code(snap, snap.to_dict(), isolate_dir, env_file, env_hash)

    @contextmanager
    def _ledger(self, req: RunRequest, resumed: _Resumed | None) -> Iterator[Ledger]:
        """The run's ledger: the resumed run's (open already), else opened (created) now."""
        if resumed is not None:
            yield resumed.ledger
            return
        from mlrunner.ledger import Ledger

        ledger = Ledger(req.output)
        try:
            yield ledger
        finally:
            ledger.close()

    def _open_run(
        self,
        ledger: Ledger,
        req: RunRequest,
        spec: Spec,
        tasks: Sequence[Task],
        code: _Code,
        resumed: _Resumed | None,
        summary: RunSummary,
    ) -> tuple[int, dict[str, Adopted]]:
        """Step 5: the run row (a resumed one reopened) and the tasks; attempts left
        running by dead runners settled (:mod:`mlrunner.run.orphans`): returns the run id and
        the commands to adopt, by task key."""
        if resumed is not None:
            run_id = int(resumed.row["id"])
            if resumed.row.get("runner_alive") and resumed.row.get("pid") != os.getpid():
                # its runner still works on it: join as another worker, its row untouched
                self.emit(
                    InfoMessage(f"Run {run_id} is still running (pid {resumed.row['pid']}): joining it")
                )
            else:
                ledger.update_run(run_id, status=RunStatus.RUNNING)
        else:
            run_id = ledger.create_run(
                argv=list(req.argv),
                cwd=req.cwd,
                params_path=os.path.abspath(req.params_path),
                params_text=spec.text,
                options=req.options(),
                snapshot=code.stored,
                backend=req.backend,
                env_hash=code.env_hash,
            )
        summary.run_id = run_id
        ledger.runner_started(run_id)
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
        self.emit(PlanReady(tasks=len(tasks), commands=summary.n_commands, run_id=run_id, resumed=req.resume))
        return run_id, settle_orphans(ledger, self.emit)

    def _unfinished(
        self,
        ledger: Ledger,
        req: RunRequest,
        tasks: Sequence[Task],
        run_id: int,
        summary: RunSummary,
        adopted: dict[str, Adopted],
    ) -> list[WorkItem]:
        """Step 6: what is unfinished (ledger, 0.5.9 ``stat`` files); the rest is skipped.
        Items whose command a dead runner left running come first (they keep their slot)."""
        force = _rerun_finished(req)
        states = ledger.command_states([t.key for t in tasks])
        # what the ledger lost, the local commands' exit files still say (a Slurm run's jobs
        # leave result files that its backend reattaches to)
        if req.resume and req.time and req.backend == "local":
            reconcile(ledger, run_id, req.time, tasks, states, req.no_subdir, self.emit)
        resume_force = force and req.resume
        items: list[WorkItem] = []
        total = len(tasks)
        for i, task in enumerate(tasks):
            stat: dict[str, str] | None = None
            run_done: set[str] | None = None
            remaining = []
            for command in task.commands:
                state = states.get((task.key, command.name))
                # experiment dirs written by mlrunner 0.5.9 carry only a stat file; with
                # --no-subdir every task shares one, which says nothing of a new task
                if state is None and not req.resume and not req.no_subdir:
                    if stat is None:
                        stat = expfiles.read_stat(task.output_dir) if os.path.isdir(task.output_dir) else {}
                    if stat.get(command.name) == AttemptStatus.FINISHED:
                        state = AttemptStatus.FINISHED
                done = state == AttemptStatus.FINISHED
                if done and resume_force:  # a forced run resumes what *it* has not finished
                    if run_done is None:
                        run_done = {
                            a["command"]
                            for a in ledger.attempts_for(task.key)
                            if a["run_id"] == run_id and a["status"] == AttemptStatus.FINISHED
                        }
                    done = command.name in run_done
                elif force:
                    done = False
                if done:
                    summary.skipped += 1
                    self._skipped.add((task.key, command.name))
                    self.emit(
                        Skipped(position=i + 1, total=total, output_dir=task.output_dir, command=command.name)
                    )
                else:
                    remaining.append(command)
            if remaining:
                item = WorkItem(task=task, commands=tuple(remaining), position=i + 1, total=total)
                item.adopted = adopted.get(task.key)
                items.append(item)
        return sorted(items, key=lambda it: it.adopted is None)

    def _execute(
        self,
        ledger: Ledger,
        req: RunRequest,
        spec: Spec,
        backend: Backend,
        items: Sequence[WorkItem],
        code: _Code,
        summary: RunSummary,
        now: str,
    ) -> RunRecorder:
        """Steps 7 and 8: the backend runs the items, the recorder records; SIGINT/SIGTERM
        stop the run. Returns the recorder, closed (every delayed file written)."""
        assert summary.run_id is not None
        recorder = RunRecorder(
            ledger=ledger,
            run_id=summary.run_id,
            emit=self.emit,
            summary=summary,
            time_str=now,
            no_subdir=req.no_subdir,
            force=_rerun_finished(req),
            snapshot=code.snapshot,
            snapshot_id=code.stored.get("snapshot_id"),
            grace=req.grace,
            env_file=code.env_file,
        )
        options = RunOptions(
            output=req.output,
            cwd=req.cwd,
            force=_rerun_finished(req),
            debug=req.debug,
            retries=req.retries,
            grace=req.grace,
            timeouts=self._timeouts,
            stall=self._stall,
            isolate_dir=code.isolate_dir,
            resumed=req.resume,
            run_id=summary.run_id,
            extra={
                "slurm": _slurm_options(req, spec),
                # the Slurm backend's answer on Ctrl-C: a bool, or a question to ask then
                "detach": True if req.detach else (self.ask_detach or False),
                "run_id": summary.run_id,
            },
        )
        try:
            with stop_on_signals(recorder, self.emit), ledger.background_checkpoints(), ledger.heartbeats():
                if items:
                    backend.execute(items, recorder, options)
        except BaseException as exc:
            try:
                recorder.close()  # what is queued still reaches the experiment dirs
            except Exception:  # the first error is the one to report
                pass
            if isinstance(exc, MlrunnerError):  # a full disk...: the run stopped cleanly
                try:
                    ledger.runner_ended()
                    if not ledger.other_runners(summary.run_id):
                        ledger.update_run(summary.run_id, status=RunStatus.INTERRUPTED)
                except MlrunnerError:  # the ledger's own disk: its runner reads as dead
                    pass
            raise
        recorder.close()
        return recorder


def _n_commands(tasks: Sequence[Task]) -> int:
    return sum(len(t.commands) for t in tasks)


def _rerun_finished(req: RunRequest) -> bool:
    """``--force`` (``--debug`` skips finished commands like any run: it never overwrites a
    finished experiment unless forced)."""
    return req.force


def _slurm_options(req: RunRequest, spec: Spec) -> dict[str, Any]:
    """The slurm: section with the command line's ``--slurm`` overrides."""
    return dict(spec.slurm_map or {}, **req.slurm)


def _short(sha: str | None) -> str:
    return (sha or "none")[:12]

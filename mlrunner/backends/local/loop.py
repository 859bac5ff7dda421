"""The local backend: one event loop, in the calling thread, over the slots of an allocator.

Each work item (a task) takes one allocation (a slot: ``CUDA_VISIBLE_DEVICES``) and runs
its commands in order, each through bash in its own session (so a whole process group can
be signalled), its whole output in the experiment's log file. A failing command stops its
task (after ``retries`` more tries; a GPU out-of-memory failure re-acquires the allocation
first).

Why a loop and not a thread per slot: the per-command work here is many short system calls
(spawn, SQLite, small files) and Python glue. Worker threads contend for the GIL and the
recorder's locks at every one of them; measured on the dispatch benchmark (issue 8), the
loop spends 10-15% less CPU per command than a thread per slot with the same recorder,
and is as fast or faster in wall time. One thread spawns (:mod:`.spawn`), waits for *any*
child to exit (a pidfd per child in a selector, or polling where pidfds are missing),
records, and starts the next command (:class:`mlrunner.procs.Spawner`: one posix_spawn of
bash per command; its start is committed to the ledger at once, on its own).

Each item is a :class:`.machine.Job` whose one phase says where it is; the loop moves it
only through :data:`.machine.TRANSITIONS` and asks the machine the decisions (last command,
retry, re-allocation after a GPU OOM, what a stop does). The loop's queues are indexes in
the order things happen; a job's phase is the truth (a queued entry whose job moved on is
skipped).

Allocation: fixed slots (``resource: [0, 1]``) for 1-GPU tasks never block while the
loop holds fewer allocations than there are slots, so the loop acquires them itself. Any
acquisition that may block (a GPU pool that waits for shares held by other runners or for
free memory, a multi-GPU task waiting for a big enough slot) runs in a small helper thread
that hands the allocation back through a queue and a wake-up pipe. At most ``capacity``
items hold or wait for an allocation at once, asked in item order, so the allocator's
oldest-first policy (and its backfill around a blocked multi-GPU waiter) is unchanged.
The loop assumes it is the allocator's only user in this process.

Stop (``recorder.stop``, set by the scheduler's SIGINT/SIGTERM handler, whose wake-up
byte arrives on the loop's pipe): nothing new is launched, every live command's process
group and descendants (collected before signalling) get SIGTERM, then SIGKILL after
``options.grace`` seconds or at once when ``recorder.kill_now`` is set. Their ends are
recorded ``interrupted``; :meth:`LocalBackend.execute` returns once nothing it started is
alive. An exception from the recorder or the allocator stops the run the same way and is
raised once everything is down.
"""

from __future__ import annotations

import os
import queue
import selectors
import signal
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

from mlrunner import procs
from mlrunner.backends.base import (
    Allocation,
    Allocator,
    Backend,
    Placement,
    ProcessRef,
    Recorder,
    RunOptions,
    WorkItem,
    attempt_env,
    task_env,
)
from mlrunner.backends.local.leftovers import ATTEMPT_ENV, Leftovers
from mlrunner.backends.local.limits import Limits
from mlrunner.backends.local.live import Live, drain, named, prefer, spawn_error, write_reason
from mlrunner.backends.local.machine import Job, Next, Phase, StopAction
from mlrunner.backends.local.wake import Waker
from mlrunner.errors import STORAGE_ERRNOS, storage_error
from mlrunner.status import AttemptStatus

POLL_S = 0.1  # the longest the loop sleeps without looking at recorder.stop
STOP_POLL_S = 0.05  # while stopping: how often to check descendants / re-send SIGKILL
SHORT_POLL_S = 0.005  # polling children without pidfds; handing over to the next helper
KILL_PATIENCE_S = 5.0  # after SIGKILL, how long to wait for descendants (D state) to go

T = TypeVar("T")


A = TypeVar("A", bound=Allocation)


class LocalBackend(Backend, Generic[A]):
    name = "local"

    def __init__(self, allocator: Allocator[A]) -> None:
        self.allocator = allocator

    def execute(self, items: Sequence[WorkItem], recorder: Recorder, options: RunOptions) -> None:
        _Loop(self.allocator, recorder, options).run(items)


class _Loop(Generic[A]):
    def __init__(self, allocator: Allocator[A], recorder: Recorder, options: RunOptions) -> None:
        self.allocator = allocator
        self.rec = recorder
        self.opts = options
        self.base_env = dict(os.environ)
        self.spawner = procs.Spawner(
            options.isolate_dir or options.cwd, tee=options.debug, path=self.base_env.get("PATH", os.defpath)
        )
        self.capacity = int(allocator.capacity)
        # fixed slots serve a 1-GPU task at once whenever one is free: no need to block
        self.direct = allocator.fixed
        self.queued: deque[Job[A]] = deque()  # QUEUED, in item order
        self.active: set[Job[A]] = set()  # admitted, not DONE: holding or waiting for an allocation
        self.asking: deque[Job[A]] = deque()  # ASKING, in order
        self.ready: deque[Job[A]] = deque()  # READY
        self.running: dict[int, Live[A]] = {}  # pid -> a command alive (STARTED, RUNNING, SIGNALLED)
        self.ended: deque[Job[A]] = deque()  # EXITED, in the order reaped
        self.helpers: list[threading.Thread] = []
        self.in_flight = 0  # WAITING: helper acquisitions not yet handed back
        self.handoff: queue.SimpleQueue[tuple[Job[A], A | None, BaseException | None]]
        self.handoff = queue.SimpleQueue()
        self.selector = selectors.DefaultSelector()
        self.waker = Waker()
        self.selector.register(self.waker.fd, selectors.EVENT_READ, None)
        self.pidfds = hasattr(os, "pidfd_open")
        # stop state
        self.stopping = False
        self.deadline = 0.0
        self.killing_since: float | None = None
        self.next_kill = 0.0
        self.known: dict[int, list[tuple[int, int]]] = {}  # signalled pid -> its descendants then
        # attempt id -> what names its command, and whether it still runs (for leftovers)
        self.attempts: dict[int, tuple[str, bool]] = {}
        self.leftovers = Leftovers(describe=self._describe, warn=recorder.warn, grace=options.grace)
        self.limits = Limits(options.timeouts, options.stall, options.grace, recorder.cancelled)

    # ------------------------------------------------------------------ driver
    def run(self, items: Sequence[WorkItem]) -> None:
        self.queued = deque(Job(item) for item in items)
        error: BaseException | None = None
        self.leftovers.start()
        try:
            with self.waker.on_signals():
                try:
                    self._loop()
                except BaseException as exc:  # recorder/allocator failure: stop everything, then raise
                    error = exc
                    self.rec.stop.set()
                    try:
                        self._loop()
                    except BaseException:  # the first error is the one to report
                        pass
        finally:
            self._last_resort()
        if error is not None:
            raise error

    def _loop(self) -> None:
        stop = self.rec.stop
        while True:
            self._enforce()  # timeouts, stalls, cancels: signals, never inside a transaction
            # The ends recorded and the claims taken in one round share a ledger transaction
            # (one commit, not one each); commands start after it, each start on its own.
            with self.rec.batch():
                while self.ended:
                    self._record_end(self.ended.popleft())
                self._take_handoffs()
                self._start_helpers()
                if stop.is_set():
                    self._stop_step()
                else:
                    self._fill()
            self._start_ready()
            if self._done():
                return
            self._wait()

    def _start_ready(self) -> None:
        while self.ready:
            job = self.ready.popleft()
            if job.phase is not Phase.READY:  # dropped meanwhile (the run is stopping)
                continue
            if self.rec.stop.is_set():
                self._finish(job)
                continue
            if job.item.task.key in self.limits.cancels:  # cancelled before it could start
                self.rec.command_cancelled(job.item, job.command)
                self._finish(job)
                continue
            self._start(job)

    def _done(self) -> bool:
        if self.active or self.in_flight or self.leftovers.busy:
            return False
        if not self.stopping:
            return not self.queued or self.rec.stop.is_set()
        if any(procs.proc_start_time(p) == s for kids in self.known.values() for p, s in kids):
            # descendants may outlive the command's bash: wait for them (SIGKILL after grace)
            return self.killing_since is not None and time.monotonic() - self.killing_since > KILL_PATIENCE_S
        return True

    # ------------------------------------------------------------------ allocation
    def _fill(self) -> None:
        while self.queued and len(self.active) < self.capacity and not self.rec.stop.is_set():
            job = self.queued.popleft()
            if job.item.task.key in self.limits.cancels:  # cancelled before it could start
                self.rec.command_cancelled(job.item, job.command)
                job.to(Phase.DONE)
                continue
            self.active.add(job)
            self._request(job)

    def _request(self, job: Job[A]) -> None:
        """Get ``job`` an allocation: at once when it cannot block, else in a helper thread."""
        need = job.item.task.gpus
        held = sum(1 for j in self.active if j.alloc is not None)
        if self.direct and need <= 1 and not self.in_flight and not self.asking and held < self.capacity:
            job.to(Phase.ACQUIRING)
            self._granted(job, self.allocator.acquire(need, stop=self.rec.stop, prefer=prefer(job)))
            return
        job.to(Phase.ASKING)
        self.asking.append(job)
        self._start_helpers()

    def _start_helpers(self) -> None:
        """Start the next helper once every earlier one is blocked in the allocator or done,
        so that the allocator sees the waiters in item order (its fairness is oldest first)."""
        while self.asking and not self.rec.stop.is_set():
            if self.in_flight and self.allocator.pending < self.in_flight:
                return  # one is still on its way in: the loop looks again shortly
            job = self.asking.popleft()
            job.to(Phase.WAITING)
            self.in_flight += 1
            t = threading.Thread(
                target=self._acquire,
                args=(job, job.item.task.gpus, prefer(job)),
                name="mlrunner-acquire",
                daemon=True,
            )
            self.helpers.append(t)
            t.start()

    def _acquire(
        self, job: Job[A], need: int, prefer: str | None
    ) -> None:  # in a helper thread: no job state
        try:
            self.handoff.put((job, self.allocator.acquire(need, stop=self.rec.stop, prefer=prefer), None))
        except BaseException as exc:
            self.handoff.put((job, None, exc))
        self.waker.wake()

    def _take_handoffs(self) -> None:
        for job, alloc, exc in drain(self.handoff):
            self.in_flight -= 1
            if exc is not None:
                self._finish(job)
                raise exc
            self._granted(job, alloc)

    def _granted(self, job: Job[A], alloc: A | None) -> None:
        """ACQUIRING or WAITING -> CLAIMING -> READY (or DONE)."""
        if alloc is None:  # stopped while waiting
            self._finish(job)
            return
        job.alloc = alloc
        job.to(Phase.CLAIMING)
        if self.rec.stop.is_set():
            self._finish(job)
            return
        extra = alloc.env()  # CUDA_VISIBLE_DEVICES (+ CUDA_DEVICE_ORDER)
        job.env = {**self.base_env, **task_env(job.item.task, self.opts), **extra}
        if not job.claimed:
            if not self.rec.claim(job.item):  # another live runner holds the task: skip it
                self._finish(job)
                return
            job.claimed = True
        job.to(Phase.READY)
        self.ready.append(job)

    def _finish(self, job: Job[A]) -> None:
        """The job is done with its item: give up the claim, then the allocation."""
        job.to(Phase.DONE)
        self.active.discard(job)
        alloc, job.alloc = job.alloc, None
        try:
            if job.claimed:
                job.claimed = False
                self.rec.release(job.item)
        finally:
            if alloc is not None:
                self.allocator.release(alloc)

    # ------------------------------------------------------------------ commands
    def _start(self, job: Job[A]) -> None:
        """READY -> SPAWNING -> STARTED -> RUNNING: spawn its command, record its start.
        Before an item's first command: READY -> RUNNING when a runner that died left that
        command running (it is watched, not started again)."""
        if not job.asked_adopt:
            job.asked_adopt = True
            adopted = self.rec.adopt(job.item)  # may drop commands that ended meanwhile
            if not job.item.commands:
                self._finish(job)
                return
            if adopted is not None:
                job.adopted(adopted.process.pid, adopted.log_path, adopted.attempt_id)
                self.attempts[adopted.attempt_id] = (named(adopted.command, job), True)
                watch = self.limits.watch(job.item.task.key, adopted.command, str(adopted.log_path))
                live = Live(
                    job,
                    adopted.process.pid,
                    start=adopted.process.start,
                    exit_file=procs.exit_path(adopted.log_path),
                    watch=watch,
                )
                self._watch(live)
                return
        command = job.command
        job.to(Phase.SPAWNING)
        log = self.rec.log_path(job.item, command)
        assert job.env is not None and job.alloc is not None
        # recorded (committed) before it runs: no command runs that the ledger does not know
        placement = Placement(resource=job.alloc.visible, gpus=job.alloc.gpus)
        attempt = self.rec.command_started(job.item, command, placement, log)
        self.attempts[attempt] = (named(command.name, job), True)
        try:
            proc = self.spawner.spawn(
                command.text, log, {**job.env, **attempt_env(job.failures + 1), ATTEMPT_ENV: str(attempt)}
            )
        except OSError as exc:  # this command cannot start; the others go on
            if exc.errno in STORAGE_ERRNOS:  # ...unless the disk is full or read-only: all stop
                job.spawn_failed(attempt, log)
                self.ended.append(job)
                raise storage_error(exc, str(log)) from exc
            reason = spawn_error(exc, command.text)
            write_reason(log, reason)
            job.spawn_failed(attempt, log, f"mlrunner: {reason}\n")
            self.ended.append(job)
            return
        job.started(proc.pid, log)
        watch = self.limits.watch(job.item.task.key, command.name, str(log))
        self._watch(Live(job, proc.pid, child=proc, watch=watch))
        job.recorded(attempt)
        self.rec.process_started(attempt, ProcessRef(pid=proc.pid, pgid=proc.pid, start=proc.start))

    def _watch(self, live: Live[A]) -> None:
        """The loop watches ``live``'s process: a pidfd in the selector, or polling."""
        self.running[live.pid] = live
        if self.pidfds:
            try:
                live.pidfd = os.pidfd_open(live.pid)
            except ProcessLookupError:  # an adopted command gone already: the next poll sees it
                pass
            except OSError:  # kernel without pidfds (< 5.3): poll the children instead
                self.pidfds = False
            else:
                self.selector.register(live.pidfd, selectors.EVENT_READ, live)

    def _wait(self) -> None:
        """Sleep until a child exits, a helper or a signal wakes us, or a poll interval passes."""
        if self.stopping or self.leftovers.busy:
            timeout = STOP_POLL_S
        elif self.asking or any(live.pidfd is None for live in self.running.values()):
            timeout = SHORT_POLL_S
        else:
            timeout = POLL_S
        ended: list[Live[A]] = []
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                self.waker.drain()
            else:
                ended.append(key.data)
        ended.extend(live for live in self.running.values() if live.pidfd is None)
        reaped = False
        for live in ended:
            if self._reap(live):
                self.ended.append(live.job)
                reaped = True
        if reaped:  # what the ended commands left running is stopped
            self.leftovers.check(self.running.keys())
        if self.leftovers.busy:
            self.leftovers.tick(kill_now=self.killing_since is not None)

    def _reap(self, live: Live[A]) -> bool:
        """Whether ``live`` exited; if so, reaped (its pid may be reused from now on, so it
        leaves ``running`` at once) and its job EXITED."""
        gone, code = live.ended()
        if not gone:
            return False
        if live.job.attempt is not None and live.job.attempt in self.attempts:
            self.attempts[live.job.attempt] = (self.attempts[live.job.attempt][0], False)
        del self.running[live.pid]
        self._close_pidfd(live)
        live.job.exited(code)
        return True

    def _record_end(self, job: Job[A]) -> None:
        """EXITED -> ENDING -> READY (next command, retry), a new allocation, or DONE."""
        job.to(Phase.ENDING)
        if job.attempt is None or job.outcome is None or job.log is None:
            self._finish(job)  # recording its start failed (the run is stopping): nothing to end
            return
        last = job.is_last(self.opts.retries, stopping=self.rec.stop.is_set())
        final = self.rec.command_ended(job.attempt, job.item, job.command, job.outcome, job.log, last=last)
        after = job.after_end(final, last=last or self.rec.stop.is_set())
        if after is Next.DONE:
            self._finish(job)
        elif after is Next.REALLOCATE:  # wait for GPUs with the configured free memory again
            alloc, job.alloc = job.alloc, None
            if alloc is not None:
                self.allocator.release(alloc)
            self._request(job)
        else:
            job.to(Phase.READY)
            self.ready.append(job)

    # ------------------------------------------------------------------ stop
    def _stop_step(self) -> None:
        """Drop what does not run, TERM every live command tree once, KILL after the grace
        period (or at once on kill_now)."""
        now = time.monotonic()
        if not self.stopping:
            self.stopping = True
            self.deadline = now + self.opts.grace
            while self.queued:  # never admitted
                self.queued.popleft().to(Phase.DONE)
        self.asking.clear()  # never asked the allocator: dropped below
        for job in list(self.active):
            action = job.on_stop()
            if action is StopAction.DROP:
                self._finish(job)  # nothing of it runs (or an exception left it half-way)
            elif action is StopAction.SIGNAL:
                assert job.pid is not None
                live = self.running[job.pid]
                self.known[live.pid] = procs.descendant_ids(live.pid)
                self._signal(live, signal.SIGTERM)
                job.signal(AttemptStatus.INTERRUPTED)
        if self.killing_since is None and (self.rec.kill_now.is_set() or now >= self.deadline):
            self.killing_since = now
        if self.killing_since is not None and now >= self.next_kill:
            self.next_kill = now + STOP_POLL_S
            self._kill_all()

    def _enforce(self) -> None:
        """Stop the commands past a limit (SIGTERM, SIGKILL after the grace): timed out,
        stalled or cancelled; the rest of the run goes on."""
        watched = {id(live.watch): live for live in self.running.values() if live.watch is not None}
        if not watched:
            if self.limits.timing or self.queued:
                self.limits.look(())  # reads the cancel requests (at most once a second)
            return
        running = [live.watch for live in watched.values() if live.job.phase is Phase.RUNNING]
        for w, why, what in self.limits.look(w for w in running if w is not None):
            live = watched[id(w)]
            self.rec.warn(
                f"{named(w.command, live.job)}: {what}: stopping it "
                f"(SIGTERM, SIGKILL after {self.opts.grace:g} s); recorded {why}"
            )
            self.known[live.pid] = procs.descendant_ids(live.pid)
            self._signal(live, signal.SIGTERM)
            live.job.signal(why)
            self.limits.stopped(w)
        for w in self.limits.overdue(w for w in (live.watch for live in watched.values()) if w is not None):
            self._signal(watched[id(w)], signal.SIGKILL)

    def _describe(self, attempt: int) -> str | None:
        """What names an attempt's command; None while it runs."""
        what, running = self.attempts.get(attempt, (f"a command (attempt {attempt})", False))
        return None if running else what

    def _signal(self, live: Live[A], sig: int) -> None:
        """``sig`` to a command's tree: our own child (not reaped: its pid is ours), or an
        adopted one only while it is the process with its recorded start time."""
        if live.child is None and procs.proc_start_time(live.pid) != live.start:
            for p, start in self.known.get(live.pid, ()):
                procs.kill_proven(p, start, sig)
            return
        procs.signal_tree(live.pid, live.pid, sig, self.known.get(live.pid, ()))

    def _kill_all(self) -> None:
        for live in self.running.values():
            self._signal(live, signal.SIGKILL)
        for kids in self.known.values():
            for p, start in kids:
                procs.kill_proven(p, start, signal.SIGKILL)

    def _last_resort(self) -> None:
        """After the loop (even one that failed): kill and reap what is left, give everything back."""
        try:
            for pid in self.running:
                self.known.setdefault(pid, procs.descendant_ids(pid))
            while self.running:
                self._kill_all()
                for live in list(self.running.values()):
                    self._reap(live)
                if self.running:
                    time.sleep(STOP_POLL_S)
            for job in list(self.active):
                try:
                    self._finish(job)
                except Exception:  # best effort: the run is already failing
                    pass
        finally:
            kids = [p for pids in self.known.values() for p, _ in pids]
            self.leftovers.close(self.running.keys(), kids)
            for t in self.helpers:  # they see recorder.stop within the allocator's poll interval
                t.join()
            for _, alloc, _ in drain(self.handoff):  # allocations handed back after the loop ended
                if alloc is not None:
                    self.allocator.release(alloc)
            for live in self.running.values():
                self._close_pidfd(live)
            self.selector.close()
            self.waker.close()

    def _close_pidfd(self, live: Live[A]) -> None:
        if live.pidfd is not None:
            try:
                self.selector.unregister(live.pidfd)
            except (KeyError, ValueError):  # never registered
                pass
            os.close(live.pidfd)
            live.pidfd = None

"""The local backend: one event loop, in the calling thread, over the slots of an allocator.

Each work item (a task) takes one allocation (a slot: ``CUDA_VISIBLE_DEVICES``) and runs
its commands in order, each through bash in its own session (so a whole process group can
be signalled), its whole output in the experiment's log file. A failing command stops its
task (after ``retries`` more tries; an OOM failure re-acquires the allocation first).

Why a loop and not a thread per slot: the per-command work here is many short system calls
(spawn, SQLite, small files) and Python glue. Worker threads contend for the GIL and the
recorder's locks at every one of them; measured on the dispatch benchmark (issue 8), the
loop spends 10-15% less CPU per command than a thread per slot with the same recorder,
and is as fast or faster in wall time. One thread spawns, waits for *any* child to exit
(a pidfd per child in a selector, or polling where pidfds are missing), records, and
starts the next command.

Spawning: ``os.posix_spawn`` of bash (resolved once) when it is equivalent to
:func:`mlrunner.procs.spawn` (no debug tee, commands run in the current directory; the
descriptors ``close_fds`` would close are closed by spawn actions); it is about half the
parent's work of ``subprocess.Popen``. Otherwise :func:`mlrunner.procs.spawn`. With more
than 2 slots, the posix_spawn goes through libc by ctypes in a spawn thread
(:mod:`.cspawn`), which releases the GIL while glibc waits for bash to start, so the loop
records other commands meanwhile; a spawned command is recorded as soon as it is handed
back, before the round's other ledger work.

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
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from mlrunner import procs
from mlrunner.backends.base import Backend, Recorder, RunOptions, WorkItem

POLL_S = 0.1  # the longest the loop sleeps without looking at recorder.stop
STOP_POLL_S = 0.05  # while stopping: how often to check descendants / re-send SIGKILL
SHORT_POLL_S = 0.005  # polling children without pidfds; handing over to the next helper
KILL_PATIENCE_S = 5.0  # after SIGKILL, how long to wait for descendants (D state) to go
SPAWN_THREAD_ENV = "MLRUNNER_SPAWN_THREAD"  # "1"/"0" forces the spawn thread on/off (tests)


class LocalBackend(Backend):
    name = "local"

    def __init__(self, allocator: Any) -> None:
        # a mlrunner.resources.slots.SlotAllocator (typed loosely to keep this module import-light)
        self.allocator = allocator

    def execute(self, items: Sequence[WorkItem], recorder: Recorder, options: RunOptions) -> None:
        _Loop(self.allocator, recorder, options).run(items)


# ---------------------------------------------------------------------- spawning
class _Child:
    """The part of ``subprocess.Popen`` the loop uses, for a posix_spawn'ed child."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _inheritable_fds() -> list[int] | None:
    """This process's descriptors >= 3 that a child would inherit; None when unknowable.

    Python makes its descriptors non-inheritable; these come from whoever started us
    (a shell, a CI runner). ``Popen(close_fds=True)`` closes them in the child, and so
    does the posix_spawn path, with one close action each.
    """
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    found = []
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    found.append(fd)
            except OSError:  # the descriptor listdir itself used, closed since
                continue
    return found


class _Spawner:
    """:func:`mlrunner.procs.spawn`, through ``os.posix_spawn`` when that is equivalent."""

    def __init__(self, options: RunOptions, cwd: str, env: Mapping[str, str]) -> None:
        self.cwd = cwd
        self.tee = options.debug
        self.bash: str | None = None
        self.closes: list[tuple[Any, ...]] = []
        self.inherited: list[int] = []
        inherited = _inheritable_fds() if hasattr(os, "posix_spawn") else None
        if not self.tee and inherited is not None:
            self.inherited = inherited
            self.closes = [(os.POSIX_SPAWN_CLOSE, fd) for fd in inherited]
            try:
                here = os.path.samefile(cwd, os.curdir)
            except OSError:
                here = False
            if here:
                self.bash = shutil.which("bash", path=env.get("PATH", os.defpath))

    def spawn(
        self, text: str, log: os.PathLike[str], env: Mapping[str, str], via: Any = None, env_key: Any = None
    ) -> tuple[Any, int | None]:
        """The child, and its start time (clock ticks since boot) when known without /proc.

        ``via``: a :class:`.cspawn.BashSpawner` to spawn through (the spawn thread's), with
        ``env_key`` naming ``env`` for its cache; only where ``self.bash`` is set.
        """
        before = procs.boot_clock_ns()
        proc = self._spawn(text, log, env, via, env_key)
        return proc, procs.start_time_between(before, procs.boot_clock_ns())

    def _spawn(self, text: str, log: os.PathLike[str], env: Mapping[str, str], via: Any, env_key: Any) -> Any:
        if self.bash is None:
            return procs.spawn(text, log_path=log, env=env, cwd=self.cwd, tee=self.tee)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            if via is not None:
                pid = via.spawn(text, fd, via.envp(env_key, env))
            else:
                pid = os.posix_spawn(
                    self.bash,
                    ["bash", "-c", text],
                    env,
                    file_actions=[
                        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                        (os.POSIX_SPAWN_DUP2, fd, 1),
                        (os.POSIX_SPAWN_DUP2, fd, 2),
                        *self.closes,
                    ],
                    setsid=True,
                    setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # as Popen's restore_signals
                )
        finally:
            os.close(fd)
        return _Child(pid)


class _SpawnThread:
    """Spawns commands in a thread of its own, through :mod:`.cspawn` (the GIL is released
    while glibc waits for the child to exec bash), and hands each result back through the
    loop's queue and wake-up pipe. Used when the spawn would go through ``os.posix_spawn``."""

    def __init__(self, spawner: _Spawner, results: queue.SimpleQueue[Any], wake: Any) -> None:
        from mlrunner.backends.local import cspawn

        assert spawner.bash is not None
        self.spawner = spawner
        self.c = cspawn.BashSpawner(spawner.bash, spawner.inherited)
        self.results = results
        self.wake = wake
        self.todo: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="mlrunner-spawn", daemon=True)
        self.thread.start()

    def submit(self, job: Any, text: str, log: os.PathLike[str], env: Mapping[str, str], key: Any) -> None:
        self.todo.put((job, text, log, env, key))

    def close(self) -> None:
        self.todo.put(None)
        self.thread.join()

    def _run(self) -> None:
        while True:
            work = self.todo.get()
            if work is None:
                return
            job, text, log, env, key = work
            try:
                proc, started = self.spawner.spawn(text, log, env, via=self.c, env_key=key)
            except BaseException as exc:  # the loop raises it
                self.results.put((job, None, None, exc))
            else:
                self.results.put((job, proc, started, None))
            self.wake()


def _drain(q: queue.SimpleQueue[Any]) -> Iterator[Any]:
    """What is in ``q`` now, without waiting."""
    while True:
        try:
            yield q.get_nowait()
        except queue.Empty:
            return


# ---------------------------------------------------------------------- the loop
@dataclass(eq=False)
class _Job:
    """One item on its way through the loop: waiting for an allocation or running a command."""

    item: WorkItem
    alloc: Any = None  # the mlrunner.resources.slots.Allocation held
    env: dict[str, str] | None = None
    env_key: Any = None  # what sets env apart from the process's environment (its cache key)
    claimed: bool = False
    launching: bool = False  # handed to the spawn thread, not back yet
    waiting: bool = False  # a helper thread is acquiring its allocation
    index: int = 0  # the command of item.commands to run (or running)
    failures: int = 0  # failed tries of that command
    proc: Any = None  # the running command's process (subprocess.Popen or _Child)
    pidfd: int | None = None
    attempt: int | None = None  # the ledger attempt of the running command, once recorded
    log: Any = None  # Path of the running command's log
    killed: bool = False  # we signalled it: a non-zero end is 'interrupted'


class _Loop:
    def __init__(self, allocator: Any, recorder: Recorder, options: RunOptions) -> None:
        self.allocator = allocator
        self.rec = recorder
        self.opts = options
        self.base_env = dict(os.environ)
        self.spawner = _Spawner(options, options.isolate_dir or options.cwd, self.base_env)
        self.capacity = int(allocator.capacity)
        # fixed slots serve a 1-GPU task at once whenever one is free: no need to block
        self.direct = getattr(allocator, "mode", None) == "slots"
        self.pending: deque[WorkItem] = deque()
        self.jobs: set[_Job] = set()  # items holding or waiting for an allocation
        self.running: dict[int, _Job] = {}  # pid -> job whose command is alive
        self.ended: deque[_Job] = deque()  # jobs whose command exited (reaped), end not recorded yet
        self.ready: deque[_Job] = deque()  # jobs with an allocation (and claim), command to start
        self.helpers: list[threading.Thread] = []
        self.to_acquire: deque[_Job] = deque()  # jobs whose helper is not started yet, in order
        self.in_flight = 0  # helper acquisitions not yet handed back
        self.handoff: queue.SimpleQueue[tuple[_Job, Any, BaseException | None]] = queue.SimpleQueue()
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.pidfds = hasattr(os, "pidfd_open")
        # (job, its _Child, start time, None) or (job, None, None, the spawn's error)
        self.spawned: queue.SimpleQueue[tuple[_Job, _Child | None, int | None, BaseException | None]]
        self.spawned = queue.SimpleQueue()
        self.spawn_thread: _SpawnThread | None = None
        # Measured on the dispatch benchmark (2 cores): with more than 2 slots the loop has
        # other commands to record while one spawns, and the spawn thread cut the cost per
        # command by 15-20%; with 2 slots it has little to overlap and the hand-over cost more.
        wanted = os.environ.get(SPAWN_THREAD_ENV) or ("1" if self.capacity > 2 else "0")
        if self.spawner.bash is not None and wanted == "1":
            from mlrunner.backends.local import cspawn

            if cspawn.available():
                self.spawn_thread = _SpawnThread(self.spawner, self.spawned, self._wake)
        # stop state
        self.stopping = False
        self.deadline = 0.0
        self.killing_since: float | None = None
        self.next_kill = 0.0
        self.known: dict[int, list[int]] = {}  # signalled pid -> its descendants then

    # ------------------------------------------------------------------ driver
    def run(self, items: Sequence[WorkItem]) -> None:
        self.pending = deque(items)
        error: BaseException | None = None
        try:
            with self._signal_wakeup():
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
        batch = getattr(self.rec, "batch", None) or nullcontext
        while True:
            self._take_spawned()  # each start recorded at once, on its own
            # The ends recorded and the claims taken in one round share a ledger transaction
            # (one commit, not one each); commands start after it.
            with batch():
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
            if job not in self.jobs:  # given up meanwhile (the run is stopping)
                continue
            if self.rec.stop.is_set():
                self._finish(job)
                continue
            self._start(job)

    def _done(self) -> bool:
        if self.jobs or self.in_flight:
            return False
        if not self.stopping:
            return not self.pending or self.rec.stop.is_set()
        if any(procs.proc_start_time(p) is not None for kids in self.known.values() for p in kids):
            # descendants may outlive the command's bash: wait for them (SIGKILL after grace)
            return self.killing_since is not None and time.monotonic() - self.killing_since > KILL_PATIENCE_S
        return True

    # ------------------------------------------------------------------ allocation
    def _fill(self) -> None:
        while self.pending and len(self.jobs) < self.capacity and not self.rec.stop.is_set():
            job = _Job(self.pending.popleft())
            self.jobs.add(job)
            self._request(job)

    def _request(self, job: _Job) -> None:
        """Get ``job`` an allocation: at once when it cannot block, else in a helper thread."""
        need = job.item.task.gpus
        held = sum(1 for j in self.jobs if j.alloc is not None)
        if self.direct and need <= 1 and not self.in_flight and not self.to_acquire and held < self.capacity:
            self._granted(job, self.allocator.acquire(need, stop=self.rec.stop))
            return
        job.waiting = True
        self.to_acquire.append(job)
        self._start_helpers()

    def _start_helpers(self) -> None:
        """Start the next helper once every earlier one is blocked in the allocator or done,
        so that the allocator sees the waiters in item order (its fairness is oldest first)."""
        while self.to_acquire and not self.rec.stop.is_set():
            pending = getattr(self.allocator, "pending", None)
            if self.in_flight and pending is not None and pending < self.in_flight:
                return  # one is still on its way in: the loop looks again shortly
            job = self.to_acquire.popleft()
            self.in_flight += 1
            t = threading.Thread(
                target=self._acquire, args=(job, job.item.task.gpus), name="mlrunner-acquire", daemon=True
            )
            self.helpers.append(t)
            t.start()

    def _acquire(self, job: _Job, need: int) -> None:  # in a helper thread
        try:
            self.handoff.put((job, self.allocator.acquire(need, stop=self.rec.stop), None))
        except BaseException as exc:
            self.handoff.put((job, None, exc))
        self._wake()

    def _take_handoffs(self) -> None:
        for job, alloc, exc in _drain(self.handoff):
            self.in_flight -= 1
            job.waiting = False
            if exc is not None:
                self._finish(job)
                raise exc
            self._granted(job, alloc)

    def _granted(self, job: _Job, alloc: Any) -> None:
        if alloc is None:  # stopped while waiting
            self._finish(job)
            return
        job.alloc = alloc
        if self.rec.stop.is_set():
            self._finish(job)
            return
        extra = alloc.env()  # CUDA_VISIBLE_DEVICES (+ CUDA_DEVICE_ORDER)
        job.env = {**self.base_env, **extra}
        job.env_key = tuple(extra.items())
        if not job.claimed:
            if not self.rec.claim(job.item):  # another live runner holds the task: skip it
                self._finish(job)
                return
            job.claimed = True
        self.ready.append(job)

    def _finish(self, job: _Job) -> None:
        """The job is done with its item: give up the claim, then the allocation."""
        self.jobs.discard(job)
        alloc, job.alloc = job.alloc, None
        try:
            if job.claimed:
                job.claimed = False
                self.rec.release(job.item)
        finally:
            if alloc is not None:
                self.allocator.release(alloc)

    # ------------------------------------------------------------------ commands
    def _start(self, job: _Job) -> None:
        item, rec = job.item, self.rec
        command = item.commands[job.index]
        log = rec.log_path(item, command)
        assert job.env is not None
        job.log, job.killed, job.attempt = log, False, None
        if self.spawn_thread is not None:
            job.launching = True
            self.spawn_thread.submit(job, command.text, log, job.env, job.env_key)
            return
        proc, started = self.spawner.spawn(command.text, log, job.env)
        self._started(job, proc, started)

    def _take_spawned(self) -> None:
        for job, proc, started, exc in _drain(self.spawned):
            job.launching = False
            if proc is None:
                self._finish(job)
                assert exc is not None  # a result has a proc or an error
                raise exc
            self._started(job, proc, started)

    def _started(self, job: _Job, proc: Any, started: int | None) -> None:
        """The job's command runs: watch it, record its start."""
        item, rec, log = job.item, self.rec, job.log
        command = item.commands[job.index]
        job.proc = proc
        self.running[proc.pid] = job
        if self.pidfds:
            try:
                job.pidfd = os.pidfd_open(proc.pid)
            except OSError:  # kernel without pidfds (< 5.3): poll the children instead
                self.pidfds = False
            else:
                self.selector.register(job.pidfd, selectors.EVENT_READ, job)
        job.attempt = rec.command_started(
            item,
            command,
            resource=job.alloc.visible,
            gpus=job.alloc.gpus,
            log_path=log,
            pid=proc.pid,
            pgid=proc.pid,
            proc_start=started,
        )

    def _wait(self) -> None:
        """Sleep until a child exits, a helper or a signal wakes us, or a poll interval passes."""
        if self.stopping:
            timeout = STOP_POLL_S
        elif self.to_acquire or (self.running and not self.pidfds):
            timeout = SHORT_POLL_S
        else:
            timeout = POLL_S
        ended = []
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                self._drain_wake()
            else:
                ended.append(key.data)
        if not self.pidfds:
            ended.extend(j for j in self.running.values() if j.pidfd is None)
        for job in ended:
            if job.proc is not None and job.proc.poll() is not None:
                # reaped: its pid may be reused from now on, so it leaves `running` at once
                del self.running[job.proc.pid]
                self._close_pidfd(job)
                self.ended.append(job)

    def _record_end(self, job: _Job) -> None:
        proc, item = job.proc, job.item
        job.proc = None
        if job.attempt is None:  # recording its start failed (the run is stopping): nothing to end
            self._finish(job)
            return
        rc = proc.returncode
        exit_code, sig = procs.exit_status(rc)
        status = "finished" if rc == 0 else "interrupted" if job.killed else "failed"
        if status == "failed":
            job.failures += 1
        stopping = self.rec.stop.is_set()
        if status == "finished":
            last = stopping or job.index + 1 == len(item.commands)
        else:  # a failing command stops the rest of its task once its retries are spent
            last = stopping or status == "interrupted" or job.failures > self.opts.retries
        final = self.rec.command_ended(
            job.attempt,
            item,
            item.commands[job.index],
            status=status,
            exit_code=exit_code,
            signal=sig,
            log_path=job.log,
            last=last,
        )
        if last or self.rec.stop.is_set():
            self._finish(job)
            return
        if status == "finished":
            job.index += 1
            job.failures = 0
        elif final == "oom":  # re-allocate: wait for GPUs with the configured free memory again
            alloc, job.alloc = job.alloc, None
            self.allocator.release(alloc)
            self._request(job)
            return
        self.ready.append(job)

    # ------------------------------------------------------------------ stop
    def _stop_step(self) -> None:
        """TERM every live command tree once, KILL after the grace period (or at once on kill_now)."""
        now = time.monotonic()
        if not self.stopping:
            self.stopping = True
            self.deadline = now + self.opts.grace
        while self.to_acquire:  # never asked the allocator
            job = self.to_acquire.popleft()
            job.waiting = False
            self._finish(job)
        for job in [j for j in self.jobs if not j.waiting and not j.launching and j.proc is None]:
            self._finish(job)  # left half-way by an exception: nothing of it runs
        for pid, job in list(self.running.items()):
            if not job.killed:
                job.killed = True
                self.known[pid] = procs.descendants(pid)
                procs.signal_tree(pid, pid, signal.SIGTERM, self.known[pid])
        if self.killing_since is None and (self.rec.kill_now.is_set() or now >= self.deadline):
            self.killing_since = now
        if self.killing_since is not None and now >= self.next_kill:
            self.next_kill = now + STOP_POLL_S
            self._kill_all()

    def _kill_all(self) -> None:
        for pid in self.running:
            procs.signal_tree(pid, pid, signal.SIGKILL, self.known.get(pid, ()))
        for kids in self.known.values():
            for p in kids:
                try:
                    os.kill(p, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def _last_resort(self) -> None:
        """After the loop (even one that failed): kill and reap what is left, give everything back."""
        try:
            if self.spawn_thread is not None:
                self.spawn_thread.close()  # a spawn in flight completes; nothing more is taken
                for job, proc, _, _ in _drain(self.spawned):
                    job.launching = False
                    if proc is not None:  # started but never recorded: it goes down with the rest
                        job.proc = proc
                        self.running[proc.pid] = job
            for pid in self.running:
                self.known.setdefault(pid, procs.descendants(pid))
            while self.running:
                self._kill_all()
                for pid, job in list(self.running.items()):
                    if job.proc.poll() is not None:
                        del self.running[pid]
                        self._close_pidfd(job)
                if self.running:
                    time.sleep(STOP_POLL_S)
            for job in list(self.jobs):
                try:
                    self._finish(job)
                except Exception:  # best effort: the run is already failing
                    pass
        finally:
            for t in self.helpers:  # they see recorder.stop within the allocator's poll interval
                t.join()
            for _, alloc, _ in _drain(self.handoff):  # allocations handed back after the loop ended
                if alloc is not None:
                    self.allocator.release(alloc)
            for job in self.running.values():
                self._close_pidfd(job)
            self.selector.close()
            os.close(self.wake_r)
            os.close(self.wake_w)

    def _close_pidfd(self, job: _Job) -> None:
        if job.pidfd is not None:
            try:
                self.selector.unregister(job.pidfd)
            except (KeyError, ValueError):  # never registered
                pass
            os.close(job.pidfd)
            job.pidfd = None

    # ------------------------------------------------------------------ wake-ups
    def _wake(self) -> None:
        try:
            os.write(self.wake_w, b"\0")
        except OSError:  # full: a wake-up is pending anyway; closed: the loop is over
            pass

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    @contextmanager
    def _signal_wakeup(self) -> Iterator[None]:
        """Signals write a byte to our pipe, so the loop sees a stop request at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous)

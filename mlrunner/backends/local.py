"""The local backend: one worker thread per slot, each running a task's commands in order.

Commands run through bash in their own session (so a whole process group can be
signalled), with ``CUDA_VISIBLE_DEVICES`` in the environment and their whole output in
the experiment's log file. On stop (SIGINT/SIGTERM) nothing new is launched, every live
command's group and descendants get SIGTERM, then SIGKILL after the grace period (at once
on a second Ctrl-C).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence

from .. import procs
from .base import Backend, Recorder, RunOptions, WorkItem


class LocalBackend(Backend):
    name = "local"

    def __init__(self, allocator: object) -> None:
        # a mlrunner.gpu.SlotAllocator (typed loosely to keep this module import-light)
        self.allocator = allocator
        self._lock = threading.Lock()
        self._queue: deque[WorkItem] = deque()
        self._live: dict[int, subprocess.Popen[bytes]] = {}
        self._killed: set[int] = set()  # pids we signalled: their end is 'interrupted'

    # ------------------------------------------------------------------ run
    def execute(self, items: Sequence[WorkItem], recorder: Recorder, options: RunOptions) -> None:
        self._queue = deque(items)
        n = min(int(self.allocator.capacity), len(items))  # type: ignore[attr-defined]
        done = threading.Event()
        remaining = [n]
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                self._worker(recorder, options)
            except BaseException as exc:  # surfaced in the main thread below
                errors.append(exc)
                recorder.stop.set()
            finally:
                with self._lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        done.set()

        threads = [
            threading.Thread(target=worker, name=f"mlrunner-worker-{i}", daemon=True) for i in range(n)
        ]
        for t in threads:
            t.start()
        terminator: threading.Thread | None = None
        while not done.is_set() and n:
            done.wait(0.1)
            if recorder.stop.is_set() and terminator is None:
                terminator = threading.Thread(
                    target=self._terminate_all, args=(recorder, options.grace, done), daemon=True
                )
                terminator.start()
        for t in threads:
            t.join()
        if terminator is not None:
            terminator.join()
        if errors:
            raise errors[0]

    def _next(self) -> WorkItem | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _worker(self, recorder: Recorder, options: RunOptions) -> None:
        alloc_api = self.allocator
        while not recorder.stop.is_set():
            item = self._next()
            if item is None:
                return
            alloc = alloc_api.acquire(item.task.gpus, stop=recorder.stop)  # type: ignore[attr-defined]
            if alloc is None:  # stopped while waiting for a GPU
                return
            held = [alloc]  # _run_item may swap the allocation (OOM retry)
            try:
                if not recorder.claim(item):
                    continue
                try:
                    self._run_item(item, held, recorder, options)
                finally:
                    recorder.release(item)
            finally:
                if held[0] is not None:
                    alloc_api.release(held[0])  # type: ignore[attr-defined]

    def _run_item(self, item: WorkItem, held: list, recorder: Recorder, options: RunOptions) -> None:
        cwd = options.isolate_dir or options.cwd
        for command in item.commands:
            failures = 0
            while True:
                if recorder.stop.is_set():
                    return
                alloc = held[0]
                visible = alloc.visible  # type: ignore[attr-defined]
                env = dict(os.environ)
                env.update(alloc.env())  # CUDA_VISIBLE_DEVICES (+ CUDA_DEVICE_ORDER for GPU pools)
                log = recorder.log_path(item, command)
                with self._lock:
                    if recorder.stop.is_set():
                        return
                    proc = procs.spawn(command.text, log_path=log, env=env, cwd=cwd, tee=options.debug)
                    self._live[proc.pid] = proc
                attempt = recorder.command_started(
                    item,
                    command,
                    resource=visible,
                    gpus=alloc.gpus,  # type: ignore[attr-defined]
                    log_path=log,
                    pid=proc.pid,
                    pgid=proc.pid,
                )
                rc = proc.wait()
                with self._lock:
                    self._live.pop(proc.pid, None)
                    killed = proc.pid in self._killed
                exit_code, sig = procs.exit_status(rc)
                if rc == 0:
                    status = "finished"
                elif killed:
                    status = "interrupted"
                else:
                    status = "failed"
                final = recorder.command_ended(
                    attempt, item, command, status=status, exit_code=exit_code, signal=sig, log_path=log
                )
                if status == "finished":
                    break
                if status == "interrupted":
                    return
                failures += 1
                if failures > options.retries:
                    return  # a failing command stops the rest of its task
                if final == "oom":
                    # re-allocate: waits for GPUs that have the configured free memory again
                    self.allocator.release(alloc)  # type: ignore[attr-defined]
                    held[0] = None
                    held[0] = self.allocator.acquire(item.task.gpus, stop=recorder.stop)  # type: ignore[attr-defined]
                    if held[0] is None:
                        return

    # ------------------------------------------------------------------ stop
    def _terminate_all(self, recorder: Recorder, grace: float, done: threading.Event) -> None:
        """TERM every live command tree, KILL after ``grace`` (or at once on kill_now)."""
        known: dict[int, list[int]] = {}
        deadline = time.monotonic() + grace
        while True:
            with self._lock:
                live = dict(self._live)
                for pid in live:
                    if pid not in known:
                        self._killed.add(pid)
            for pid in live:
                if pid not in known:
                    known[pid] = procs.descendants(pid)
                    procs.signal_tree(pid, pid, signal.SIGTERM, known[pid])
            all_gone = not live and not any(
                procs.proc_start_time(p) is not None for kids in known.values() for p in kids
            )
            if done.is_set() and all_gone:
                return
            if recorder.kill_now.is_set() or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        while True:
            with self._lock:
                live = dict(self._live)
                self._killed.update(live)
            for pid in set(live) | set(known):
                kids = known.get(pid) or procs.descendants(pid)
                procs.signal_tree(pid, pid, signal.SIGKILL, kids)
            for kids in known.values():
                for p in kids:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            if done.is_set():
                return
            time.sleep(0.05)

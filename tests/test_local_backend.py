"""The local backend's event loop (mlrunner.backends.local.loop): real processes, real signals,
real slot allocators (fixed slots, and the GPU pool over the fake nvidia-smi)."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_gpus import install_fake_nvidia_smi

from mlrunner import procs
from mlrunner.backends.base import Allocation, RunOptions, WorkItem
from mlrunner.backends.local import LocalBackend
from mlrunner.backends.testing import Claimed, Ended, MemoryRecorder, Released, Started
from mlrunner.plan import Command, Task
from mlrunner.resources import SlotAllocator
from mlrunner.run import Runner, RunRequest
from mlrunner.spec import ResourceSpec
from mlrunner.status import AttemptStatus, FailureClass, RunStatus

FINISHED, FAILED, INTERRUPTED = AttemptStatus.FINISHED, AttemptStatus.FAILED, AttemptStatus.INTERRUPTED

HANG_GUARD_S = 60  # a hang guard, not a timing assertion


class Counting:
    """An allocator proxy that counts acquisitions and releases (leaks show as a difference)."""

    def __init__(self, allocator: SlotAllocator) -> None:
        self.inner = allocator
        self.capacity = allocator.capacity
        self.fixed = allocator.fixed
        self.acquired = 0
        self.released = 0
        self.lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self.inner.pending

    def acquire(self, need: int, *, stop: threading.Event, prefer: str | None = None) -> Allocation | None:
        alloc = self.inner.acquire(need, stop=stop, prefer=prefer)
        if alloc is not None:
            with self.lock:
                self.acquired += 1
        return alloc

    def release(self, alloc: Allocation) -> None:
        self.inner.release(alloc)
        with self.lock:
            self.released += 1


def items(
    *specs: tuple[str, list[tuple[str, str]]] | tuple[str, list[tuple[str, str]], int],
) -> list[WorkItem]:
    out = []
    for i, spec in enumerate(specs):
        name, commands = spec[0], spec[1]
        gpus = spec[2] if len(spec) > 2 else 1
        cmds = tuple(Command(n, t) for n, t in commands)
        task = Task(i, name, f"out/{name}", {}, {}, cmds, f"key-{name}", gpus)  # type: ignore[arg-type]
        out.append(WorkItem(task=task, commands=cmds, position=i + 1, total=len(specs)))
    return out


def slots(*names: str) -> Counting:
    return Counting(SlotAllocator(ResourceSpec(slots=names)))


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A work dir with a hostile name, also the process's cwd (commands run there)."""
    d = tmp_path / "it's a $(dir) with spaces"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


def options(cwd: Path, **kw: Any) -> RunOptions:
    return RunOptions(output=str(cwd / "out"), cwd=str(cwd), **kw)


def run_in_thread(fn: Callable[[], None]) -> threading.Thread:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # re-raised by the caller through .errors
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.errors = errors  # type: ignore[attr-defined]
    t.start()
    return t


def wait_for(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not cond():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def gone(pid: int) -> bool:
    return procs.proc_start_time(pid) is None


@pytest.fixture
def stop_on_sigterm(recorder_box: list[MemoryRecorder]) -> Iterator[None]:
    """What the scheduler does: SIGTERM sets recorder.stop (the loop gets the wake-up byte)."""

    def handle(signum: int, frame: object) -> None:
        recorder_box[0].stop.set()

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def recorder_box() -> list[MemoryRecorder]:
    return []


# --- running -------------------------------------------------------------------------------


def test_commands_of_a_task_run_in_order_on_its_slot_with_its_env_and_cwd(here: Path) -> None:
    rec = MemoryRecorder(here)
    alloc = slots("0", "1")
    work = items(
        *[
            (f"t{i}", [("a", 'echo "a $CUDA_VISIBLE_DEVICES $PWD"'), ("b", "echo b; sleep 0.05")])
            for i in range(5)
        ]
    )
    LocalBackend(alloc).execute(work, rec, options(here))
    assert alloc.acquired == alloc.released == 5
    running, peak = set(), 0
    for e in rec.events:  # never more commands alive than slots
        if isinstance(e, Started):
            running.add(e.task)
            peak = max(peak, len(running))
        elif isinstance(e, Ended):
            running.discard(e.task)
    assert peak == 2
    for i in range(5):
        name = f"t{i}"
        seq = [(type(e), e.command) for e in rec.events if isinstance(e, (Started, Ended)) and e.task == name]
        assert seq == [(Started, "a"), (Ended, "a"), (Started, "b"), (Ended, "b")]
        ends = rec.ends(name)
        assert [(e.outcome.status, e.outcome.exit_code, e.outcome.signal, e.last) for e in ends] == [
            (FINISHED, 0, None, False),
            (FINISHED, 0, None, True),
        ]
        start_a = rec.starts(name)[0]
        slot = start_a.placement.resource
        assert start_a.log_path.read_text() == f"a {slot} {here}\n"  # the slot's GPU, the run's cwd
        assert start_a.placement.gpus == (int(slot),)
        assert start_a.placement.process is None  # recorded before the spawn...
        process = rec.processes[start_a.attempt]  # ...its process right after
        assert process.pgid == process.pid  # its own process group
        if process.start is not None:  # known without /proc when the spawn fit in one clock tick
            assert process.start == procs.proc_start_time(process.pid) or gone(process.pid)
        assert [e.attempt for e in ends] == [e.attempt for e in rec.starts(name)]
    assert len(rec.releases()) == 5
    assert not rec.open_attempts
    assert not [e for e in rec.starts() if e.batched]  # a start is committed on its own
    assert all(e.batched for e in rec.ends())  # ends share the round's transaction


@pytest.mark.parametrize("where", ["our cwd", "elsewhere"])
def test_commands_run_in_bash_the_same_way_in_our_cwd_or_elsewhere(
    here: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # commands elsewhere than our cwd (run --isolate) get a `cd` from a bash of their own
    if where == "elsewhere":
        monkeypatch.chdir(tmp_path)
    assert (procs.Spawner(str(here)).cwd is None) == (where == "our cwd")
    script = textwrap.dedent(
        """\
        printf '%s|' "it's" '$(touch pwned)' "a  b"; echo
        read -r line; echo "stdin=$?"
        [ "$(ps -o sid= -p $$ | tr -d ' ')" = $$ ] && echo own-session
        yes | head -c 2 > /dev/null; echo "pipe=${PIPESTATUS[0]}"
        ls /proc/$$/fd > fds.txt
        echo "cwd $PWD"
        echo "err" >&2
        """
    )
    leaked = os.open(tmp_path, os.O_RDONLY)  # as from a shell that leaks a descriptor to us
    os.set_inheritable(leaked, True)
    try:
        rec = MemoryRecorder(here)
        LocalBackend(slots("0")).execute(items(("t", [("a", script)])), rec, options(here))
    finally:
        os.close(leaked)
    out = rec.starts("t")[0].log_path.read_text().splitlines()
    assert out == [
        "it's|$(touch pwned)|a  b|",
        "stdin=1",  # /dev/null
        "own-session",
        "pipe=141",  # SIGPIPE back to its default
        f"cwd {here}",
        "err",
    ]
    assert (here / "fds.txt").read_text().split() == ["0", "1", "2"]  # nothing inherited
    assert not (here / "pwned").exists()


def test_without_pidfds_the_loop_polls(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "pidfd_open")
    rec = MemoryRecorder(here)
    LocalBackend(slots("0", "1")).execute(
        items(*[(f"t{i}", [("a", "true")]) for i in range(4)]), rec, options(here)
    )
    assert [e.outcome.status for e in rec.ends()] == [FINISHED] * 4


def test_a_failure_stops_its_task_retries_rerun_it_and_oom_reacquires(here: Path) -> None:
    rec = MemoryRecorder(here, classify={"oom": FailureClass.GPU_OOM})
    alloc = slots("0")
    once = "test -e {0} || {{ touch {0}; exit 3; }}"
    work = items(
        ("fails", [("a", "exit 3"), ("b", "echo never")]),
        ("flaky", [("a", once.format("flaky.mark")), ("b", "true")]),
        ("oom", [("a", once.format("oom.mark"))]),
    )
    LocalBackend(alloc).execute(work, rec, options(here, retries=1))
    fails = [(e.command, e.outcome.status, e.outcome.exit_code, e.last) for e in rec.ends("fails")]
    assert fails == [("a", FAILED, 3, False), ("a", FAILED, 3, True)]  # one retry, then the task stops
    assert not [e for e in rec.starts("fails") if e.command == "b"]
    assert [(e.command, e.outcome.status, e.last) for e in rec.ends("flaky")] == [
        ("a", FAILED, False),
        ("a", FINISHED, False),
        ("b", FINISHED, True),
    ]
    assert [(e.outcome.status, e.result) for e in rec.ends("oom")] == [
        (FAILED, FailureClass.GPU_OOM),
        (FINISHED, FINISHED),
    ]
    # three tasks, plus the OOM retry's new allocation
    assert alloc.acquired == alloc.released == 4


def test_a_refused_claim_skips_the_item_and_frees_its_slot(here: Path) -> None:
    rec = MemoryRecorder(here, refuse=("b",))
    alloc = slots("0")
    LocalBackend(alloc).execute(items(*[(n, [("a", "true")]) for n in "abc"]), rec, options(here))
    assert [e.task for e in rec.starts()] == ["a", "c"]
    assert rec.claims() == [Claimed("a", True), Claimed("b", False), Claimed("c", True)]
    assert rec.releases() == [Released("a"), Released("c")]  # nothing to release for b
    assert alloc.acquired == alloc.released == 3


def test_a_recorder_error_stops_everything_and_is_raised(here: Path) -> None:
    rec = MemoryRecorder(here, fail_start=("b",))
    alloc = slots("0", "1")
    work = items(("a", [("a", "sleep 300")]), ("b", [("a", "sleep 300")]))
    with pytest.raises(RuntimeError, match="recorder broke on b"):
        LocalBackend(alloc).execute(work, rec, options(here, grace=5))
    assert rec.stop.is_set()
    (start,) = rec.starts()
    assert start.task == "a" and gone(rec.processes[start.attempt].pid)
    assert [e.outcome.status for e in rec.ends("a")] == [INTERRUPTED]
    assert not rec.ends("b")  # its start was never recorded
    assert [e.task for e in rec.releases()] == ["a", "b"] or [e.task for e in rec.releases()] == ["b", "a"]
    assert alloc.acquired == alloc.released == 2


# --- stopping ------------------------------------------------------------------------------


def test_sigterm_stops_the_group_and_an_escaped_grandchild(
    here: Path, recorder_box: list[MemoryRecorder], stop_on_sigterm: None
) -> None:
    rec = MemoryRecorder(here)
    recorder_box.append(rec)
    script = "setsid sleep 300 & echo $! > escaped.pid; sleep 300 & echo $! > child.pid; wait"
    work = items(("t", [("a", script), ("b", "echo never")]), ("u", [("a", "echo never")]))

    def send() -> None:
        wait_for(lambda: (here / "escaped.pid").exists() and (here / "child.pid").exists(), "pids written")
        time.sleep(0.05)  # let bash reach `wait`
        os.kill(os.getpid(), signal.SIGTERM)

    t = run_in_thread(send)
    LocalBackend(slots("0")).execute(work, rec, options(here, grace=30))
    t.join()
    assert [(e.task, e.command, e.outcome.status, e.outcome.signal, e.last) for e in rec.ends()] == [
        ("t", "a", INTERRUPTED, signal.SIGTERM, True)
    ]
    assert [e.task for e in rec.starts()] == ["t"]  # nothing launched after the stop
    for name in ("escaped.pid", "child.pid"):
        assert gone(int((here / name).read_text()))


def test_commands_that_ignore_sigterm_are_killed_after_the_grace_period(here: Path) -> None:
    rec = MemoryRecorder(here)
    script = "trap '' TERM; sleep 300 & echo $! > child.pid; wait; wait"
    t = run_in_thread(lambda: (wait_for(lambda: (here / "child.pid").exists(), "started"), rec.stop.set()))
    LocalBackend(slots("0")).execute(items(("t", [("a", script)])), rec, options(here, grace=0.3))
    t.join()
    assert [(e.outcome.status, e.outcome.signal) for e in rec.ends()] == [(INTERRUPTED, signal.SIGKILL)]
    assert gone(int((here / "child.pid").read_text()))


def test_kill_now_does_not_wait_for_the_grace_period(here: Path) -> None:
    rec = MemoryRecorder(here)
    script = "trap '' TERM; sleep 300 & echo $! > child.pid; wait; wait"

    def stop_then_kill() -> None:
        wait_for(lambda: (here / "child.pid").exists(), "started")
        rec.stop.set()
        time.sleep(0.2)
        rec.kill_now.set()  # a second Ctrl-C

    t = run_in_thread(stop_then_kill)
    backend = run_in_thread(
        lambda: LocalBackend(slots("0")).execute(
            items(("t", [("a", script)])), rec, options(here, grace=3600)
        )
    )
    backend.join(HANG_GUARD_S)
    assert not backend.is_alive(), "the backend waited for the grace period despite kill_now"
    t.join()
    assert [(e.outcome.status, e.outcome.signal) for e in rec.ends()] == [(INTERRUPTED, signal.SIGKILL)]


# --- allocation ----------------------------------------------------------------------------


def test_a_blocked_multi_gpu_task_lets_a_one_gpu_task_backfill(
    here: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_nvidia_smi(monkeypatch, tmp_path)
    pool = ResourceSpec(slots=None, auto=False, gpus=(0, 1, 2, 3), per_gpu=1)
    inner = SlotAllocator(pool, lock_dir=str(tmp_path / "locks"))
    alloc = Counting(inner)
    rec = MemoryRecorder(here)
    wait_go = "while [ ! -e go.{0} ]; do sleep 0.01; done"
    work = items(
        ("a", [("x", wait_go.format("a"))]),
        ("b", [("x", wait_go.format("b"))]),
        ("c", [("x", wait_go.format("c"))]),
        ("big", [("x", "true")], 3),  # blocks: reserves GPU 3 and the least loaded (0, 1)
        ("small", [("x", "true")]),
    )

    def drive() -> None:
        try:
            wait_for(lambda: len(rec.starts()) == 3 and inner.pending == 1, "a, b, c running, big blocked")
            assert [e.task for e in rec.starts()] == ["a", "b", "c"]  # asked in item order
            (here / "go.c").touch()  # GPU 2 frees: big cannot use it (still short), small backfills
            wait_for(lambda: bool(rec.ends("small")), "small ran")
            assert not rec.starts("big")
        finally:  # never leave the backend waiting
            for name in "abc":
                (here / f"go.{name}").touch()

    t = run_in_thread(drive)
    backend = run_in_thread(lambda: LocalBackend(alloc).execute(work, rec, options(here)))
    t.join(HANG_GUARD_S)
    backend.join(HANG_GUARD_S)
    for th in (t, backend):
        assert not th.is_alive() and not th.errors, th.errors  # type: ignore[attr-defined]
    starts = {e.task: e.placement.resource for e in rec.starts()}
    assert starts["small"] == "2" and len(set(starts["big"].split(","))) == 3
    order = [e.task for e in rec.starts()]
    assert order.index("small") < order.index("big")
    big = rec.starts("big")[0].placement
    assert big.gpus is not None and sorted(big.gpus) == sorted(int(g) for g in big.resource.split(","))
    assert alloc.acquired == alloc.released == 5


# --- with the scheduler's recorder -----------------------------------------------------------


def test_stat_shows_running_for_a_command_that_outlasts_the_delay(here: Path) -> None:
    (here / "params.yaml").write_text(
        textwrap.dedent(
            """\
            template:
              a: "bash -c {cmd}"  # values are quoted: the command is one argument
            resource: [0, 1]
            ---
            cmd: ["true", "while [ ! -e go ]; do sleep 0.01; done"]
            """
        )
    )
    summary: list[Any] = []
    runner = run_in_thread(lambda: summary.append(Runner(RunRequest(output="out", cwd=str(here))).run()))
    stats = lambda: [  # noqa: E731
        yaml.safe_load(p.read_text()) for p in sorted((here / "out").glob("*/stat")) if p.read_text()
    ]
    wait_for(lambda: {"a": "running"} in stats() or not runner.is_alive(), "the stat says running")
    assert runner.is_alive() and not runner.errors, runner.errors  # type: ignore[attr-defined]
    (here / "go").touch()
    runner.join(HANG_GUARD_S)
    assert not runner.is_alive() and not runner.errors  # type: ignore[attr-defined]
    assert summary[0].status == RunStatus.FINISHED
    assert stats() == [{"a": "finished"}, {"a": "finished"}]

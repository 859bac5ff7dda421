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
from mlrunner.backends.base import RunOptions, WorkItem
from mlrunner.backends.local import LocalBackend
from mlrunner.backends.local import loop as local
from mlrunner.plan import Command, Task
from mlrunner.resources import SlotAllocator
from mlrunner.run import Runner, RunRequest
from mlrunner.spec import ResourceSpec

HANG_GUARD_S = 60  # a hang guard, not a timing assertion


class Recorder:
    """Records what the backend reports, in order (the real one writes the ledger)."""

    def __init__(self, logs: Path, *, refuse: tuple[str, ...] = (), oom: tuple[str, ...] = ()) -> None:
        self.stop = threading.Event()
        self.kill_now = threading.Event()
        self.logs = logs
        self.refuse = set(refuse)
        self.oom = set(oom)  # tasks whose first failure is reported as an OOM
        self.events: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()
        self.fail_start: set[str] = set()

    def _add(self, *event: Any) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: str, task: str | None = None) -> list[tuple[Any, ...]]:
        with self.lock:
            return [e for e in self.events if e[0] == kind and (task is None or e[1] == task)]

    def claim(self, item: WorkItem) -> bool:
        ok = item.task.name not in self.refuse
        self._add("claim", item.task.name, ok)
        return ok

    def release(self, item: WorkItem) -> None:
        self._add("release", item.task.name)

    def log_path(self, item: WorkItem, command: Command) -> Path:
        n = len([e for e in self.of("start", item.task.name) if e[2] == command.name])
        return self.logs / f"{item.task.name}.{command.name}.{n}.log"

    def command_started(self, item: WorkItem, command: Command, **kw: Any) -> int:
        if item.task.name in self.fail_start:
            raise RuntimeError(f"recorder broke on {item.task.name}")
        self._add("start", item.task.name, command.name, kw["resource"], kw["pid"], kw["log_path"])
        return len(self.events)

    def command_ended(self, attempt_id: int, item: WorkItem, command: Command, **kw: Any) -> str:
        self._add(
            "end", item.task.name, command.name, kw["status"], kw["exit_code"], kw["signal"], kw["last"]
        )
        if kw["status"] == "failed" and item.task.name in self.oom:
            self.oom.discard(item.task.name)
            return "oom"
        return kw["status"]

    def previous_jobs(self, item: WorkItem) -> list[dict[str, Any]]:
        return []


class Counting:
    """An allocator proxy that counts acquisitions and releases (leaks show as a difference)."""

    def __init__(self, allocator: SlotAllocator) -> None:
        self.inner = allocator
        self.capacity = allocator.capacity
        self.mode = allocator.mode
        self.acquired = 0
        self.released = 0
        self.lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self.inner.pending

    def acquire(self, need: int, *, stop: threading.Event) -> Any:
        alloc = self.inner.acquire(need, stop=stop)
        if alloc is not None:
            with self.lock:
                self.acquired += 1
        return alloc

    def release(self, alloc: Any) -> None:
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


@pytest.fixture(autouse=True, params=["auto", "spawn-thread"])
def spawn_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: the default choice of spawn path, and the spawn thread forced on."""
    if request.param == "spawn-thread":
        monkeypatch.setenv(local.SPAWN_THREAD_ENV, "1")
    else:
        monkeypatch.delenv(local.SPAWN_THREAD_ENV, raising=False)
    return str(request.param)


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
def stop_on_sigterm(recorder_box: list[Recorder]) -> Iterator[None]:
    """What the scheduler does: SIGTERM sets recorder.stop (the loop gets the wake-up byte)."""

    def handle(signum: int, frame: object) -> None:
        recorder_box[0].stop.set()

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def recorder_box() -> list[Recorder]:
    return []


# --- running -------------------------------------------------------------------------------


def test_commands_of_a_task_run_in_order_on_its_slot_with_its_env_and_cwd(here: Path) -> None:
    rec = Recorder(here)
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
        if e[0] == "start":
            running.add(e[1])
            peak = max(peak, len(running))
        elif e[0] == "end":
            running.discard(e[1])
    assert peak == 2
    for i in range(5):
        name = f"t{i}"
        seq = [(e[0], e[2]) for e in rec.events if e[0] in ("start", "end") and e[1] == name]
        assert seq == [("start", "a"), ("end", "a"), ("start", "b"), ("end", "b")]
        ends = rec.of("end", name)
        assert [(e[3], e[4], e[5], e[6]) for e in ends] == [
            ("finished", 0, None, False),
            ("finished", 0, None, True),
        ]
        start_a = rec.of("start", name)[0]
        assert start_a[5].read_text() == f"a {start_a[3]} {here}\n"  # the slot's GPU, the run's cwd
    assert [e[0] for e in rec.events].count("release") == 5


@pytest.mark.parametrize("path", ["posix_spawn", "popen"])
def test_both_spawn_paths_run_bash_the_same_way(
    here: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    # posix_spawn runs in the process's cwd: with commands elsewhere, procs.spawn (Popen)
    if path == "popen":
        monkeypatch.chdir(tmp_path)
    assert (local._Spawner(options(here), str(here), dict(os.environ)).bash is None) == (path == "popen")
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
        rec = Recorder(here)
        LocalBackend(slots("0")).execute(items(("t", [("a", script)])), rec, options(here))
    finally:
        os.close(leaked)
    out = rec.of("start", "t")[0][5].read_text().splitlines()
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
    rec = Recorder(here)
    LocalBackend(slots("0", "1")).execute(
        items(*[(f"t{i}", [("a", "true")]) for i in range(4)]), rec, options(here)
    )
    assert [e[3] for e in rec.of("end")] == ["finished"] * 4


def test_a_failure_stops_its_task_retries_rerun_it_and_oom_reacquires(here: Path) -> None:
    rec = Recorder(here, oom=("oom",))
    alloc = slots("0")
    once = "test -e {0} || {{ touch {0}; exit 3; }}"
    work = items(
        ("fails", [("a", "exit 3"), ("b", "echo never")]),
        ("flaky", [("a", once.format("flaky.mark")), ("b", "true")]),
        ("oom", [("a", once.format("oom.mark"))]),
    )
    LocalBackend(alloc).execute(work, rec, options(here, retries=1))
    fails = [(e[2], e[3], e[4]) for e in rec.of("end", "fails")]
    assert fails == [("a", "failed", 3), ("a", "failed", 3)]  # one retry, then the task stops
    assert not [e for e in rec.of("start", "fails") if e[2] == "b"]
    assert [(e[2], e[3], e[6]) for e in rec.of("end", "flaky")] == [
        ("a", "failed", False),
        ("a", "finished", False),
        ("b", "finished", True),
    ]
    assert [e[3] for e in rec.of("end", "oom")] == ["failed", "finished"]
    # three tasks, plus the OOM retry's new allocation
    assert alloc.acquired == alloc.released == 4


def test_a_refused_claim_skips_the_item_and_frees_its_slot(here: Path) -> None:
    rec = Recorder(here, refuse=("b",))
    alloc = slots("0")
    LocalBackend(alloc).execute(items(*[(n, [("a", "true")]) for n in "abc"]), rec, options(here))
    assert [e[1] for e in rec.of("start")] == ["a", "c"]
    assert [e[1] for e in rec.of("release")] == ["a", "c"]  # nothing to release for b
    assert alloc.acquired == alloc.released == 3


def test_a_recorder_error_stops_everything_and_is_raised(here: Path) -> None:
    rec = Recorder(here)
    rec.fail_start.add("b")
    alloc = slots("0", "1")
    work = items(("a", [("a", "sleep 300")]), ("b", [("a", "sleep 300")]))
    with pytest.raises(RuntimeError, match="recorder broke on b"):
        LocalBackend(alloc).execute(work, rec, options(here, grace=5))
    assert rec.stop.is_set()
    (start,) = rec.of("start")
    assert start[1] == "a" and gone(start[4])
    assert [e[3] for e in rec.of("end", "a")] == ["interrupted"]
    assert not rec.of("end", "b")  # its start was never recorded
    assert alloc.acquired == alloc.released == 2


# --- stopping ------------------------------------------------------------------------------


def test_sigterm_stops_the_group_and_an_escaped_grandchild(
    here: Path, recorder_box: list[Recorder], stop_on_sigterm: None
) -> None:
    rec = Recorder(here)
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
    assert [(e[1], e[2], e[3], e[5]) for e in rec.of("end")] == [("t", "a", "interrupted", signal.SIGTERM)]
    assert [e[1] for e in rec.of("start")] == ["t"]  # nothing launched after the stop
    for name in ("escaped.pid", "child.pid"):
        assert gone(int((here / name).read_text()))


def test_commands_that_ignore_sigterm_are_killed_after_the_grace_period(here: Path) -> None:
    rec = Recorder(here)
    script = "trap '' TERM; sleep 300 & echo $! > child.pid; wait; wait"
    t = run_in_thread(lambda: (wait_for(lambda: (here / "child.pid").exists(), "started"), rec.stop.set()))
    LocalBackend(slots("0")).execute(items(("t", [("a", script)])), rec, options(here, grace=0.3))
    t.join()
    assert [(e[3], e[5]) for e in rec.of("end")] == [("interrupted", signal.SIGKILL)]
    assert gone(int((here / "child.pid").read_text()))


def test_kill_now_does_not_wait_for_the_grace_period(here: Path) -> None:
    rec = Recorder(here)
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
    assert [(e[3], e[5]) for e in rec.of("end")] == [("interrupted", signal.SIGKILL)]


# --- allocation ----------------------------------------------------------------------------


def test_a_blocked_multi_gpu_task_lets_a_one_gpu_task_backfill(
    here: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_nvidia_smi(monkeypatch, tmp_path)
    pool = ResourceSpec(slots=None, auto=False, gpus=(0, 1, 2, 3), per_gpu=1)
    inner = SlotAllocator(pool, lock_dir=str(tmp_path / "locks"))
    alloc = Counting(inner)
    rec = Recorder(here)
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
            wait_for(lambda: len(rec.of("start")) == 3 and inner.pending == 1, "a, b, c running, big blocked")
            assert [e[1] for e in rec.of("start")] == ["a", "b", "c"]  # asked in item order
            (here / "go.c").touch()  # GPU 2 frees: big cannot use it (still short), small backfills
            wait_for(lambda: bool(rec.of("end", "small")), "small ran")
            assert not rec.of("start", "big")
        finally:  # never leave the backend waiting
            for name in "abc":
                (here / f"go.{name}").touch()

    t = run_in_thread(drive)
    backend = run_in_thread(lambda: LocalBackend(alloc).execute(work, rec, options(here)))
    t.join(HANG_GUARD_S)
    backend.join(HANG_GUARD_S)
    for th in (t, backend):
        assert not th.is_alive() and not th.errors, th.errors  # type: ignore[attr-defined]
    starts = {e[1]: e[3] for e in rec.of("start")}
    assert starts["small"] == "2" and len(set(starts["big"].split(","))) == 3
    assert [e[1] for e in rec.of("start")].index("small") < [e[1] for e in rec.of("start")].index("big")
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
    assert summary[0].status == "finished"
    assert stats() == [{"a": "finished"}, {"a": "finished"}]

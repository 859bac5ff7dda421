"""mlrunner.resources.slots.SlotAllocator: fixed 0.5.9 slots and the GPU pool with machine-wide shares.

GPU tests run against tests/fake_bin/nvidia-smi with 4 GPUs, GPU 3 nearly full, and run real
bash commands that write their CUDA_VISIBLE_DEVICES and start/end times.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from fake_gpus import (
    FOUR_GPUS,
    MIB_PER_GIB,
    hide_nvidia_smi,
    install_fake_nvidia_smi,
    max_tasks_per_gpu,
    read_records,
    run_tasks,
    write_table,
)

from mlrunner.errors import ResourceError
from mlrunner.resources import Allocation, NvidiaSmiNotFound, ShareLock, SlotAllocator
from mlrunner.spec import ResourceSpec

TEN_GIB = 10 * MIB_PER_GIB


@pytest.fixture
def fake_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return install_fake_nvidia_smi(monkeypatch, tmp_path)


@pytest.fixture
def lock_dir(tmp_path: Path) -> str:
    return str(tmp_path / "gpu locks")


def pool(gpus=None, per_gpu: int = 1, min_free: int | None = None) -> ResourceSpec:
    """The mapping form: gpus None means `gpus: auto`."""
    return ResourceSpec(
        slots=None, auto=gpus is None, gpus=gpus, per_gpu=per_gpu, min_free_memory_mib=min_free
    )


class Waiter(threading.Thread):
    """acquire() in a thread; .result holds the allocation (or None once stopped)."""

    def __init__(self, allocator: SlotAllocator, need: int, name: str, order: list[str], **kw) -> None:
        super().__init__(name=name, daemon=True)  # a failing test must not hang pytest's exit
        self.allocator, self.need, self.order, self.kw = allocator, need, order, kw
        self.stop = threading.Event()
        self.result: Allocation | None = None
        self.done = threading.Event()

    def run(self) -> None:
        self.result = self.allocator.acquire(self.need, stop=self.stop, **self.kw)
        self.order.append(self.name)
        self.done.set()


def wait_pending(allocator: SlotAllocator, n: int, *watch: Waiter) -> None:
    """Wait until ``n`` acquire() calls are blocked; fail at once if a watched one got served."""
    deadline = time.monotonic() + 60  # a hang guard, not a timing assertion
    while allocator.pending < n:
        for w in watch:
            assert not w.done.is_set(), f"{w.name} was served: {w.result}"
        assert time.monotonic() < deadline, f"{n} waiters never blocked"
        time.sleep(0.01)


# --- GPU pool: auto, per_gpu, min_free_memory ---------------------------------------------


def test_auto_per_gpu_min_free_capacity_skips_full_gpu(fake_smi: Path, lock_dir: str) -> None:
    allocator = SlotAllocator(pool(per_gpu=2, min_free=TEN_GIB), lock_dir=lock_dir)
    assert (allocator.mode, allocator.capacity, allocator.gpus) == ("gpus", 6, (0, 1, 2, 3))
    stop = threading.Event()
    allocs = [allocator.acquire(1, stop=stop) for _ in range(6)]
    assert all(a is not None for a in allocs)
    assert Counter(a.gpus for a in allocs) == {(0,): 2, (1,): 2, (2,): 2}
    assert sorted(a.slot for a in allocs) == list(range(6))
    # least loaded first, then most free memory: 2 (81420 free), 0, 1, then the second shares
    assert [a.visible for a in allocs] == ["2", "0", "1", "2", "0", "1"]
    assert allocs[0].env() == {"CUDA_VISIBLE_DEVICES": "2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert sorted(os.listdir(lock_dir)) == [f"gpu{g}.share{k}.lock" for g in (0, 1, 2) for k in (0, 1)]
    seventh = Waiter(allocator, 1, "seventh", [])
    seventh.start()
    wait_pending(allocator, 1, seventh)
    seventh.stop.set()
    seventh.join()
    assert seventh.result is None
    for a in allocs:
        allocator.release(a)
    again = allocator.acquire(1, stop=stop)
    assert again is not None and again.gpus == (2,)


def test_auto_real_commands_at_most_per_gpu_and_never_the_full_gpu(
    fake_smi: Path, lock_dir: str, tmp_path: Path
):
    allocator = SlotAllocator(pool(per_gpu=2, min_free=TEN_GIB), lock_dir=lock_dir)
    records = run_tasks(allocator, [1] * 14, tmp_path / "out", workers=allocator.capacity)
    assert sorted(r.task for r in records) == list(range(14))  # all tasks ran
    assert all(len(r.gpus) == 1 for r in records)
    assert {g for r in records for g in r.gpus} <= {0, 1, 2}  # GPU 3 never
    assert max(max_tasks_per_gpu(records).values()) <= 2


def test_two_gpu_tasks_get_distinct_gpus_and_mixed_tasks_all_finish(
    fake_smi: Path, lock_dir: str, tmp_path: Path
):
    allocator = SlotAllocator(pool(per_gpu=1), lock_dir=lock_dir)
    assert allocator.capacity == 4
    needs = [2, 1, 1, 2, 1, 2, 1, 1, 2, 1, 3, 1]
    records = run_tasks(allocator, needs, tmp_path / "out", workers=4, sleep=0.1)
    assert sorted(r.task for r in records) == list(range(len(needs)))  # no starvation: all ran
    for r in records:
        assert len(r.gpus) == len(set(r.gpus)) == needs[r.task], r
    assert max(max_tasks_per_gpu(records).values()) == 1


def test_two_gpu_tasks_share_gpus_up_to_per_gpu(fake_smi: Path, lock_dir: str, tmp_path: Path) -> None:
    allocator = SlotAllocator(pool(per_gpu=2, min_free=TEN_GIB), lock_dir=lock_dir)
    records = run_tasks(allocator, [2, 2, 1, 2, 2, 1, 2, 2], tmp_path / "out", workers=6, sleep=0.1)
    assert len(records) == 8
    assert all(len(set(r.gpus)) == len(r.gpus) for r in records)
    assert {g for r in records for g in r.gpus} <= {0, 1, 2}
    assert max(max_tasks_per_gpu(records).values()) <= 2


def test_min_free_is_read_at_acquire_time(fake_smi: Path, lock_dir: str) -> None:
    allocator = SlotAllocator(pool(per_gpu=1, min_free=TEN_GIB), lock_dir=lock_dir, cache_seconds=0)
    assert allocator.capacity == 3
    gpus = [dict(g) for g in FOUR_GPUS]
    gpus[2]["memory_used"] = 80000  # someone else filled GPU 2
    gpus[3]["memory_used"] = 0  # and freed GPU 3
    write_table(fake_smi, gpus)
    stop = threading.Event()
    got = [allocator.acquire(1, stop=stop) for _ in range(3)]
    assert sorted(a.gpus for a in got) == [(0,), (1,), (3,)]


def test_oom_retry_waits_for_a_gpu_with_more_free_memory(fake_smi: Path, lock_dir: str) -> None:
    allocator = SlotAllocator(pool(per_gpu=1, min_free=TEN_GIB), lock_dir=lock_dir)
    stop = threading.Event()
    big = allocator.acquire(1, stop=stop, min_free_mib=70000)  # only GPUs 0 and 2 have that much
    other = allocator.acquire(1, stop=stop, min_free_mib=70000)
    assert big is not None and other is not None and {big.gpus, other.gpus} == {(0,), (2,)}
    order: list[str] = []
    waiter = Waiter(allocator, 1, "needs 70000", order, min_free_mib=70000)
    waiter.start()
    wait_pending(allocator, 1, waiter)  # GPU 1 is free but has only 61920 MiB
    small = allocator.acquire(1, stop=stop)  # the default min_free fits GPU 1 (no reservation blocks it)
    assert small is not None and small.gpus == (1,)
    allocator.release(big)
    waiter.join()
    assert waiter.result is not None and waiter.result.gpus == big.gpus


def test_a_gpu_missing_from_nvidia_smi_is_only_skipped_by_memory_filters(
    fake_smi: Path, lock_dir: str
) -> None:
    allocator = SlotAllocator(pool(gpus=(0, 1)), lock_dir=lock_dir, cache_seconds=0)
    write_table(fake_smi, FOUR_GPUS[:1])  # GPU 1 fell off the bus
    stop = threading.Event()
    retry = allocator.acquire(1, stop=stop, min_free_mib=1000)
    assert retry is not None and retry.gpus == (0,)
    plain = allocator.acquire(1, stop=stop)  # no memory filter: the configured list stands
    assert plain is not None and plain.gpus == (1,)


def test_memory_filter_without_nvidia_smi_fails_cleanly(
    monkeypatch: pytest.MonkeyPatch, lock_dir: str
) -> None:
    hide_nvidia_smi(monkeypatch)
    allocator = SlotAllocator(pool(gpus=(0, 1)), lock_dir=lock_dir)
    with pytest.raises(ResourceError, match="min_free_memory needs nvidia-smi"):
        allocator.acquire(1, stop=threading.Event(), min_free_mib=1000)
    assert allocator.pending == 0
    both = allocator.acquire(2, stop=threading.Event())
    assert both is not None and both.gpus == (0, 1)  # nothing leaked


def test_nvidia_smi_is_asked_at_most_once_per_cache_period(
    fake_smi: Path, lock_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_NVIDIA_SMI_LOG", str(log))
    allocator = SlotAllocator(pool(per_gpu=2, min_free=TEN_GIB), lock_dir=lock_dir, cache_seconds=3600)
    stop = threading.Event()
    for _ in range(5):
        alloc = allocator.acquire(1, stop=stop)
        assert alloc is not None
        allocator.release(alloc)
    assert len(log.read_text().splitlines()) == 1  # discovery's answer serves the acquires


def test_no_nvidia_smi_with_auto_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, lock_dir: str) -> None:
    hide_nvidia_smi(monkeypatch)
    with pytest.raises(NvidiaSmiNotFound) as info:
        SlotAllocator(ResourceSpec(slots=None, auto=True), lock_dir=lock_dir)
    assert "nvidia-smi is not on PATH" in str(info.value)
    assert "`resource: [0, 1]`" in str(info.value) and "`-r 0 -r 1`" in str(info.value)


def test_broken_driver_with_auto_shows_its_error(
    fake_smi: Path, lock_dir: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("FAKE_NVIDIA_SMI_FAIL", "9")
    with pytest.raises(ResourceError, match="couldn't communicate with the NVIDIA driver"):
        SlotAllocator(pool(), lock_dir=lock_dir)


def test_given_gpus_work_without_nvidia_smi_unless_min_free(monkeypatch: pytest.MonkeyPatch, lock_dir: str):
    hide_nvidia_smi(monkeypatch)
    allocator = SlotAllocator(pool(gpus=(1, 3), per_gpu=2), lock_dir=lock_dir)
    assert (allocator.capacity, allocator.gpus) == (4, (1, 3))
    alloc = allocator.acquire(2, stop=threading.Event())
    assert alloc is not None and (alloc.visible, alloc.gpus) == ("1,3", (1, 3))
    with pytest.raises(ResourceError, match="min_free_memory needs nvidia-smi"):
        SlotAllocator(pool(gpus=(1, 3), min_free=TEN_GIB), lock_dir=lock_dir)


def test_given_gpus_are_checked_against_nvidia_smi(fake_smi: Path, lock_dir: str) -> None:
    with pytest.raises(
        ResourceError, match=r"GPU 7 of resource.gpus \[0, 7\] does not exist: nvidia-smi lists 0, 1"
    ):
        SlotAllocator(pool(gpus=(0, 7)), lock_dir=lock_dir)
    with pytest.raises(ResourceError, match="GPU 1 is listed twice"):
        SlotAllocator(pool(gpus=(1, 0, 1)), lock_dir=lock_dir)
    with pytest.raises(ResourceError, match="per_gpu must be at least 1"):
        SlotAllocator(pool(gpus=(0,), per_gpu=0), lock_dir=lock_dir)
    with pytest.raises(ResourceError, match=r"no GPU has min_free_memory \(81000 MiB\) free now"):
        SlotAllocator(pool(gpus=(1, 3), min_free=81000), lock_dir=lock_dir)


def test_check_rejects_tasks_that_can_never_fit(fake_smi: Path, lock_dir: str) -> None:
    allocator = SlotAllocator(pool(min_free=TEN_GIB), lock_dir=lock_dir)
    allocator.check(4)  # GPU 3 may free up: the pool has 4 GPUs
    with pytest.raises(ResourceError, match=r"tasks need 5 GPUs \(_gpus: 5\) but the resource has only 4"):
        allocator.check(5)
    with pytest.raises(ResourceError, match="lower _gpus to at most 4"):
        allocator.acquire(5, stop=threading.Event())


def test_zero_gpu_task_takes_a_slot_but_no_gpu(fake_smi: Path, lock_dir: str) -> None:
    allocator = SlotAllocator(pool(gpus=(0,), per_gpu=2), lock_dir=lock_dir)
    stop = threading.Event()
    cpu_only = allocator.acquire(0, stop=stop)
    assert cpu_only is not None and (cpu_only.visible, cpu_only.gpus) == ("", ())
    gpu_task = allocator.acquire(1, stop=stop)
    assert gpu_task is not None and gpu_task.gpus == (0,)
    assert {cpu_only.slot, gpu_task.slot} == {0, 1}
    assert ShareLock.try_take(allocator.lock_dir, 0, 1) is not None  # the 0-GPU task holds no share


# --- fairness -------------------------------------------------------------------------------


def test_two_gpu_task_is_not_starved_by_later_one_gpu_tasks(fake_smi: Path, lock_dir: str) -> None:
    allocator = SlotAllocator(pool(gpus=(0, 1)), lock_dir=lock_dir)
    stop = threading.Event()
    first = allocator.acquire(1, stop=stop)
    assert first is not None and first.gpus == (0,)
    order: list[str] = []
    big = Waiter(allocator, 2, "big", order)
    big.start()
    wait_pending(allocator, 1, big)
    small = Waiter(allocator, 1, "small", order)
    small.start()
    wait_pending(allocator, 2, big, small)  # GPU 1 is free, yet kept for the older 2-GPU task
    allocator.release(first)
    big.join()
    assert order == ["big"] and big.result is not None and big.result.gpus == (0, 1)
    allocator.release(big.result)
    small.join()
    assert order == ["big", "small"]


def test_younger_tasks_backfill_gpus_the_oldest_did_not_reserve(fake_smi: Path, lock_dir: str) -> None:
    allocator = SlotAllocator(pool(gpus=(0, 1, 2, 3)), lock_dir=lock_dir)
    stop = threading.Event()
    held = [allocator.acquire(1, stop=stop) for _ in range(3)]
    assert [a.gpus for a in held] == [(0,), (1,), (2,)]
    order: list[str] = []
    big = Waiter(allocator, 3, "big", order)  # reserves GPU 3, then the least loaded: 0 and 1
    big.start()
    wait_pending(allocator, 1, big)
    allocator.release(held[2])  # GPU 2 frees: big still cannot run, and did not reserve it
    small = Waiter(allocator, 1, "small", order)
    small.start()
    small.join()
    assert order == ["small"] and small.result is not None and small.result.gpus == (2,)
    allocator.release(held[0])
    allocator.release(held[1])
    big.join()
    assert big.result is not None and big.result.gpus == (0, 1, 3)


def test_stop_while_waiting_returns_none_and_leaks_nothing(fake_smi: Path, lock_dir: str) -> None:
    allocator = SlotAllocator(pool(gpus=(0,)), lock_dir=lock_dir)
    stopped = threading.Event()
    stopped.set()
    assert allocator.acquire(1, stop=stopped) is None
    stop = threading.Event()
    first = allocator.acquire(1, stop=stop)
    assert first is not None
    waiter = Waiter(allocator, 1, "w", [])
    waiter.start()
    wait_pending(allocator, 1, waiter)
    waiter.stop.set()
    waiter.join()
    assert waiter.result is None and allocator.pending == 0
    allocator.release(first)
    with pytest.raises(ValueError, match="released twice"):
        allocator.release(first)
    assert allocator.acquire(1, stop=stop) is not None


# --- machine-wide: other processes ------------------------------------------------------------

RUNNER = textwrap.dedent(
    """
    import os, subprocess, sys, threading, time
    from mlrunner.resources import SlotAllocator
    from mlrunner.spec import ResourceSpec

    lock_dir, out, tasks, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    allocator = SlotAllocator(ResourceSpec(slots=None, gpus=(0, 1), per_gpu=1), lock_dir=lock_dir)
    print("ready", flush=True)
    while not os.path.exists(go):  # both runners start their tasks together
        time.sleep(0.01)
    stop, lock, todo = threading.Event(), threading.Lock(), list(range(tasks))
    command = 's=$(date +%s.%N); sleep 0.1; e=$(date +%s.%N); echo "$CUDA_VISIBLE_DEVICES $s $e" > "$OUT"'

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                task = todo.pop()
            alloc = allocator.acquire(1, stop=stop)
            env = {**os.environ, **alloc.env(), "OUT": os.path.join(out, f"task{os.getpid()}{task:03d}")}
            subprocess.run(["bash", "-c", command], env=env, check=True)
            allocator.release(alloc)

    threads = [threading.Thread(target=worker) for _ in range(allocator.capacity)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    """
)


def test_two_runner_processes_never_overlap_on_a_gpu(fake_smi: Path, lock_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    go = tmp_path / "go"
    runners = []
    for project in ("project a", "project 'b'"):
        cwd = tmp_path / project
        cwd.mkdir()
        argv = [sys.executable, str(script), lock_dir, str(out), "5", str(go)]
        runners.append(subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, text=True))
    assert [p.stdout.readline().strip() for p in runners] == ["ready", "ready"]
    go.touch()
    assert [p.wait(120) for p in runners] == [0, 0]
    records = read_records(out)
    assert len(records) == 10
    assert {g for r in records for g in r.gpus} == {0, 1}
    assert max_tasks_per_gpu(records) == {0: 1, 1: 1}


HOLDER = textwrap.dedent(
    """
    import sys, threading
    from mlrunner.resources import SlotAllocator
    from mlrunner.spec import ResourceSpec

    allocator = SlotAllocator(ResourceSpec(slots=None, gpus=(0, 1), per_gpu=1), lock_dir=sys.argv[1])
    allocs = [allocator.acquire(1, stop=threading.Event()) for _ in range(2)]
    print(",".join(a.visible for a in allocs), flush=True)
    threading.Event().wait(600)
    """
)


def test_a_crashed_runners_gpus_free_themselves(fake_smi: Path, lock_dir: str) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, lock_dir], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "0,1"
        allocator = SlotAllocator(pool(gpus=(0, 1)), lock_dir=lock_dir)
        waiter = Waiter(allocator, 2, "after crash", [])
        waiter.start()
        wait_pending(allocator, 1, waiter)  # both GPUs are held by the other runner
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    waiter.join()
    assert waiter.result is not None and waiter.result.gpus == (0, 1)


# --- fixed slots (0.5.9 lists) ------------------------------------------------------------------


def test_plain_list_slots_share_indices_and_multi_gpu_slots(tmp_path: Path, monkeypatch) -> None:
    hide_nvidia_smi(monkeypatch)
    lock_dir = tmp_path / "locks"
    allocator = SlotAllocator(ResourceSpec(slots=("0", "0", "1, 2", "cpu")), lock_dir=str(lock_dir))
    assert (allocator.mode, allocator.capacity, allocator.gpus) == ("slots", 4, (0, 1, 2))
    allocator.check(2)
    with pytest.raises(ResourceError, match=r"tasks need 3 GPUs \(_gpus: 3\) but no slot"):
        allocator.check(3)
    stop = threading.Event()
    two = allocator.acquire(2, stop=stop)
    assert two is not None and (two.slot, two.visible, two.gpus) == (2, "1,2", (1, 2))
    ones = [allocator.acquire(1, stop=stop) for _ in range(3)]
    assert [(a.slot, a.visible, a.gpus) for a in ones] == [(0, "0", (0,)), (1, "0", (0,)), (3, "cpu", None)]
    assert ones[0].env() == {"CUDA_VISIBLE_DEVICES": "0"}  # as 0.5.9: no device order
    assert not lock_dir.exists()  # no machine-wide locks for plain lists
    allocator.release(two)
    big_slot = allocator.acquire(1, stop=stop)  # a 1-GPU task may take the 2-GPU slot
    assert big_slot is not None and big_slot.slot == 2


def test_plain_list_two_gpu_task_gets_its_slot_first(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_nvidia_smi(monkeypatch)
    allocator = SlotAllocator(ResourceSpec(slots=("0", "1,2")))
    stop = threading.Event()
    a, b = allocator.acquire(1, stop=stop), allocator.acquire(1, stop=stop)
    assert (a.visible, b.visible) == ("0", "1,2")
    order: list[str] = []
    big = Waiter(allocator, 2, "big", order)
    big.start()
    wait_pending(allocator, 1, big)
    small = Waiter(allocator, 1, "small", order)
    small.start()
    wait_pending(allocator, 2, big, small)
    allocator.release(b)  # the 2-GPU slot frees: the older 2-GPU task gets it
    big.join()
    assert order == ["big"] and big.result.visible == "1,2"
    allocator.release(a)
    small.join()
    assert order == ["big", "small"] and small.result.visible == "0"


def test_plain_list_text_is_passed_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hide_nvidia_smi(monkeypatch)
    hostile = "$(touch pwned) 'x'"
    allocator = SlotAllocator(ResourceSpec(slots=(hostile, "GPU-aaa,GPU-bbb")))
    allocator.check(2)  # two UUIDs make a 2-GPU slot
    alloc = allocator.acquire(1, stop=threading.Event())
    assert alloc is not None and (alloc.visible, alloc.gpus) == (hostile, None)
    done = subprocess.run(
        ["bash", "-c", 'printf %s "$CUDA_VISIBLE_DEVICES"'],
        env={**os.environ, **alloc.env()},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.stdout == hostile and not (tmp_path / "pwned").exists()


def test_empty_resource_is_an_error() -> None:
    with pytest.raises(ResourceError, match="the resource list is empty"):
        SlotAllocator(ResourceSpec(slots=()))


def test_share_lock_files_are_what_other_tools_see(fake_smi: Path, lock_dir: str) -> None:
    allocator = SlotAllocator(pool(gpus=(0, 1), per_gpu=2), lock_dir=lock_dir)
    alloc = allocator.acquire(2, stop=threading.Event())
    assert alloc is not None
    assert ShareLock.try_take(allocator.lock_dir, 0, 0) is None
    assert ShareLock.try_take(allocator.lock_dir, 1, 0) is None
    free = ShareLock.try_take(allocator.lock_dir, 0, 1)
    assert free is not None
    free.release()
    allocator.release(alloc)

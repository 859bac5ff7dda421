"""Test helpers: a fake nvidia-smi on PATH, and running real commands through a SlotAllocator.

``install_fake_nvidia_smi(monkeypatch, tmp_path)`` puts ``tests/fake_bin/nvidia-smi`` first on
PATH with :data:`FOUR_GPUS` (GPU 3 nearly full); :func:`write_table` changes the table later.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

FAKE_BIN = Path(__file__).resolve().parent / "fake_bin"

MIB_PER_GIB = 1024
FOUR_GPUS = [
    {"memory_total": 81920, "memory_used": 1000, "utilization": 3},
    {"memory_total": 81920, "memory_used": 20000, "utilization": 40},
    {"memory_total": 81920, "memory_used": 500, "utilization": 0},
    {"memory_total": 81920, "memory_used": 81000, "utilization": 100},  # someone else's job
]


def write_table(path: Path, gpus: Sequence[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(list(gpus)))
    os.replace(tmp, path)  # the fake never reads a half-written table


def install_fake_nvidia_smi(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, gpus: Sequence[dict] = FOUR_GPUS
) -> Path:
    """Fake nvidia-smi first on PATH (python3 of this interpreter right behind it); returns the
    JSON table file it reads."""
    table = tmp_path / "gpus.json"
    write_table(table, gpus)
    path = os.pathsep.join([str(FAKE_BIN), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    monkeypatch.setenv("PATH", path)
    monkeypatch.setenv("FAKE_NVIDIA_SMI_GPUS", str(table))
    for var in ("FAKE_NVIDIA_SMI_FAIL", "FAKE_NVIDIA_SMI_SLEEP", "FAKE_NVIDIA_SMI_LOG"):
        monkeypatch.delenv(var, raising=False)
    return table


def hide_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH without any directory that holds an nvidia-smi (real or fake)."""
    dirs = [
        d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not Path(d, "nvidia-smi").exists()
    ]
    monkeypatch.setenv("PATH", os.pathsep.join(dirs))


@dataclass(frozen=True)
class Record:
    task: int
    visible: str
    start: float
    end: float

    @property
    def gpus(self) -> list[int]:
        return [int(g) for g in self.visible.split(",") if g]


# The command writes its own view: CUDA_VISIBLE_DEVICES and wall-clock start/end.
TASK_COMMAND = (
    's=$(date +%s.%N); sleep "$SLEEP"; e=$(date +%s.%N); echo "$CUDA_VISIBLE_DEVICES $s $e" > "$OUT"'
)


def run_tasks(
    allocator, needs: Sequence[int], out_dir: Path, *, workers: int, sleep: float = 0.15
) -> list[Record]:
    """Run one real bash command per entry of ``needs`` (GPUs needed), from ``workers``
    threads that acquire/release through ``allocator``; return what the commands wrote."""
    out_dir.mkdir(parents=True, exist_ok=True)
    queue = deque(enumerate(needs))
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    task, need = queue.popleft()
                alloc = allocator.acquire(need, stop=stop)
                assert alloc is not None
                try:
                    env = {
                        **os.environ,
                        **alloc.env(),
                        "OUT": str(out_dir / f"task{task}"),
                        "SLEEP": str(sleep),
                    }
                    subprocess.run(["bash", "-c", TASK_COMMAND], env=env, check=True)
                finally:
                    allocator.release(alloc)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)  # a hang guard, not a timing assertion
    stop.set()
    assert not any(t.is_alive() for t in threads), "workers hung"
    if errors:
        raise errors[0]
    return read_records(out_dir)


def read_records(out_dir: Path) -> list[Record]:
    records = []
    for f in sorted(out_dir.iterdir()):
        visible, start, end = f.read_text().split()
        records.append(Record(int(f.name.removeprefix("task")), visible, float(start), float(end)))
    return records


def max_tasks_per_gpu(records: Sequence[Record]) -> dict[int, int]:
    """The most records that ran at one instant on each GPU."""
    events: dict[int, list[tuple[float, int]]] = {}
    for r in records:
        for g in r.gpus:
            events.setdefault(g, []).extend([(r.start, 1), (r.end, -1)])
    peak: dict[int, int] = {}
    for g, evs in events.items():
        now = best = 0
        for _, delta in sorted(evs, key=lambda e: (e[0], e[1])):  # an end before a start at a tie
            now += delta
            best = max(best, now)
        peak[g] = best
    return peak

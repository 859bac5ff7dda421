"""Which slot (and which GPUs) a task runs on: :class:`SlotAllocator`.

Two modes, chosen by the :class:`~mlrunner.spec.model.ResourceSpec`:

*Fixed slots* (the 0.5.9 list ``resource: [0, 0, "1,2"]``, ``-r 0 -r 1``): every entry
is one slot and ``CUDA_VISIBLE_DEVICES`` is its text. Repeating an index shares that GPU;
``"1,2"`` is a two-GPU slot. No machine-wide locks (as in 0.5.9); min_free_memory is
ignored. A task needing ``n >= 2`` GPUs (grid ``_gpus: n``) takes a slot with *at least*
``n`` GPUs; a 1-GPU task (the default) may take any slot, so 0.5.9 lists such as
``["0,1", "2,3"]`` keep working. Among free fitting slots the smallest fit wins (ties:
list order), keeping big slots for big tasks.

*CPU slots* (``resource: {cpus: 4}``, ``-r cpu:4``) are fixed slots named ``cpu:0``,
``cpu:1``, ...: their commands see ``CUDA_VISIBLE_DEVICES`` empty (:func:`visible_devices`).

*GPU pool* (``resource: auto`` or ``{gpus: auto | [0, 1], per_gpu: 2,
min_free_memory: 10GiB}``): the GPUs are nvidia-smi's (auto) or the given list (checked
against nvidia-smi when it exists). ``capacity`` is ``per_gpu`` times the number of pool
GPUs with at least min_free_memory free at start. A task needing ``n`` GPUs gets ``n``
distinct GPUs with one free share each; GPUs with less than min_free_memory free (asked
of nvidia-smi at most once a second) are skipped. Each share a task uses is a kernel lock
on ``<lock_dir>/gpu<i>.share<k>.lock`` (:class:`mlrunner.resources.gpus.ShareLock`), so runners of
different projects on one machine (same lock_dir, same per_gpu) never put more than
``per_gpu`` tasks on a GPU between them, and a crashed runner's shares free themselves.
Less-loaded GPUs are preferred (then more free memory, then lower index).

Fairness (both modes): waiters are served oldest first. In the GPU pool, a waiter that
cannot be served *reserves* one share on each of ``n`` GPUs it may use (the least loaded;
once chosen a reservation sticks while the GPU stays usable). Younger waiters only take
shares that no older waiter reserved (backfill), so the reserved GPUs drain and a
2-GPU task is served even while 1-GPU tasks keep arriving. In fixed-slot mode no
reservation is needed: a blocked waiter fits no free slot, and the slot it fits goes to
it first when it frees. The policy holds within one process; across processes the
shares go to whichever runner asks first (they poll every ``poll_interval`` seconds).

The allocator never prints; errors are :class:`~mlrunner.errors.ResourceError`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlrunner.errors import ResourceError
from mlrunner.resources.gpus import (
    GpuInfo,
    NvidiaSmiNotFound,
    ShareLock,
    default_lock_dir,
    ensure_lock_dir,
    query_gpus,
)
from mlrunner.spec.model import CPU_SLOT_PREFIX

if TYPE_CHECKING:
    from mlrunner.spec import ResourceSpec


@dataclass(frozen=True)
class Allocation:
    """What one task got. ``visible`` is the value for ``CUDA_VISIBLE_DEVICES``;
    ``gpus`` the GPU indices, None for a fixed slot whose text is not a list of ints."""

    slot: int  # fixed mode: position in the resource list; pool: 0 <= slot < capacity
    visible: str
    gpus: tuple[int, ...] | None
    pci_bus_order: bool = False  # indices are nvidia-smi's: CUDA must count in PCI bus order
    token: int = field(default=0, repr=False)  # tells apart allocations that look alike

    def env(self) -> dict[str, str]:
        """Environment variables for the task's command (a CPU slot ``cpu:N``: no GPU visible)."""
        env = {"CUDA_VISIBLE_DEVICES": visible_devices(self.visible)}
        if self.pci_bus_order:
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        return env


def visible_devices(slot: str) -> str:
    """``CUDA_VISIBLE_DEVICES`` for a slot's text: itself, or '' for a CPU slot (``cpu:0``)."""
    return "" if slot.startswith(CPU_SLOT_PREFIX) else slot


@dataclass(frozen=True)
class _Slot:
    visible: str
    gpus: tuple[int, ...] | None
    size: int  # number of GPUs the slot's text names


@dataclass(eq=False)
class _Waiter:
    need: int
    min_free: int | None
    grant: Allocation | None = None
    blocked: bool = False
    reserve: list[int] = field(default_factory=list)
    prefer: str | None = None  # the slot text (CUDA_VISIBLE_DEVICES) to give when free


def _gpu_list(text: str | None) -> set[int]:
    """The GPU indices of a slot text ('0,2'); empty for None or anything else."""
    try:
        return {int(p) for p in (text or "").split(",") if p.strip()}
    except ValueError:
        return set()


def _free_mib(info: dict[int, GpuInfo] | None, gpu: int) -> int:
    return info[gpu].memory_free_mib if info is not None and gpu in info else 0


def _parse_slot(text: object) -> _Slot:
    raw = str(text)
    parts = [p.strip() for p in raw.split(",")]
    named = [p for p in parts if p]
    if named and len(named) == len(parts) and all(p.isdigit() for p in parts):
        gpus = tuple(int(p) for p in parts)
        return _Slot(",".join(str(g) for g in gpus), gpus, len(gpus))
    return _Slot(raw, None, len(named))


class SlotAllocator:
    """Hands out slots / GPU shares to worker threads. Thread-safe. See the module doc."""

    def __init__(
        self,
        resource: ResourceSpec,
        *,
        lock_dir: str | None = None,
        query: Callable[[], list[GpuInfo]] = query_gpus,
        poll_interval: float = 0.15,
        cache_seconds: float = 1.0,
    ) -> None:
        self._query = query
        self._poll = poll_interval
        self._cache_seconds = cache_seconds
        self._cond = threading.Condition(threading.Lock())
        self._waiters: list[_Waiter] = []
        self._tokens = itertools.count(1)
        self._table: tuple[float, dict[int, GpuInfo]] | None = None  # (monotonic time, GPU -> info)
        self._refreshing = False
        self._last_pass = 0.0
        self.min_free_mib: int | None = resource.min_free_memory_mib
        self.per_gpu: int = resource.per_gpu
        if resource.slots is not None and not resource.auto and resource.gpus is None:
            self.mode = "slots"
            self._slots = [_parse_slot(s) for s in resource.slots]
            if not self._slots:
                raise ResourceError(
                    "the resource list is empty: no slot to run tasks on",
                    key="resource",
                    hint="list GPU ids, e.g. `resource: [0, 1]`, or write `resource: auto`",
                )
            self.capacity: int = len(self._slots)
            self._free_slots = set(range(self.capacity))
            self.gpus: tuple[int, ...] = tuple(sorted({g for s in self._slots for g in s.gpus or ()}))
            self.lock_dir: str | None = None
        else:
            self.mode = "gpus"
            self._slots = []
            self.gpus, self.capacity = self._discover(resource)
            self._free_slots = set(range(self.capacity))
            self.lock_dir = ensure_lock_dir(lock_dir or default_lock_dir())
        self._held: Counter[int] = Counter()  # GPU -> shares this process holds
        self._locks: dict[tuple[int, int], ShareLock] = {}
        self._grants: dict[int, tuple[int, list[tuple[int, int]]]] = {}  # token -> (slot, shares)

    # --- set-up -------------------------------------------------------------------------

    def _discover(self, resource: ResourceSpec) -> tuple[tuple[int, ...], int]:
        if self.per_gpu < 1:
            raise ResourceError(
                f"per_gpu must be at least 1, got {self.per_gpu}",
                key="resource.per_gpu",
                hint="write `per_gpu: 1`",
            )
        table: list[GpuInfo] | None
        if resource.auto:
            table = self._query()
            if not table:
                raise ResourceError(
                    "`resource: auto` found no GPU: nvidia-smi lists none",
                    key="resource",
                    hint="list the slots by hand instead: `resource: [0, 1]` or `-r 0 -r 1`",
                )
            pool = tuple(g.index for g in table)
        else:
            pool = tuple(int(g) for g in resource.gpus or ())
            if not pool:
                raise ResourceError(
                    "no GPU to run on: the resource names none",
                    key="resource.gpus",
                    hint="write `gpus: auto` or a list such as `gpus: [0, 1]`",
                )
            twice = sorted(g for g, n in Counter(pool).items() if n > 1)
            if twice:
                raise ResourceError(
                    f"GPU {twice[0]} is listed twice in resource.gpus {list(pool)}",
                    key="resource.gpus",
                    hint="list each GPU once; `per_gpu: N` lets N tasks share a GPU",
                )
            try:
                table = self._query()
            except NvidiaSmiNotFound as exc:
                if self.min_free_mib is not None:
                    raise ResourceError(
                        "min_free_memory needs nvidia-smi to read the GPUs' free memory, "
                        "and nvidia-smi is not on PATH",
                        key="resource.min_free_memory",
                        hint="drop min_free_memory, or install the NVIDIA driver",
                    ) from exc
                table = None
            if table is not None:
                known = {g.index for g in table}
                missing = [g for g in pool if g not in known]
                if missing:
                    raise ResourceError(
                        f"GPU {missing[0]} of resource.gpus {list(pool)} does not exist: nvidia-smi lists "
                        f"{', '.join(str(g) for g in sorted(known)) or 'no GPU'}",
                        key="resource.gpus",
                        hint="list GPUs that `nvidia-smi -L` shows, or write `gpus: auto`",
                    )
        usable = pool
        if self.min_free_mib is not None and table is not None:
            info = {g.index: g for g in table}
            self._table = (time.monotonic(), info)
            usable = tuple(g for g in pool if info[g].memory_free_mib >= self.min_free_mib)
            if not usable:
                free = ", ".join(f"GPU {g}: {info[g].memory_free_mib} MiB" for g in pool)
                raise ResourceError(
                    f"no GPU has min_free_memory ({self.min_free_mib} MiB) free now ({free})",
                    key="resource.min_free_memory",
                    hint="lower min_free_memory, or wait until the GPUs are free",
                )
        return pool, len(usable) * self.per_gpu

    # --- public -------------------------------------------------------------------------

    @property
    def fixed(self) -> bool:
        """Fixed 0.5.9 slots: a 1-GPU task gets a free one at once (acquire never blocks
        while fewer than ``capacity`` allocations are held)."""
        return self.mode == "slots"

    @property
    def pending(self) -> int:
        """How many acquire() calls are blocked now (tried at least once, not served)."""
        with self._cond:
            return sum(1 for w in self._waiters if w.blocked and w.grant is None)

    def check(self, gpus_needed: int) -> None:
        """Raise ResourceError when a task needing ``gpus_needed`` GPUs can never run here."""
        if gpus_needed < 0:
            raise ResourceError(
                f"a task cannot need {gpus_needed} GPUs", key="_gpus", hint="write `_gpus: 1`"
            )
        if self.mode == "slots":
            if gpus_needed <= 1 or any(s.size >= gpus_needed for s in self._slots):
                return
            listed = ", ".join(repr(s.visible) for s in self._slots)
            raise ResourceError(
                f"tasks need {gpus_needed} GPUs (_gpus: {gpus_needed}) but no slot of the resource "
                f"list has {gpus_needed}: {listed}",
                key="resource",
                hint=f"add a slot with {gpus_needed} GPUs, e.g. "
                f'`resource: ["{",".join(str(i) for i in range(gpus_needed))}"]`, or use `resource: auto`',
            )
        if gpus_needed > len(self.gpus):
            raise ResourceError(
                f"tasks need {gpus_needed} GPUs (_gpus: {gpus_needed}) but the resource has only "
                f"{len(self.gpus)} (GPU {', '.join(str(g) for g in self.gpus)})",
                key="_gpus",
                hint=f"lower _gpus to at most {len(self.gpus)}, or list more GPUs",
            )

    def acquire(
        self,
        gpus_needed: int,
        *,
        stop: threading.Event,
        min_free_mib: int | None = None,
        prefer: str | None = None,
    ) -> Allocation | None:
        """Block until a slot with ``gpus_needed`` GPUs is free and return it; None once
        ``stop`` is set. ``min_free_mib`` overrides the resource's min_free_memory for
        this task (an OOM retry asks for more); fixed slots ignore it. ``prefer``: the
        slot text (``CUDA_VISIBLE_DEVICES``) to give when it is free, or GPUs to take
        first (a command a dead runner left running on them is adopted). Raises
        ResourceError when the task can never fit or nvidia-smi fails meanwhile."""
        self.check(gpus_needed)
        if stop.is_set():
            return None
        waiter = _Waiter(gpus_needed, self.min_free_mib if min_free_mib is None else min_free_mib)
        waiter.prefer = prefer
        with self._cond:
            self._waiters.append(waiter)
            try:
                self._refresh_table(waiter)
                self._dispatch()
                while waiter.grant is None and not stop.is_set():
                    waiter.blocked = True
                    self._cond.wait(self._poll)
                    if waiter.grant is None and time.monotonic() - self._last_pass >= self._poll * 0.9:
                        # other runners' shares and free memory change without a release here
                        self._refresh_table(waiter)
                        self._dispatch()
            except BaseException:
                self._waiters.remove(waiter)
                if waiter.grant is not None:
                    self._free(waiter.grant)
                    self._redispatch()
                raise
            self._waiters.remove(waiter)
            if stop.is_set():
                if waiter.grant is not None:  # granted as stop came: give it back
                    self._free(waiter.grant)
                    self._redispatch()
                return None
            return waiter.grant

    def release(self, alloc: Allocation) -> None:
        """Give an allocation back (its GPU shares and its slot)."""
        with self._cond:
            self._free(alloc)
            self._redispatch()

    # --- internals (called with self._cond held) ------------------------------------------

    def _free(self, alloc: Allocation) -> None:
        entry = self._grants.pop(alloc.token, None)
        if entry is None:
            raise ValueError(f"{alloc!r} is not held by this allocator (released twice?)")
        slot, shares = entry
        for gpu, share in shares:
            self._locks.pop((gpu, share)).release()
            self._held[gpu] -= 1
        self._free_slots.add(slot)

    def _redispatch(self) -> None:
        try:
            self._dispatch()
        except ResourceError:
            pass  # nvidia-smi failed: the waiting threads retry and raise it themselves
        self._cond.notify_all()

    def _dispatch(self) -> None:
        """Serve waiters oldest first (see the module doc for the policy)."""
        self._last_pass = time.monotonic()
        if self.mode == "slots":
            self._dispatch_slots()
        else:
            self._dispatch_gpus()

    def _grant(self, waiter: _Waiter, slot: int, shares: list[tuple[int, int]]) -> None:
        token = next(self._tokens)
        if self.mode == "slots":
            s = self._slots[slot]
            alloc = Allocation(slot, s.visible, s.gpus, False, token)
        else:
            gpus = tuple(sorted(g for g, _ in shares))
            alloc = Allocation(slot, ",".join(str(g) for g in gpus), gpus, True, token)
        self._free_slots.discard(slot)
        self._grants[token] = (slot, shares)
        waiter.grant = alloc
        self._cond.notify_all()

    def _dispatch_slots(self) -> None:
        for waiter in self._waiters:
            if waiter.grant is not None:
                continue
            fits = [i for i in self._free_slots if waiter.need <= 1 or self._slots[i].size >= waiter.need]
            if fits:
                prefer = waiter.prefer
                self._grant(
                    waiter,
                    min(
                        fits, key=lambda i: (self._slots[i].visible != prefer, max(self._slots[i].size, 1), i)
                    ),
                    [],
                )

    def _dispatch_gpus(self) -> None:
        todo = [w for w in self._waiters if w.grant is None]
        if not todo:
            return
        info = self._table[1] if self._table is not None else None
        reserved: Counter[int] = Counter()  # GPU -> shares kept for older blocked waiters
        full: set[int] = set()
        for waiter in todo:
            if not self._free_slots:
                return
            usable = self._usable(waiter, info)
            if waiter.need == 0:
                self._grant(waiter, min(self._free_slots), [])
                continue
            candidates = [g for g in usable if g not in full and self._held[g] + reserved[g] < self.per_gpu]
            preferred = _gpu_list(waiter.prefer)
            candidates.sort(key=lambda g: (g not in preferred, self._held[g], -_free_mib(info, g), g))
            taken: list[tuple[int, int]] = []
            for gpu in candidates:
                share = self._take_share(gpu)
                if share is None:
                    full.add(gpu)  # other runners hold its free shares: skip it for this pass
                    continue
                taken.append((gpu, share))
                if len(taken) == waiter.need:
                    break
            if len(taken) == waiter.need:
                self._grant(waiter, min(self._free_slots), taken)
                continue
            for gpu, share in taken:
                self._locks.pop((gpu, share)).release()
                self._held[gpu] -= 1
            keep = [g for g in waiter.reserve if g in usable]
            for gpu in sorted(usable, key=lambda g: (self._held[g] + reserved[g], g)):
                if len(keep) >= waiter.need:
                    break
                if gpu not in keep:
                    keep.append(gpu)
            waiter.reserve = keep
            reserved.update(keep)

    def _usable(self, waiter: _Waiter, info: dict[int, GpuInfo] | None) -> list[int]:
        if waiter.min_free is None:
            return list(self.gpus)
        if info is None:
            return []  # not known yet: the waiter's own refresh fills the table
        need = waiter.min_free
        return [g for g in self.gpus if g in info and info[g].memory_free_mib >= need]

    def _take_share(self, gpu: int) -> int | None:
        assert self.lock_dir is not None
        for share in range(self.per_gpu):
            if (gpu, share) in self._locks:
                continue
            lock = ShareLock.try_take(self.lock_dir, gpu, share)
            if lock is not None:
                self._locks[(gpu, share)] = lock
                self._held[gpu] += 1
                return share
        return None

    def _refresh_table(self, waiter: _Waiter) -> None:
        """Re-read nvidia-smi when ``waiter`` filters on free memory and the table is older
        than ``cache_seconds``. The mutex is let go meanwhile (nvidia-smi may take a while),
        so releases and other waiters go on; one thread asks at a time."""
        if self.mode != "gpus" or waiter.min_free is None or self._refreshing:
            return
        if self._table is not None and time.monotonic() - self._table[0] < self._cache_seconds:
            return
        self._refreshing = True
        self._cond.release()
        try:
            table = self._query()
        except NvidiaSmiNotFound as exc:
            raise ResourceError(
                "min_free_memory needs nvidia-smi to read the GPUs' free memory, and nvidia-smi "
                "is not on PATH",
                key="resource.min_free_memory",
                hint="drop min_free_memory, or install / fix the NVIDIA driver",
            ) from exc
        finally:
            self._cond.acquire()
            self._refreshing = False
        self._table = (time.monotonic(), {g.index: g for g in table})

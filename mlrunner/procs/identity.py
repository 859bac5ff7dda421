"""Process identity: a process is (host, boot id, pid, start time). PIDs are reused, but
a pid with the same start time on the same boot is the same process."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def hostname() -> str:
    return os.uname().nodename  # as socket.gethostname(), without importing socket


@lru_cache(maxsize=1)
def boot_id() -> str:
    """The kernel's boot id: changes on every reboot (so a pid from before a crash is dead)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: fall back to the boot time as well as we can
        return f"boot-{int(time.time() - time.monotonic())}"


def _read_proc_stat(pid: int) -> bytes | None:
    """``/proc/<pid>/stat`` (plain os calls: this runs once per command), None when gone."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)  # the kernel produces the whole line in one read
    except OSError:
        return None
    finally:
        os.close(fd)


def proc_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None when no such process."""
    data = _read_proc_stat(pid)
    if not data:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(b")") + 2 :].split()
    # rest[0] is field 3 (state); starttime is field 22.
    if rest[0] == b"Z":  # a zombie is as good as dead
        return None
    return int(rest[19])


@lru_cache(maxsize=1)
def _tick_ns() -> int:
    return 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def boot_clock_ns() -> int:
    """CLOCK_BOOTTIME in ns: the clock a process's start time (``/proc/<pid>/stat``) is read from."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def start_time_between(before_ns: int, after_ns: int) -> int | None:
    """The :func:`proc_start_time` of a process forked between two :func:`boot_clock_ns`
    readings, when both fall in the same clock tick (None when they straddle one).

    The kernel stamps a new process with CLOCK_BOOTTIME at fork and ``/proc`` shows it
    truncated to clock ticks, so no read of ``/proc/<pid>/stat`` is needed: that read
    waits while the new process loads its program (about 1 ms for bash here).
    """
    tick = _tick_ns()
    first = before_ns // tick
    return first if after_ns // tick == first else None


def proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (R, S, D, T stopped, Z zombie...), None when gone."""
    data = _read_proc_stat(pid)
    if not data:
        return None
    return data[data.rindex(b")") + 2 :].split()[0].decode()


def proc_ppid(pid: int) -> int | None:
    data = _read_proc_stat(pid)
    if not data:
        return None
    return int(data[data.rindex(b")") + 2 :].split()[1])


@dataclass(frozen=True)
class ProcessId:
    host: str
    boot_id: str
    pid: int
    start: int | None

    @classmethod
    def of(cls, pid: int | None = None) -> ProcessId:
        pid = os.getpid() if pid is None else pid
        return cls(hostname(), boot_id(), pid, proc_start_time(pid))

    def is_local(self) -> bool:
        return self.host == hostname() and self.boot_id == boot_id()

    def alive(self) -> bool | None:
        """True/False on this host and boot; None when it lives elsewhere (unknowable here)."""
        if self.host != hostname():
            return None
        if self.boot_id != boot_id():
            return False
        start = proc_start_time(self.pid)
        return start is not None and (self.start is None or start == self.start)


def is_alive(host: str | None, boot: str | None, pid: int | None, start: int | None) -> bool | None:
    """Liveness from ledger columns; see :meth:`ProcessId.alive`."""
    if pid is None:
        return False
    return ProcessId(host or hostname(), boot or boot_id(), int(pid), start).alive()


def descendant_ids(pid: int) -> list[tuple[int, int]]:
    """All live descendants of ``pid`` (children, grandchildren, ...) as (pid, start time),
    by walking /proc: what proves each one's identity when it is signalled later."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        data = _read_proc_stat(int(entry))
        if not data:
            continue
        rest = data[data.rindex(b")") + 2 :].split()
        if rest[0] == b"Z":
            continue
        children.setdefault(int(rest[1]), []).append((int(entry), int(rest[19])))
    out: list[tuple[int, int]] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child[0])
    return out


def descendants(pid: int) -> list[int]:
    """The pids of :func:`descendant_ids`."""
    return [p for p, _ in descendant_ids(pid)]

"""Process identity, spawning and killing (Linux, stdlib only).

A process is identified by (host, boot id, pid, start time): PIDs are reused, but a
pid with the same start time on the same boot is the same process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def hostname() -> str:
    return socket.gethostname()


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


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children, grandchildren, ...), by walking /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        ppid = proc_ppid(int(entry))
        if ppid is not None:
            children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def signal_tree(pid: int, pgid: int | None, sig: int, extra: Iterable[int] = ()) -> None:
    """Send ``sig`` to a process group and every known descendant; ignore the dead."""
    targets = set(extra)
    targets.update(descendants(pid))
    if pgid is not None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for p in [pid, *targets]:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def terminate_tree(pid: int, pgid: int | None, start: int | None = None, grace: float = 10.0) -> None:
    """SIGTERM a command's group and descendants, wait ``grace`` seconds, then SIGKILL.

    When ``start`` is given, ``pid`` is only signalled while it is still that process.
    Descendants are collected before the first signal, so grandchildren that get
    re-parented once their parent dies are still reached.
    """
    if start is not None and proc_start_time(pid) != start:
        pid_alive = False
    else:
        pid_alive = proc_start_time(pid) is not None
    known = descendants(pid) if pid_alive else []
    if pid_alive:
        signal_tree(pid, pgid, signal.SIGTERM, known)
    elif pgid is not None:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _any_alive([pid, *known] if pid_alive else known) and not _group_alive(pgid):
            return
        time.sleep(0.05)
    if pid_alive:
        signal_tree(pid, pgid, signal.SIGKILL, known)
    elif pgid is not None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for p in known:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _any_alive(pids: Iterable[int]) -> bool:
    return any(proc_start_time(p) is not None for p in pids)


def _group_alive(pgid: int | None) -> bool:
    if pgid is None:
        return False
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # killpg(0) succeeds while zombies remain in the group: check for a non-zombie member.
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            rest = data[data.rindex(b")") + 2 :].split()
            if int(rest[2]) == pgid and rest[0] != b"Z":
                return True
    return False


def spawn(
    text: str,
    *,
    log_path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    tee: bool = False,
) -> subprocess.Popen[bytes]:
    """Run ``text`` through bash in its own session, whole output into ``log_path``.

    The log holds only the command's output. With ``tee`` (debug mode) the output also
    goes to the terminal. The command text is passed as one argv element, never pasted
    into another shell line, so it reaches bash exactly as rendered.
    """
    full_env = dict(os.environ if env is None else env)
    if tee:
        script = 'set -o pipefail; { eval "$MLRUNNER_COMMAND"; } 2>&1 | tee -- "$MLRUNNER_LOG"'
        full_env["MLRUNNER_COMMAND"] = text
        full_env["MLRUNNER_LOG"] = os.fspath(log_path)
        return subprocess.Popen(
            ["bash", "-c", script], env=full_env, cwd=cwd, start_new_session=True, stdin=subprocess.DEVNULL
        )
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            ["bash", "-c", text],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )


def exit_status(returncode: int) -> tuple[int | None, int | None]:
    """Popen return code -> (exit_code, signal). bash's 128+N stays an exit code."""
    if returncode < 0:
        return None, -returncode
    return returncode, None

"""Process identity, spawning and killing (Linux, stdlib only).

A process is identified by (host, boot id, pid, start time): PIDs are reused, but a
pid with the same start time on the same boot is the same process.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterable, Mapping
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


# How bash runs a command (argv after ``bash -c``). The text is one argv element or an
# environment value, never pasted into another shell line: it reaches bash as rendered.
_TEE = 'set -o pipefail; { eval "$MLRUNNER_COMMAND"; } 2>&1 | tee -- "$MLRUNNER_LOG"'
_CD = 'cd -- "$MLRUNNER_CWD" || exit 126\n'


class Child:
    """A spawned command's bash: ``pid``, its ``start`` time when known without /proc
    (clock ticks since boot), and its return code once reaped (negative: killed by that
    signal, as ``subprocess``)."""

    def __init__(self, pid: int, start: int | None) -> None:
        self.pid = pid
        self.start = start
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The return code when it has exited (reaping it), else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """The return code, waiting at most ``timeout`` seconds (None: still running)."""
        if timeout is None:
            if self.returncode is None:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(0.01, left))
        return self.returncode


def inheritable_fds() -> list[int]:
    """This process's descriptors >= 3 that a child would inherit (Python makes its own
    non-inheritable; these come from whoever started us: a shell, a CI runner)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    found.append(fd)
            except OSError:  # the descriptor listdir itself used, closed since
                continue
    return found


class Spawner:
    """Runs commands through bash, each in a session of its own (so its whole process group
    can be signalled), stdin from /dev/null, stdout and stderr into its log (with ``tee``:
    the log and our stdout), in ``cwd`` (default: ours), with no inherited descriptor and
    SIGPIPE/SIGXFSZ at their defaults (as ``subprocess.Popen``'s ``restore_signals``).

    The one way mlrunner starts a command: ``os.posix_spawn`` of bash, about half the
    parent's work of ``subprocess.Popen`` (bash is found once, on the ``PATH`` given)."""

    def __init__(
        self, cwd: str | os.PathLike[str] | None = None, *, tee: bool = False, path: str | None = None
    ) -> None:
        found = shutil.which("bash", path=os.environ.get("PATH", os.defpath) if path is None else path)
        if found is None:
            raise FileNotFoundError("bash not found on PATH")
        self.bash = found
        self.tee = tee
        self.cwd: str | None = None
        if cwd is not None:
            try:
                here = os.path.samefile(cwd, os.curdir)
            except OSError:  # gone: bash says so in the log, the command fails
                here = False
            self.cwd = None if here else os.fspath(cwd)
        self.closes = [(os.POSIX_SPAWN_CLOSE, fd) for fd in inheritable_fds()]

    def spawn(self, text: str, log_path: str | os.PathLike[str], env: Mapping[str, str]) -> Child:
        """Start ``text``; OSError when the log cannot be opened or bash not started."""
        if self.tee or self.cwd is not None:
            env = dict(env, MLRUNNER_COMMAND=text, MLRUNNER_LOG=os.fspath(log_path))
            if self.cwd is not None:
                env["MLRUNNER_CWD"] = self.cwd
            text = (_CD if self.cwd is not None else "") + (
                _TEE if self.tee else 'exec bash -c "$MLRUNNER_COMMAND"'
            )
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        fd = None if self.tee else os.open(log_path, flags, 0o666)
        try:
            output = [] if fd is None else [(os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2)]
            before = boot_clock_ns()
            pid = os.posix_spawn(
                self.bash,
                ["bash", "-c", text],
                env,
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0), *output, *self.closes],
                setsid=True,
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            )
            start = start_time_between(before, boot_clock_ns())
        finally:
            if fd is not None:
                os.close(fd)
        return Child(pid, start)


def spawn(
    text: str,
    *,
    log_path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    tee: bool = False,
) -> Child:
    """One command through a :class:`Spawner` of its own."""
    env = os.environ if env is None else env
    return Spawner(cwd, tee=tee, path=env.get("PATH", os.defpath)).spawn(text, log_path, env)


def exit_status(returncode: int) -> tuple[int | None, int | None]:
    """Popen return code -> (exit_code, signal). bash's 128+N stays an exit code."""
    if returncode < 0:
        return None, -returncode
    return returncode, None

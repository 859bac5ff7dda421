"""Starting a command: ``os.posix_spawn`` of bash, the command's *shepherd*.

The one way mlrunner starts a command. The bash it spawns runs the command's text (``eval``
of it, exactly as ``bash -c TEXT`` would: ``$0`` is ``bash``, no positional parameters,
``$$`` its own pid) in a session of its own (so its whole process group can be signalled),
stdin from /dev/null, stdout and stderr into the log (with ``tee``: the log and our
stdout), in ``cwd`` when given, with no inherited descriptor and SIGPIPE/SIGXFSZ at their
defaults (as ``subprocess.Popen``'s ``restore_signals``).

The same bash is the command's shepherd: an EXIT trap writes ``exit CODE`` to the command's
*exit file* (:func:`exit_path`, beside the log) when the text is done, however it ends
(``exit N`` included), and fsyncs it (``sync FILE``) when the command ran a second or more:
a result survives a power loss that the ledger's last commits may not (a resume reads it,
see :mod:`mlrunner.run.reconcile`); shorter commands are cheap to run again and skip the
fsync, so a sweep of tiny commands pays nothing for it. It is the command's parent, so
when the runner dies it still waits for the command and leaves its status, which a later
``run --resume`` reads (:func:`read_exit`): a command that ends while no runner watches is
neither lost nor rerun.
Only a text that ``exec``s or replaces the EXIT trap, or a signal that kills bash itself,
leaves no exit file; the runner, when alive, has the status from ``waitpid`` anyway.

Cost: the trap keeps bash from ``exec``ing a text's last command in place, so an external
command is one ``fork`` more, in the command's bash (not in the runner); a command killed by
signal N then reports 128+N, as bash does for any compound command.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path

from mlrunner.procs.identity import boot_clock_ns, proc_start_time, start_time_between

EXIT_SUFFIX = ".exit"

# argv of bash: -c SCRIPT bash EXIT_FILE [CWD] TEXT. The text is an argument, never pasted
# into the script: it reaches bash as rendered.
_TRAP = (
    'trap \'__mlr_s=$?; printf "exit %s\\n" "$__mlr_s" 2>/dev/null >"$__mlr_x"; '
    '[ "$SECONDS" -lt 1 ] || sync "$__mlr_x" 2>/dev/null\' EXIT\n'
)
_PLAIN = _TRAP + '__mlr_x=$1 __mlr_t=$2; shift 2\neval "$__mlr_t"'
_CD = _TRAP + '__mlr_x=$1 __mlr_t=$3; cd -- "$2" || exit 126; shift 3\neval "$__mlr_t"'
_TEE = 'set -o pipefail; { eval "$__mlr_t"; } 2>&1 | tee -- "$__mlr_log"'


def _script(cd: bool, tee: bool) -> str:
    script = _CD if cd else _PLAIN
    if tee:
        script = script.replace('eval "$__mlr_t"', _TEE)
    return script


def exit_path(log: str | os.PathLike[str]) -> Path:
    """The exit file of the command whose log is ``log``: ``.<log name>.exit`` beside it
    (a dot-file: 0.5.9 tools that look for ``log.*`` never see it)."""
    p = Path(log)
    return p.with_name(f".{p.name}{EXIT_SUFFIX}")


def read_exit(path: str | os.PathLike[str]) -> int | None:
    """The exit code a shepherd wrote, or None: no file, or an unfinished one (a power loss
    cut the write)."""
    try:
        with open(path, "rb") as f:
            data = f.read(64)
    except OSError:
        return None
    if not data.startswith(b"exit ") or not data.endswith(b"\n"):
        return None
    try:
        return int(data[5:-1])
    except ValueError:
        return None


def is_shepherd(pid: int, log: str | os.PathLike[str]) -> bool:
    """Whether ``pid`` is the shepherd of the command whose log is ``log``: a bash whose
    command line names that command's exit file (proof of identity for a process recorded
    without a start time)."""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return len(argv) > 4 and argv[4] == os.fsencode(os.path.abspath(exit_path(log)))


def find_shepherd(log: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(pid, start time) of the live shepherd of the command whose log is ``log``, found by
    its command line (a runner that died between recording a command and its pid); None
    when there is none. Reads every /proc/<pid>/cmdline: for a resume, not a hot path."""
    want = os.fsencode(os.path.abspath(exit_path(log)))
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if len(argv) > 4 and argv[4] == want:
            start = proc_start_time(int(entry))
            if start is not None:
                return int(entry), start
    return None


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
    """Spawns commands as above; ``cwd`` None (or ours): they run here. bash is found once,
    on the ``path`` given (default: our PATH)."""

    def __init__(
        self, cwd: str | os.PathLike[str] | None = None, *, tee: bool = False, path: str | None = None
    ) -> None:
        found = shutil.which("bash", path=os.environ.get("PATH", os.defpath) if path is None else path)
        if found is None:
            raise FileNotFoundError("bash not found on PATH: mlrunner runs every command through bash")
        self.bash = found
        self.tee = tee
        self.cwd: str | None = None
        if cwd is not None and not _same_dir(cwd):
            self.cwd = os.fspath(cwd)
        self.script = _script(self.cwd is not None, tee)
        self.closes = [(os.POSIX_SPAWN_CLOSE, fd) for fd in inheritable_fds()]

    def spawn(self, text: str, log_path: str | os.PathLike[str], env: Mapping[str, str]) -> Child:
        """Start ``text``; OSError when the log cannot be opened or bash cannot start
        (E2BIG: a text over the kernel's 128 KiB limit for one argument)."""
        log = os.fspath(log_path)
        exit_file = os.path.abspath(exit_path(log))  # absolute: the text may `cd` first
        try:
            os.unlink(exit_file)  # an earlier attempt's, never to be read as this one's
        except FileNotFoundError:
            pass
        argv = ["bash", "-c", self.script, "bash", exit_file]
        if self.cwd is not None:
            argv.append(self.cwd)
        argv.append(text)
        if self.tee:
            env = dict(env, __mlr_log=log)
            fd = None
        else:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            output = [] if fd is None else [(os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2)]
            before = boot_clock_ns()
            pid = os.posix_spawn(
                self.bash,
                argv,
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


def _same_dir(path: str | os.PathLike[str]) -> bool:
    try:
        return os.path.samefile(path, os.curdir)
    except OSError:  # gone: the shepherd's `cd` says so in the log, the command fails
        return False


def wait_gone(pid: int, start: int | None, timeout: float | None = None) -> bool:
    """Wait until process ``pid`` (started at ``start``) is gone; True when it is (a zombie
    counts as gone), False when ``timeout`` seconds passed first. Works for any process,
    not only a child: a pidfd where the kernel has them, else polling /proc."""
    deadline = None if timeout is None else time.monotonic() + timeout
    fd: int | None
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        fd = None
    try:
        if start is not None and proc_start_time(pid) != start:
            return True  # the pid is another process's now: ours is gone
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if fd is not None:
                if select.select([fd], [], [], left)[0]:
                    return True
            elif proc_start_time(pid) is None:
                return True
            else:
                time.sleep(0.05 if left is None else min(0.05, left))
            if deadline is not None and time.monotonic() >= deadline:
                return False
    finally:
        if fd is not None:
            os.close(fd)


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

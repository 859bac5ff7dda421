"""posix_spawn of bash through ctypes: the child is set up as procs.spawn sets it up."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from mlrunner.backends.local import cspawn

BASH = shutil.which("bash") or "/bin/bash"


def run(spawner: cspawn.BashSpawner, text: str, log: Path, env: dict[str, str]) -> tuple[int, str]:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        pid = spawner.spawn(text, fd, spawner.envp(tuple(sorted(env.items())), env))
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), log.read_text(encoding="utf-8", errors="replace")


def test_available_on_this_linux() -> None:
    assert cspawn.available()  # glibc >= 2.26: the CI image and every supported distribution


def test_hostile_text_and_environment_reach_bash_unchanged(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTILE": 'it\'s "quoted" $(touch pwned) ..; é'}
    text = """printf '%s\\n' "$HOSTILE" "$(echo 'a b')" "$0"; exit 3"""
    code, out = run(cspawn.BashSpawner(BASH, []), text, tmp_path / "log with space", env)
    assert code == 3
    assert out.splitlines() == [env["HOSTILE"], "a b", "bash"]
    assert not (tmp_path / "pwned").exists()


def test_child_session_stdin_signals_and_descriptors(tmp_path: Path) -> None:
    keep_r, keep_w = os.pipe()
    os.set_inheritable(keep_w, True)  # as a descriptor inherited from whoever started us
    try:
        spawner = cspawn.BashSpawner(BASH, [keep_w])
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        text = (
            "read -r line; echo stdin=$?; "
            "echo sid=$(cut -d' ' -f6 /proc/$$/stat); echo pid=$$; "
            "grep SigIgn /proc/$$/status; "
            f"test -e /proc/$$/fd/{keep_w} && echo leaked || echo closed; "
            "echo out; echo err >&2"
        )
        code, out = run(spawner, text, tmp_path / "log", env)
    finally:
        os.close(keep_r)
        os.close(keep_w)
    assert code == 0
    lines = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert lines["stdin"] == "1"  # /dev/null: read hits end of file
    assert lines["sid"] == lines["pid"]  # a session (and process group) of its own
    ignored = int(next(line for line in out.splitlines() if line.startswith("SigIgn")).split()[1], 16)
    assert not ignored & (1 << (13 - 1))  # SIGPIPE at its default, though Python ignores it
    assert "closed" in out.splitlines() and "leaked" not in out
    assert out.splitlines()[-2:] == ["out", "err"]


def test_spawn_returns_at_once_for_a_long_command(tmp_path: Path) -> None:
    spawner = cspawn.BashSpawner(BASH, [])
    fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        t0 = time.monotonic()
        pid = spawner.spawn("sleep 2", fd, spawner.envp("k", {"PATH": os.environ.get("PATH", "")}))
        assert time.monotonic() - t0 < 1.5
    finally:
        os.close(fd)
    assert os.getsid(pid) == pid
    os.killpg(pid, 9)
    os.waitpid(pid, 0)


def test_missing_bash_is_an_os_error(tmp_path: Path) -> None:
    spawner = cspawn.BashSpawner(str(tmp_path / "no-such-bash"), [])
    fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        with pytest.raises(OSError, match="no-such-bash"):
            spawner.spawn("true", fd, spawner.envp("k", {}))
    finally:
        os.close(fd)

"""The one spawn path (mlrunner.procs.spawn): posix_spawn of bash, the command's shepherd,
which leaves the command's exit status in an exit file beside the log."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import pytest

from mlrunner.procs import Spawner, exit_path, read_exit, wait_gone

HOSTILE = 'it\'s a "$(touch pwned)" `x` $HOME \\ ; | & > <'


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "a dir with 'quotes' and $(x)"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


def run(
    spawner: Spawner, text: str, log: Path, env: dict[str, str] | None = None
) -> tuple[int, str, int | None]:
    child = spawner.spawn(text, log, dict(os.environ) if env is None else env)
    code = child.wait(30)
    assert code is not None
    return code, log.read_text() if log.exists() else "", read_exit(exit_path(log))


@pytest.mark.parametrize("code", [0, 1, 3, 127, 255])
def test_the_exit_file_holds_the_exit_status(here: Path, code: int) -> None:
    got, _, written = run(Spawner(), f"echo out; exit {code}", here / "log.a")
    assert got == code == written


def test_the_text_runs_as_bash_c_would(here: Path) -> None:
    env = dict(os.environ, V=HOSTILE)
    text = 'printf "%s|" "$0" "$#" "$1" "$V"; [ $$ = $BASHPID ] && echo own-pid; echo err >&2'
    code, out, written = run(Spawner(), text, here / "log.b", env)
    assert (code, written) == (0, 0)
    assert out == f"bash|0||{HOSTILE}|own-pid\nerr\n"
    assert not (here / "pwned").exists()


def test_a_command_that_changes_dir_still_leaves_its_exit_file(here: Path) -> None:
    (here / "sub").mkdir()
    code, _, written = run(Spawner(), "cd sub && cd / && exit 4", here / "log.c")
    assert code == written == 4


def test_commands_elsewhere_run_there(here: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "other $(dir)"
    elsewhere.mkdir()
    spawner = Spawner(elsewhere)
    assert spawner.cwd == str(elsewhere)
    code, out, written = run(spawner, "pwd", here / "log.d")
    assert (code, written, out) == (0, 0, f"{elsewhere}\n")
    assert Spawner(here).cwd is None  # our own dir: no `cd`


def test_a_missing_dir_fails_the_command_with_126(here: Path, tmp_path: Path) -> None:
    code, out, written = run(Spawner(tmp_path / "gone"), "echo never", here / "log.e")
    assert code == written == 126 and "never" not in out


def test_tee_writes_the_log_and_keeps_the_status(here: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, out, written = run(Spawner(tee=True), "echo shown; exit 5", here / "log.f")
    assert code == written == 5 and out == "shown\n"
    assert "shown" in capfd.readouterr().out


def test_no_exit_file_when_the_shepherd_itself_is_killed(here: Path) -> None:
    code, _, written = run(Spawner(), "kill -9 $$", here / "log.g")
    assert code == -signal.SIGKILL and written is None


def test_a_stale_exit_file_is_not_read_as_this_attempts(here: Path) -> None:
    log = here / "log.h"
    exit_path(log).write_text("exit 0\n")
    code, _, written = run(Spawner(), "exit 9", log)
    assert code == written == 9
    code, _, written = run(Spawner(), "kill -9 $$", log)  # leaves no file of its own
    assert code == -signal.SIGKILL and written is None


@pytest.mark.parametrize("content", ["", "exit ", "exit 3", "exit x\n", "garbage\n"])
def test_an_unfinished_or_foreign_exit_file_reads_as_none(tmp_path: Path, content: str) -> None:
    path = tmp_path / "f"
    path.write_text(content)
    assert read_exit(path) is None
    assert read_exit(tmp_path / "missing") is None


def test_the_shepherd_outlives_its_runner_and_records_the_status(here: Path) -> None:
    """A runner that dies (here: a forked child that spawns, then exits at once without
    waiting) leaves the command running; its exit file still says how it ended."""
    log = here / "log.i"
    r, w = os.pipe()
    runner = os.fork()
    if runner == 0:  # the "runner"
        try:
            child = Spawner().spawn("sleep 0.3; exit 7", log, dict(os.environ))
            os.write(w, f"{child.pid} {child.start}".encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(runner, 0)
    pid, start = os.read(r, 100).decode().split()
    os.close(r)
    assert wait_gone(int(pid), None if start == "None" else int(start), timeout=30)
    deadline = time.monotonic() + 10
    while read_exit(exit_path(log)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert read_exit(exit_path(log)) == 7


def test_a_text_over_the_argument_limit_raises_e2big(here: Path) -> None:
    with pytest.raises(OSError) as err:
        Spawner().spawn("echo " + "x" * 200_000, here / "log.j", dict(os.environ))
    assert err.value.errno == errno.E2BIG


def test_wait_gone_times_out_on_a_live_process(here: Path) -> None:
    child = Spawner().spawn("sleep 5", here / "log.k", dict(os.environ))
    try:
        assert not wait_gone(child.pid, child.start, timeout=0.1)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert wait_gone(child.pid, child.start, timeout=1)

"""The live display as a user sees it: a real terminal (tmux), read with capture-pane.

`.ci/run` installs tmux; without it these tests fail (never skip)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from helpers import Project

PARAMS = """
template:
  train: >-
    for i in 1 2 3 4 5 6 7 8; do echo "epoch $i lr {learning-rate} seed {seed} loss 0.$((RANDOM % 90 + 10))";
    sleep {pace}; done; exit {fail}
resource: [0, 1]
---
learning-rate: [0.001]
model: [transformer-with-a-rather-long-name-for-a-narrow-terminal]
seed: [1, 2]
fail: [0]
pace: [0.4]
---
learning-rate: [0.01]
model: [lstm]
seed: [3]
fail: [4]
pace: [0.1]
"""


class Tmux:
    def __init__(self, width: int) -> None:
        self.name = f"mlr-{uuid.uuid4().hex[:8]}"
        self.width = width

    def start(self, project: Project, *args: str) -> None:
        """A shell in a detached tmux window of the given width; once tmux says the pane has
        that width, the command is typed in, as a user would."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in project.env.items() if k in ("PATH", "HOME"))
        run = " ".join(
            shlex.quote(a)
            for a in (sys.executable, "-c", "from mlrunner.cli import run_main; run_main()", *args)
        )
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, "-x", str(self.width), "-y", "30", "bash --norc"],
            check=True,
        )
        end = time.monotonic() + 10
        while time.monotonic() < end:
            res = subprocess.run(
                ["tmux", "display-message", "-p", "-t", self.name, "#{pane_width}"],
                capture_output=True,
                text=True,
            )
            if res.stdout.strip() == str(self.width):
                break
            time.sleep(0.05)
        self.keys(
            f"clear; cd {shlex.quote(str(project.path))} && env {env} TERM=xterm-256color {run}", "Enter"
        )

    def screen(self) -> str:
        res = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return res.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, cond: Callable[[str], bool], what: str, timeout: float = 30) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            screen = self.screen()
            if cond(screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{what}: not on the screen in time:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def tmux() -> Iterator[Callable[[int], Tmux]]:
    assert shutil.which("tmux"), "tmux is needed for the live display tests (.ci/run installs it)"
    made: list[Tmux] = []

    def make(width: int) -> Tmux:
        made.append(Tmux(width))
        return made[-1]

    yield make
    for t in made:
        t.close()


def lines_fit(screen: str, width: int) -> None:
    for line in screen.splitlines():
        assert len(line) <= width, line


def test_a_narrow_terminal_cuts_names_in_the_middle_and_keeps_the_seed(project: Project, tmux) -> None:  # type: ignore[no-untyped-def]
    project.write(PARAMS)
    t = tmux(80)
    t.start(project)
    screen = t.wait_for(lambda s: "gpu: 0" in s and "gpu: 1" in s, "both slots running")
    rows = [line for line in screen.splitlines() if line.startswith("gpu: ")]
    assert all("…" in r and ("Seed_1" in r or "Seed_2" in r) for r in rows), rows  # cut in the middle
    assert all(r.split()[2] == "train" for r in rows)  # 'gpu: 0' is not padded to 32 columns
    assert "ETA" in screen and "0 failed" in screen
    lines_fit(screen, 80)
    screen = t.wait_for(lambda s: "(run 1)" in s, "the end", timeout=60)
    assert "took" in screen and "ETA ?" not in screen
    assert "2 done, 1 failed" in screen
    assert not [line for line in screen.splitlines() if line.startswith("gpu: ")]  # no stale slot line


def test_a_wide_terminal_shows_each_slots_last_log_line(project: Project, tmux) -> None:  # type: ignore[no-untyped-def]
    project.write(PARAMS)
    t = tmux(180)
    t.start(project)
    screen = t.wait_for(lambda s: "epoch 3 lr 0.001 seed 1" in s, "training progress on the slot's line")
    row = next(line for line in screen.splitlines() if "seed 1 loss" in line)
    assert row.startswith("gpu: ") and "Seed_1" in row
    lines_fit(screen, 180)


def test_ctrl_c_shows_interrupted_commands_as_stopped_not_failed(project: Project, tmux) -> None:  # type: ignore[no-untyped-def]
    project.write(PARAMS.replace("pace: [0.4]", "pace: [5]"))
    t = tmux(100)
    t.start(project)
    t.wait_for(lambda s: "gpu: 0" in s and "gpu: 1" in s, "both slots running")
    t.keys("C-c")
    screen = t.wait_for(lambda s: "(run 1)" in s, "the end after Ctrl-C")
    assert "STOP" in screen and "FAIL" not in screen
    assert "0 failed, 2 interrupted" in screen
    assert "stopped after" in screen and "ETA" not in screen
    assert not [line for line in screen.splitlines() if line.startswith("gpu: ")]


def test_a_failed_command_shows_its_logs_last_line_under_its_fail_line(project: Project, tmux) -> None:  # type: ignore[no-untyped-def]
    """Issue 14.3: the live display shows a failure's last log line (escapes dropped, markup as text)."""
    (project.path / "fail.sh").write_text(
        "echo 'epoch 1'; printf '\\033[31mValueError: bad [b]lr[/b] $(x)\\033[0m\\n'; exit $1\n"
    )
    project.write("template: {train: 'bash fail.sh {code}'}\nresource: [0]\n---\ncode: [3]\n")
    t = tmux(100)
    t.start(project)
    screen = t.wait_for(lambda s: "(run 1)" in s, "the end")
    lines = screen.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("FAIL"))
    assert "exit 3" in lines[i]
    assert lines[i + 1] == "        ValueError: bad [b]lr[/b] $(x)"
    lines_fit(screen, 100)

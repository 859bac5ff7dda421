"""The web UI's test fixtures: a real sweep (git repo, a hostile param value, a failure
then a resume), a live sweep whose commands wait to be released, `mlrunner ui` as a real
subprocess, and one headless Chromium (Debian's, driven by Playwright) per session.

Imported by tests/conftest.py so the session fixtures are shared by every module."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import Project, mlrunner_argv

HOSTILE = "<img src=x onerror=alert(1)> <b>bold</b> $(touch pwned) 'q\" .."
CHROMIUM_ENV = "MLRUNNER_CHROMIUM"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

TRAIN = """
import json, os, sys, time
cfg, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(os.path.join(out, "metrics.jsonl"), "w") as f:
    for step in range(12):
        val = (step / 3 - 2 - seed / 10) ** 2 + {"a": 0.0, "b": 0.5, "c": 0.25}[cfg]
        f.write(json.dumps({"step": step, "val_loss": val, "acc": step / 20 + seed / 100}) + "\\n")
        f.flush()
        print(f"epoch {step} loss {val:.4f}", flush=True)
        if cfg == "b" and seed == 2 and step == 4 and os.path.exists("FAIL_ONCE"):
            os.unlink("FAIL_ONCE")
            sys.exit("diverged: loss is nan")
"""

PARAMS = f"""
template:
  train: python train.py {{cfg}} {{seed}} {{_output}}
default:
  note: plain
resource: [0, 1]
---
cfg: [a, b]
seed: [0, 1, 2]
---
cfg: [c]
seed: [0]
note: [{json.dumps(HOSTILE)}]
"""

# The live sweep: each command waits until its release file exists.
WAIT = """
import os, sys, time
name, out = sys.argv[1], sys.argv[2]
print("waiting for", name, flush=True)
while not os.path.exists(os.path.join("release", name)):
    time.sleep(0.05)
print("released", name, flush=True)
if name == "three":
    print("three gives up", flush=True)
    sys.exit(3)
"""

LIVE_PARAMS = """
template:
  wait: python wait.py {job} {_output}
resource: [0, 1]
---
job: [one, two, three]
"""


def live_project(root: Path) -> Project:
    """A project whose sweep (`run` in it) waits: each `Job_<name>` runs until
    release/<name> exists; `Job_three` then fails (exit 3)."""
    root.mkdir(parents=True)
    project = Project(root, root.parent / "locks")
    project.write(WAIT, "wait.py")
    project.write(LIVE_PARAMS)
    (root / "release").mkdir()
    return project


def git(cwd: Path, *args: str, env: dict[str, str]) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def build_sweep(root: Path) -> Project:
    """A git project whose sweep ran: 7 experiments, `Cfg_b-Seed_2` failed once, then
    `run --resume` finished it; an uncommitted edit and an untracked file in the snapshot."""
    root.mkdir(parents=True)
    project = Project(root, root.parent / "gpu-locks")
    project.write(TRAIN, "train.py")
    project.write(PARAMS)
    (root / ".gitignore").write_text("output/\nlive/\nrelease/\n")
    git(root, "init", "-q", "-b", "main", env=project.env)
    git(root, "add", "-A", env=project.env)
    git(root, "commit", "-qm", "first", env=project.env)
    (root / "train.py").write_text((root / "train.py").read_text() + "# an uncommitted edit\n")
    (root / "notes.txt").write_text("untracked <b>notes</b>\n")
    (root / "FAIL_ONCE").write_text("")
    res = project.run()
    assert res.returncode == 1, res.stdout + res.stderr
    project.run("--resume", check=0)
    return project


@dataclass
class Server:
    """`mlrunner ui` running in a subprocess."""

    proc: subprocess.Popen[str]
    url: str
    output: Path

    def get(
        self, path: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url.rstrip("/") + path, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as res:
                return res.status, {k.lower(): v for k, v in res.headers.items()}, res.read()
        except urllib.error.HTTPError as err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()

    def json(self, path: str) -> Any:
        status, _, body = self.get(path)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)

    def stop(self) -> tuple[int, str, str]:
        """Ctrl-C, as a user would: (exit status, stdout, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=20)
        return self.proc.returncode, out, err


def start_server(project: Project, output: str, *extra: str) -> Server:
    proc = subprocess.Popen(
        mlrunner_argv("ui", "-o", output, "--port", "0", *extra),
        cwd=project.path,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"(http://\S+/)", line)
    if m is None:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"no URL from mlrunner ui: {line!r}{out}{err}")
    return Server(proc, m.group(1), project.path / output)


def chromium_path() -> str:
    """Debian's chromium (or $MLRUNNER_CHROMIUM); fails, never skips, when it is missing."""
    given = os.environ.get(CHROMIUM_ENV)
    for candidate in ([given] if given else []) + ["/usr/bin/chromium", "chromium", "chromium-browser"]:
        found = shutil.which(candidate) if not os.path.isabs(candidate) else candidate
        if found and os.path.isfile(found):
            return found
    pytest.fail(
        "the browser tests need Chromium: `apt-get install -y chromium` (Debian's package; .ci/run "
        f"installs it), or point ${CHROMIUM_ENV} at a Chromium binary"
    )


@pytest.fixture(scope="session")
def ui_sweep(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The finished sweep, shared by every test of the UI (nothing may change it)."""
    return build_sweep(tmp_path_factory.mktemp("ui") / "proj dir")


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the session (a fresh context per test)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright's Python package: pip install -e '.[test]'")
    path = chromium_path()
    with sync_playwright() as pw:
        # Playwright gives the browser a fresh profile dir of its own (--user-data-dir).
        browser = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()

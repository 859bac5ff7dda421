"""Helpers the tests import (``from helpers import ...``): paths, the seed README example,
the CLI in a subprocess, a scratch project, and mlrunner 0.5.9 (the oracle)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FAKE_BIN = Path(__file__).resolve().parent / "fake_bin"

# The seed README's params.yaml example, as users copy it (comments and blank lines included).
README_EXAMPLE = """\
---
# All commands for each experiment with params to be filled specified as `{param}` or `[param]`
template:
  train: >
    python train.py data-bin/{data} --save-dir {_output} --norm {norm} [moment] [early-stop]

  avg: >
    python checkpoint_avg.py --inputs {_output} --num 5 --output {_output}/avg.pt

  test: >
    python generate.py data-bin/{data} --beam 5 --path {_output}/avg.pt

default:
  data: iwslt14
  norm: batch
  moment: 0.1
  early-stop: False

resource: [ 0, 1, 2, 3 ]

---
norm: [ new, batch ]
moment: [ 0.1, 0.05 ]

---
norm: [ batch ]
early-stop: [ True, False ]
"""


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("GIT_AUTHOR_NAME", "t")
    env.setdefault("GIT_AUTHOR_EMAIL", "t@example.invalid")
    env.setdefault("GIT_COMMITTER_NAME", "t")
    env.setdefault("GIT_COMMITTER_EMAIL", "t@example.invalid")
    if extra:
        env.update(extra)
    return env


def mlrunner_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlrunner", *args]


def run_argv(*args: str) -> list[str]:
    return [sys.executable, "-c", "from mlrunner.cli import run_main; run_main()", *args]


class Project:
    """A scratch dir with a params.yaml; helpers to run `run` / `mlrunner` in it."""

    def __init__(self, path: Path, lock_dir: Path) -> None:
        self.path = path
        self.env = cli_env({"MLRUNNER_GPU_LOCK_DIR": str(lock_dir)})

    def write(self, text: str, name: str = "params.yaml") -> Path:
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
        return p

    def run(
        self, *args: str, timeout: float = 60, check: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            run_argv(*args), cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check is not None:
            assert res.returncode == check, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
        return res

    def mlrunner(
        self, *args: str, timeout: float = 60, check: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            mlrunner_argv(*args), cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check is not None:
            assert res.returncode == check, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
        return res

    def popen(self, *args: str, **kw: object) -> subprocess.Popen[str]:
        return subprocess.Popen(
            run_argv(*args),
            cwd=self.path,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kw,  # type: ignore[arg-type]
        )


OLD_VERSION = "0.5.9"
OLD_PYTHON_ENV = "MLRUNNER_OLD_PYTHON"  # .ci/run points it at a venv it made


def old_mlrunner_python() -> Path:
    """The interpreter of a throwaway venv with mlrunner 0.5.9, the compatibility oracle.

    ``$MLRUNNER_OLD_PYTHON`` when set (``.ci/run`` makes the venv); else a venv cached
    under ``~/.cache/mlrunner-tests``, made on first use with ``pip install mlrunner==0.5.9``.
    Raises (the comparison tests then fail, never skip) when neither can be had.
    """
    given = os.environ.get(OLD_PYTHON_ENV)
    if given:
        python = Path(given)
        if not python.is_file():
            raise RuntimeError(f"${OLD_PYTHON_ENV}={given} does not exist")
        return python
    venv = (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "mlrunner-tests"
        / f"old-{OLD_VERSION}"
    )
    python = venv / "bin" / "python"
    if not (venv / "bin" / "run").is_file():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"mlrunner=={OLD_VERSION}"],
            check=True,
            timeout=600,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
    return python


def wait_for(cond: Any, what: str = "condition", timeout: float = 30.0, every: float = 0.01) -> Any:
    """``cond()``'s first truthy value, polled every ``every`` seconds; AssertionError naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")

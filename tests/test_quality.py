"""Project hygiene that CI enforces: ruff lint and format, mypy strict, the reference
params.yaml, the layout."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from helpers import ROOT


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("ruff")
    cmd = [exe] if exe else [sys.executable, "-m", "ruff"]
    return subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("args", [("check", "."), ("format", "--check", ".")])
def test_ruff_clean(args: tuple[str, ...]) -> None:
    res = _ruff(*args)
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_strict_clean() -> None:
    """mypy in strict mode over mlrunner/ (configured in pyproject.toml): no error at all."""
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_reference_params_yaml_is_the_packaged_one() -> None:
    packaged = ROOT / "mlrunner" / "data" / "params.yaml"
    assert (ROOT / "params.yaml").read_text() == packaged.read_text()


def test_layout() -> None:
    for path in (
        "mlrunner",
        "tests",
        "examples",
        "scripts",
        "pyproject.toml",
        "params.yaml",
        "LICENSE",
        "README.md",
    ):
        assert (ROOT / path).exists(), path
    assert (ROOT / ".ci" / "run").exists()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -e '.[test]' && python -m pytest" in ci
    assert "pip install -e '.[test]' && python -m pytest" in (ROOT / "README.md").read_text()


def test_core_never_imports_the_cli() -> None:
    for path in (ROOT / "mlrunner").rglob("*.py"):
        if path.name == "__main__.py" or path.parent.name == "cli":
            continue
        text = path.read_text()
        assert "import typer" not in text and "from .cli" not in text and "mlrunner.cli" not in text, path

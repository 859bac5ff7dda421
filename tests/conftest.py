"""Shared fixtures; the helpers themselves live in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Project, old_mlrunner_python
from ui_support import chromium, ui_sweep  # noqa: F401  (the web UI's session fixtures)


@pytest.fixture(scope="session")
def old_python() -> Path:
    """mlrunner 0.5.9's interpreter (see helpers.old_mlrunner_python): fails, never skips."""
    return old_mlrunner_python()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    work = tmp_path / "proj dir"  # a space in every path, always
    work.mkdir()
    return Project(work, tmp_path / "gpu-locks")

"""Shared by the Slurm test files: the cluster fixture and small Slurm/registry helpers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mlrunner.backends.slurm import query_states


def cluster_problem() -> str | None:
    """None when a Slurm cluster answers and its node can run jobs, else what is wrong."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "sinfo/sbatch not on PATH"
    deadline = time.monotonic() + 5
    last = ""
    while time.monotonic() < deadline:
        try:
            proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired) as exc:
            last = str(exc)
        else:
            states = proc.stdout.split()
            if proc.returncode == 0 and any(
                s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states
            ):
                return None
            last = (proc.stderr or proc.stdout).strip() or "no node"
        time.sleep(0.2)
    return f"sinfo: {last}"


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skip without a reachable cluster on a user's machine; fail in CI (CI is set)."""
    problem = cluster_problem()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(
            f"CI is set but no Slurm cluster is reachable ({problem}): run scripts/start-local-slurm.sh"
        )
    pytest.skip("no Slurm cluster reachable: run scripts/start-local-slurm.sh")


def squeue_ids(job_ids: Sequence[str]) -> list[str]:
    """Those of ``job_ids`` Slurm still has queued or running."""
    states = query_states(job_ids) or {}
    return [j for j, s in states.items() if not s.terminal]


def wait_until_gone(job_ids: Sequence[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while squeue_ids(job_ids):
        assert time.monotonic() < deadline, f"jobs still queued/running: {squeue_ids(job_ids)}"
        time.sleep(0.2)


def registry(output: Path) -> list[dict[str, Any]]:
    """Every submission the Slurm backend registered under ``output`` (active and done)."""
    root = output / ".mlrunner" / "slurm" / "jobs"
    found = sorted(root.glob("*.json")) + sorted(root.glob("done/*.json"))
    return [json.loads(p.read_text()) for p in found]

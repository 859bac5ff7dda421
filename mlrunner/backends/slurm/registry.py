"""The job registry: ``<output>/.mlrunner/slurm/jobs/<token>.json``, one file per submission.

An entry is written *before* ``sbatch`` runs and moves to ``jobs/done/`` once all its
outcomes are recorded, so whatever is left in ``jobs/`` is a submission a later runner
must look at (see :mod:`mlrunner.backends.slurm.reattach`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlrunner.backends.slurm.job import atomic_write_json


class Registry:
    """Submissions not yet fully recorded: ``<output>/.mlrunner/slurm/jobs/<token>.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, entry: Mapping[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.root / f"{entry['token']}.json", entry)

    def active(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return out
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                with open(self.root / name, encoding="utf-8") as f:
                    entry = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(entry, dict) and entry.get("token") and entry.get("task_key"):
                out.append(entry)
        return out

    def settle(self, token: str) -> None:
        done = self.root / "done"
        done.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(self.root / f"{token}.json", done / f"{token}.json")
        except FileNotFoundError:
            pass


def age(entry: Mapping[str, Any]) -> float:
    """Seconds since the entry's submission was registered."""
    return time.time() - float(entry.get("submitted_at") or 0)

"""What ``run`` was asked to do: :class:`RunRequest`, and how a resume merges it with the
options the resumed run stored."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# options a resumed run takes from the stored run, and those the resume command line may change
STORED = (
    "cwd",
    "params_path",
    "output",
    "title",
    "commands",
    "resources",
    "force",
    "debug",
    "sample",
    "seed",
    "no_subdir",
    "isolate",
    "backend",
    "time",
    "slurm",
    "order",
    "max_tasks",
    "allow_orphans",
)
RESUME_MAY_CHANGE = ("retries", "grace", "detach", "timeout", "stall")
_TUPLES = ("commands", "resources", "timeout")


@dataclass(frozen=True)
class RunRequest:
    """The options of one ``run`` (plain data). ``given``: the names of the fields the user
    gave explicitly (on the command line); on resume those of :data:`RESUME_MAY_CHANGE`
    override what the resumed run stored, the others take the stored value."""

    params_path: str = "params.yaml"
    output: str = "output"
    title: str | None = None
    commands: tuple[str, ...] | None = None
    resources: tuple[str, ...] | None = None
    force: bool = False
    dry_run: bool = False
    debug: bool = False
    sample: int | None = None
    seed: int | None = None  # of every random draw; a new run without one gets one (stored)
    order: str | None = None  # document | shuffle (every grid), None: each grid's _order
    max_tasks: int | None = None  # None: the plan's limit (1,000,000)
    allow_orphans: bool = False  # an orphan param resembling a used one is no error
    json: bool = False  # --dry-run --json: one JSON document of the tasks
    no_subdir: bool = False
    retries: int = 0
    grace: float = 10.0
    timeout: tuple[str, ...] | None = None  # --timeout: DURATION or CMD=DURATION, as given
    stall: str | None = None  # --stall DURATION, as given
    isolate: bool = False
    backend: str = "local"
    detach: bool = False  # Slurm: on Ctrl-C leave the submitted jobs running
    slurm: Mapping[str, Any] = field(default_factory=dict)  # CLI overrides of the slurm: section
    resume: bool = False
    run_id: int | None = None
    only: tuple[str, ...] | None = None  # --only: these experiments (names) only; never stored
    time: str | None = None  # the run's time string (set when it starts; stored)
    argv: tuple[str, ...] = ()
    cwd: str = field(default_factory=os.getcwd)
    given: frozenset[str] = frozenset()

    @classmethod
    def explicit(cls, **options: Any) -> RunRequest:
        """A request whose every option passed here counts as given explicitly."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**options, given=frozenset(options) & names)

    def options(self) -> dict[str, Any]:
        """What the ledger stores for the run (JSON-able; what a resume restores)."""
        out = {k: getattr(self, k) for k in STORED + RESUME_MAY_CHANGE}
        for k in _TUPLES:
            if out[k] is not None:
                out[k] = list(out[k])
        out["slurm"] = dict(self.slurm)
        return out

    def resumed(self, stored: Mapping[str, Any]) -> RunRequest:
        """This request resuming a run that stored ``stored``: the stored options, but for
        those of :data:`RESUME_MAY_CHANGE` given explicitly here."""
        changes = {k: stored[k] for k in STORED if k in stored and stored[k] is not None}
        # the run goes on where it started: its cwd, and its output root from there (a
        # resume from another directory must not write into that directory)
        cwd = str(changes.get("cwd") or self.cwd)
        out = str(changes.get("output", self.output))
        if not os.path.isabs(out) and os.path.realpath(cwd) != os.path.realpath(self.cwd):
            changes["output"] = os.path.join(cwd, out)
        changes.update({k: stored[k] for k in RESUME_MAY_CHANGE if k in stored and k not in self.given})
        for k in _TUPLES:
            if changes.get(k) is not None:
                changes[k] = tuple(changes[k])
        if "slurm" in changes:
            changes["slurm"] = dict(changes["slurm"] or {})
        return dataclasses.replace(self, **changes)

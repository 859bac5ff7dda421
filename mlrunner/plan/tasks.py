"""What a plan is made of: tasks with their rendered commands."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mlrunner.spec import Value


@dataclass(frozen=True)
class Command:
    name: str
    text: str  # rendered shell text: no env prefix, no redirect


@dataclass(frozen=True)
class Task:
    index: int  # 0-based position in plan order
    name: str  # experiment dir name (0.5.9 naming + safety)
    output_dir: str  # os.path.join(output, name), or output with --no-subdir
    params: dict[str, Value]  # resolved: grid values after alias, then defaults; JSON-able
    grid_params: dict[str, Value]  # only what the grid document wrote (shapes the name)
    commands: tuple[Command, ...]
    key: str  # sha256 hex of (resolved params, command names + templates, output_dir)
    gpus: int = 1  # from the grid's _gpus
    # extra environment of its commands (env: and the grid's _env:, rendered); not in the key
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Plan:
    tasks: tuple[Task, ...]
    orphans: tuple[str, ...]
    n_commands: int
    warnings: tuple[str, ...] = ()  # e.g. a task renamed because its name was taken
    seed: int | str | None = None  # the seed of its random draws and shuffles
    drew: bool = False  # whether anything random was drawn (the seed decided tasks or order)

"""params.yaml -> a frozen, validated :class:`Spec`.

The first YAML document configures (``template``, ``default``, ``resource``, ``alias``,
``slurm``); every later non-empty document is a grid sweep. Parsing walks PyYAML's
composed node tree (libyaml's composer when available), so every error can name the file,
line and key, and duplicate keys in a mapping -- which PyYAML silently accepts, keeping
the last -- are reported. Semantics are mlrunner 0.5.9's, made strict where 0.5.9 silently
did something else (see docs/architecture.md and issue 2).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from mlrunner.spec.generators import Dist, Gen
from mlrunner.spec.reader import Value

SLURM_KEYS = (
    "partition",
    "time",
    "gpus_per_task",
    "cpus_per_task",
    "mem",
    "array_parallelism",
    "account",
    "qos",
    "constraint",
    "additional_parameters",
)
TOP_KEYS = ("template", "default", "resource", "alias", "slurm", "env", "timeout", "notify")
GRID_KEYS = (
    "_title",
    "_cmd",
    "_gpus",
    "_zip",
    "_exclude",
    "_include",
    "_samples",
    "_seed",
    "_order",
    "_env",
)
SUBGRID_KEYS = ("_zip",)  # the settings a conditional sub-grid may have
RESERVED_PARAMS = ("_output", "_name", "_time", "_attempt")  # values only mlrunner sets
RESERVED_NAMES = frozenset(RESERVED_PARAMS + GRID_KEYS + ("_scripts",))
RESOURCE_KEYS = ("gpus", "per_gpu", "min_free_memory", "cpus")
ORDERS = ("document", "shuffle")
NOTIFY_KEYS = ("targets", "events", "timeout")
NOTIFY_EVENTS = ("end", "failure", "first_failure")
NOTIFY_TIMEOUT = 10.0  # seconds the end of a run waits for its notifications to go out
URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")  # a target: an apprise URL, schema://...
MAX_GPUS = 1024  # a task asking for more is a typo (and would not fit a hint in memory)
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ATTEMPT_TEXT = "${MLRUNNER_ATTEMPT}"  # what {_attempt} renders to: bash expands it at each attempt
SLURM_INT_KEYS = frozenset({"gpus_per_task", "cpus_per_task", "array_parallelism"})

PLACEHOLDER_RE = re.compile(r"\{([\w-]+)\}|\[([\w-]+)\]")
COMMAND_NAME_RE = re.compile(r"[\w-]+")
_FOLD_RE = re.compile(r"\s*\n\s*")
SLOT_RE = re.compile(r"[\w.:/-]+(?:,[\w.:/-]+)*")
_MEMORY_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]i?B?|B)?", re.IGNORECASE)
_MEMORY_UNITS = {"": 2**20, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


# --------------------------------------------------------------------------- data
# alias name -> ((choice, ((param, value), ...)), ...), in file order
AliasChoices = tuple[tuple[str, tuple[tuple[str, Value], ...]], ...]
AliasTable = tuple[tuple[str, AliasChoices], ...]


@dataclass(frozen=True)
class Axis:
    """One param a grid document (or a sub-grid) writes, and the form of its value: exactly
    one of ``values`` (a list, a scalar as a 1-tuple, or a :class:`Gen`: finite), ``dist``
    (drawn in a ``_samples`` document) or ``branches`` (a sub-grid per value)."""

    key: str
    line: int
    values: tuple[Value, ...] | Gen | None = None
    dist: Dist | None = None
    branches: tuple[tuple[Value, SubGrid], ...] | None = None

    @property
    def size(self) -> int:
        """How many values it lists or generates (branches: how many; a distribution: 0)."""
        if self.branches is not None:
            return len(self.branches)
        if isinstance(self.values, Gen):
            return self.values.size  # not len(): a range may hold more than 2**63 values
        return 0 if self.values is None else len(self.values)

    def value_at(self, i: int) -> Value:
        if self.branches is not None:
            return self.branches[i][0]
        assert self.values is not None
        return self.values.at(i) if isinstance(self.values, Gen) else self.values[i]


@dataclass(frozen=True)
class SubGrid:
    """A conditional sub-grid (or a document's own params): axes in document order, and the
    groups of them that ``_zip`` pairs element by element."""

    line: int
    axes: tuple[Axis, ...]
    zips: tuple[tuple[str, ...], ...] = ()


Match = tuple[tuple[str, tuple[Value, ...]], ...]  # an _exclude entry: key -> any of these values
Combination = tuple[tuple[str, Value], ...]  # an _include entry: key -> value, in its order


@dataclass(frozen=True)
class Grid:
    index: int  # 1-based number of the YAML document among grids
    line: int  # 1-based line where the document starts
    params: tuple[tuple[str, tuple[Value, ...]], ...]  # params given as a list or a scalar (0.5.9's grid)
    title: str | None  # _title
    commands: tuple[str, ...] | None  # _cmd
    gpus: int | None  # _gpus (issue 6)
    axes: tuple[Axis, ...] = ()  # every param with its form, in document order (issue 15)
    zips: tuple[tuple[str, ...], ...] = ()  # _zip
    exclude: tuple[Match, ...] = ()  # _exclude
    include: tuple[Combination, ...] = ()  # _include
    samples: int | None = None  # _samples: draw this many tasks
    seed: int | None = None  # _seed
    order: str | None = None  # _order: document | shuffle
    env: tuple[tuple[str, str], ...] = ()  # _env: name -> value template ({p} placeholders)
    # 1-based line of its settings ("_zip", "_exclude", "_env.NAME", ...), for errors found later
    locations: Mapping[str, int] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def body(self) -> SubGrid:
        return SubGrid(self.line, self.axes, self.zips)

    @property
    def plain(self) -> bool:
        """Only lists and scalars, nothing else of issue 15: expands as 0.5.9 did."""
        return len(self.axes) == len(self.params) and not (
            self.zips or self.exclude or self.include or self.samples or self.order == "shuffle"
        )


@dataclass(frozen=True)
class ResourceSpec:
    slots: tuple[str, ...] | None  # explicit list: each entry one worker slot ("0", "0,1", "1")
    auto: bool = False  # `auto` or gpus: auto
    gpus: tuple[int, ...] | None = None  # explicit gpus list in the mapping form
    per_gpu: int = 1
    min_free_memory_mib: int | None = None


def cpu_slots(n: int) -> tuple[str, ...]:
    """The slot texts of ``n`` CPU slots (``resource: {cpus: n}``, ``-r cpu:n``)."""
    return tuple(f"{CPU_SLOT_PREFIX}{i}" for i in range(n))


CPU_SLOT_PREFIX = "cpu:"  # a slot whose commands see no GPU (CUDA_VISIBLE_DEVICES empty)


@dataclass(frozen=True)
class NotifySpec:
    """``notify:``: where to send (apprise URLs, ``${VAR}`` expanded when the run starts),
    which of :data:`NOTIFY_EVENTS`, and how long the end of a run waits for them."""

    targets: tuple[str, ...]
    events: tuple[str, ...] = ("end",)
    timeout: float = NOTIFY_TIMEOUT
    lines: tuple[int, ...] = ()  # 1-based line of each target, for errors found later


@dataclass(frozen=True)
class Spec:
    path: str
    text: str
    templates: tuple[tuple[str, str], ...]  # command name -> template (whitespace-folded)
    defaults: tuple[tuple[str, Value], ...]
    aliases: AliasTable
    resource: ResourceSpec
    grids: tuple[Grid, ...]
    slurm: tuple[tuple[str, object], ...] | None  # validated against SLURM_KEYS
    env: tuple[tuple[str, str], ...] = ()  # env: name -> value template ({p} placeholders)
    timeouts: tuple[tuple[str, float], ...] = ()  # timeout: command (or "*") -> seconds
    notify: NotifySpec | None = None  # notify: (issue 14.4)
    # 1-based line of things errors may point at later: "template.<cmd>", "default.<p>", "alias.<a>"
    locations: Mapping[str, int] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def template_map(self) -> dict[str, str]:
        return dict(self.templates)

    @property
    def default_map(self) -> dict[str, Value]:
        return dict(self.defaults)

    @property
    def alias_map(self) -> dict[str, dict[str, dict[str, Value]]]:
        return {name: {choice: dict(sets) for choice, sets in choices} for name, choices in self.aliases}

    @property
    def slurm_map(self) -> dict[str, object]:
        return dict(self.slurm or ())


# --------------------------------------------------------------------------- helpers
def fold_template(text: str) -> str:
    """0.5.9's clean-up of multi-line commands: whitespace around each newline becomes one space."""
    return _FOLD_RE.sub(" ", text).strip()


def template_fields(template: str) -> list[tuple[str, str]]:
    """The placeholders of a template, in order: ('{', name) for {name}, ('[', name) for [name]."""
    return [("{", m[1]) if m[1] is not None else ("[", m[2]) for m in PLACEHOLDER_RE.finditer(template)]


def choice_key(value: Value) -> str:
    """How a grid value selects an alias choice (choices are YAML keys, kept as text)."""
    return str(value)


def parse_memory_mib(value: object) -> int:
    """``10GiB`` / ``500MiB`` / ``1.5G`` / a bare number (MiB) -> MiB, rounded up. ValueError if bad."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value):
            raise ValueError(value)
        return math.ceil(value)
    m = _MEMORY_RE.fullmatch(str(value).strip())
    if not m:
        raise ValueError(value)
    unit = (m[2] or "").upper()
    base = _MEMORY_UNITS[unit[:1]] if unit not in ("", "B") else _MEMORY_UNITS[unit]
    if len(unit) == 2 and unit[1] == "B" and unit[0] in "KMGT":  # KB/MB/GB/TB: powers of 1000
        base = 1000 ** ("KMGT".index(unit[0]) + 1)
    return math.ceil(float(m[1]) * base / 2**20)

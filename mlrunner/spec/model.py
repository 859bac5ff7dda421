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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mlrunner.errors import SpecError, UsageError, did_you_mean
from mlrunner.spec.reader import Reader, Value, compose, is_null, line_of

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
TOP_KEYS = ("template", "default", "resource", "alias", "slurm")
GRID_KEYS = ("_title", "_cmd", "_gpus")
RESERVED_PARAMS = ("_output", "_name", "_time")  # values only mlrunner sets
_RESERVED_NAMES = frozenset(RESERVED_PARAMS + GRID_KEYS + ("_scripts",))
RESOURCE_KEYS = ("gpus", "per_gpu", "min_free_memory")
_SLURM_INT_KEYS = frozenset({"gpus_per_task", "cpus_per_task", "array_parallelism"})

PLACEHOLDER_RE = re.compile(r"\{([\w-]+)\}|\[([\w-]+)\]")
COMMAND_NAME_RE = re.compile(r"[\w-]+")
_FOLD_RE = re.compile(r"\s*\n\s*")
_SLOT_RE = re.compile(r"[\w.:/-]+(?:,[\w.:/-]+)*")
_MEMORY_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]i?B?|B)?", re.IGNORECASE)
_MEMORY_UNITS = {"": 2**20, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Grid:
    index: int  # 1-based number of the YAML document among grids
    line: int  # 1-based line where the document starts
    params: tuple[tuple[str, tuple[Value, ...]], ...]  # in document order; scalar -> 1-tuple
    title: str | None  # _title
    commands: tuple[str, ...] | None  # _cmd
    gpus: int | None  # _gpus (issue 6)


@dataclass(frozen=True)
class ResourceSpec:
    slots: tuple[str, ...] | None  # explicit list: each entry one worker slot ("0", "0,1", "1")
    auto: bool = False  # `auto` or gpus: auto
    gpus: tuple[int, ...] | None = None  # explicit gpus list in the mapping form
    per_gpu: int = 1
    min_free_memory_mib: int | None = None


@dataclass(frozen=True)
class Spec:
    path: str
    text: str
    templates: tuple[tuple[str, str], ...]  # command name -> template (whitespace-folded)
    defaults: tuple[tuple[str, Value], ...]
    aliases: tuple[tuple[str, tuple[tuple[str, tuple[tuple[str, Value], ...]], ...]], ...]
    resource: ResourceSpec
    grids: tuple[Grid, ...]
    slurm: tuple[tuple[str, object], ...] | None  # validated against SLURM_KEYS
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


# --------------------------------------------------------------------------- sections
def _templates(r: Reader, node: Node, locations: dict[str, int]) -> tuple[tuple[str, str], ...]:
    hint = "e.g.\ntemplate:\n    train: python train.py --lr {lr}"
    if is_null(node) or (isinstance(node, MappingNode) and not node.value):
        raise r.error("'template' is empty: there is no command to run", node, "template", hint=hint)
    if not isinstance(node, MappingNode):
        raise r.error(
            "'template' must be a mapping of command name: shell command", node, "template", hint=hint
        )
    out = []
    for name, key_node, value_node in r.items(node, "template"):
        key = f"template.{name}"
        if not COMMAND_NAME_RE.fullmatch(name):
            raise r.error(
                "a command name may only hold letters, digits, '_' and '-' (it names log files)",
                key_node,
                key,
                hint="rename it, e.g. 'train' or 'eval-2'",
            )
        text = r.scalar(value_node, key)
        if not isinstance(text, str):
            raise r.error("a command must be a string", value_node, key, hint=hint)
        folded = fold_template(text)
        if not folded:
            raise r.error("the command is empty", value_node, key, hint=hint)
        if "\x00" in folded:
            raise r.error("the command contains a NUL character", value_node, key)
        seen: dict[str, str] = {}
        for kind, param in template_fields(folded):
            other = seen.setdefault(param, kind)
            if other != kind:
                raise r.error(
                    f"param '{param}' is used both as {{{param}}} and as [{param}]",
                    value_node,
                    key,
                    hint=f"use one form: {{{param}}} for the bare value, [{param}] for --{param} value",
                )
            if kind == "[" and param in RESERVED_PARAMS:
                raise r.error(
                    f"[{param}] is not allowed: '{param}' is reserved",
                    value_node,
                    key,
                    hint=f"write {{{param}}} to insert its value",
                )
        locations[key] = line_of(key_node)
        out.append((name, folded))
    return tuple(out)


def _defaults(r: Reader, node: Node, locations: dict[str, int]) -> tuple[tuple[str, Value], ...]:
    if is_null(node):
        return ()
    out = []
    for name, key_node, value_node in r.items(node, "default"):
        key = f"default.{name}"
        if name in _RESERVED_NAMES:
            raise r.error(f"'{name}' is reserved and cannot be a param", key_node, key)
        if isinstance(value_node, SequenceNode):
            raise r.error(
                "a default is one value, not a list",
                value_node,
                key,
                hint=f"to sweep values, list them in a grid document after `---`: `{name}: [a, b]`",
            )
        out.append((name, r.value(value_node, key, "default value")))
        locations[key] = line_of(key_node)
    return tuple(out)


def _aliases(r: Reader, node: Node, locations: dict[str, int]):
    if is_null(node):
        return ()
    out = []
    for name, key_node, value_node in r.items(node, "alias"):
        key = f"alias.{name}"
        if name in _RESERVED_NAMES:
            raise r.error(f"'{name}' is reserved and cannot be an alias", key_node, key)
        if is_null(value_node) or (isinstance(value_node, MappingNode) and not value_node.value):
            raise r.error(
                "an alias needs at least one choice",
                value_node,
                key,
                hint=f"e.g.\nalias:\n    {name}:\n        small: {{layers: 2, dim: 256}}",
            )
        choices = []
        keyset: tuple[str, ...] | None = None
        first_choice = ""
        for choice, _, sets_node in r.items(value_node, key, any_keys=True):
            ckey = f"{key}.{choice}"
            if is_null(sets_node) or (isinstance(sets_node, MappingNode) and not sets_node.value):
                raise r.error("an alias choice must set at least one param", sets_node, ckey)
            sets = []
            for param, pkey_node, pvalue_node in r.items(sets_node, ckey):
                if param in _RESERVED_NAMES:
                    raise r.error(f"'{param}' is reserved and cannot be a param", pkey_node, ckey)
                sets.append((param, r.value(pvalue_node, f"{ckey}.{param}")))
            these = tuple(sorted(p for p, _ in sets))
            if keyset is None:
                keyset, first_choice = these, choice
            elif these != keyset:
                raise r.error(
                    f"every choice of alias '{name}' must set the same params: "
                    f"'{first_choice}' sets {list(keyset)}, '{choice}' sets {list(these)}",
                    sets_node,
                    ckey,
                    hint="add the missing params to every choice",
                )
            choices.append((choice, tuple(sets)))
        locations[key] = line_of(key_node)
        out.append((name, tuple(choices)))
    names = {n for n, _ in out}
    for name, choices in out:
        nested = names.intersection(p for p, _ in choices[0][1])
        if nested:
            raise SpecError(
                f"alias '{name}' sets '{sorted(nested)[0]}', which is itself an alias",
                file=r.path,
                line=locations[f"alias.{name}"],
                key=f"alias.{name}",
                hint="aliases cannot be nested: list the final params in each choice",
            )
    return tuple(out)


def _slot(r: Reader, node: Node, key: str) -> str:
    v = r.scalar(node, key)
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise r.error(
            f'a resource slot must be a GPU index or a quoted list like "0,1", not {v!r}',
            node,
            key,
            hint='e.g. resource: [0, 1, "2,3"]',
        )
    text = re.sub(r"\s*,\s*", ",", str(v).strip())
    if text and not _SLOT_RE.fullmatch(text):
        raise r.error(f"invalid resource slot {text!r}", node, key, hint='e.g. resource: [0, 1, "2,3"]')
    return text


def _resource(r: Reader, node: Node) -> ResourceSpec:
    hint = 'a list of slots: resource: [0, 1, "2,3"], `resource: auto`, or {gpus: auto, per_gpu: 2}'
    if is_null(node):
        return ResourceSpec(slots=("0",))
    if isinstance(node, SequenceNode):
        if not node.value:
            raise r.error("'resource' lists no slot", node, "resource", hint=hint)
        return ResourceSpec(slots=tuple(_slot(r, n, "resource") for n in node.value))
    if isinstance(node, ScalarNode):
        if r.scalar(node, "resource") == "auto":
            return ResourceSpec(slots=None, auto=True)
        raise r.error(f"'resource' must be a list, not {node.value!r}", node, "resource", hint=hint)
    fields: dict[str, Any] = {"slots": None, "auto": True}
    for name, key_node, value_node in r.items(node, "resource"):
        key = f"resource.{name}"
        if name not in RESOURCE_KEYS:
            guess = did_you_mean(name, RESOURCE_KEYS)
            raise r.error(
                "unknown resource setting",
                key_node,
                key,
                hint=(guess + " " if guess else "") + f"valid keys: {', '.join(RESOURCE_KEYS)}",
            )
        if name == "gpus":
            if isinstance(value_node, ScalarNode) and r.scalar(value_node, key) == "auto":
                continue
            if not isinstance(value_node, SequenceNode) or not value_node.value:
                raise r.error(
                    "'gpus' must be `auto` or a list of GPU indices", value_node, key, hint="gpus: [0, 1]"
                )
            gpus = []
            for n in value_node.value:
                g = r.scalar(n, key)
                if isinstance(g, bool) or not isinstance(g, int) or g < 0:
                    raise r.error(f"a GPU index must be an integer >= 0, not {g!r}", n, key)
                if g in gpus:
                    raise r.error(f"GPU {g} is listed twice", n, key, hint="use per_gpu to share a GPU")
                gpus.append(g)
            fields.update(auto=False, gpus=tuple(gpus))
        elif name == "per_gpu":
            n = r.scalar(value_node, key)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise r.error(f"'per_gpu' must be an integer >= 1, not {n!r}", value_node, key)
            fields["per_gpu"] = n
        else:
            raw = r.scalar(value_node, key)
            try:
                fields["min_free_memory_mib"] = parse_memory_mib(raw)
            except ValueError:
                raise r.error(
                    f"invalid memory size {raw!r}",
                    value_node,
                    key,
                    hint="e.g. 10GiB, 500MiB, or a number of MiB",
                ) from None
    return ResourceSpec(**fields)


def _slurm(r: Reader, node: Node) -> tuple[tuple[str, object], ...] | None:
    if is_null(node):
        return None
    out: list[tuple[str, object]] = []
    for name, key_node, value_node in r.items(node, "slurm"):
        key = f"slurm.{name}"
        if name not in SLURM_KEYS:
            guess = did_you_mean(name, SLURM_KEYS)
            raise r.error(
                "unknown slurm setting",
                key_node,
                key,
                hint=(guess + " " if guess else "")
                + f"valid keys: {', '.join(SLURM_KEYS)} (others go under additional_parameters)",
            )
        if name == "additional_parameters":
            extra: dict[str, object] = {}
            for k, _, vn in r.items(value_node, key):
                if isinstance(vn, SequenceNode):
                    extra[k] = [r.value(n, f"{key}.{k}") for n in vn.value]
                else:
                    extra[k] = r.value(vn, f"{key}.{k}")
            out.append((name, extra))
            continue
        v = r.value(value_node, key)
        if name in _SLURM_INT_KEYS and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise r.error(f"'{name}' must be an integer >= 1, not {v!r}", value_node, key)
        if name == "time" and (isinstance(v, (bool, float)) or (isinstance(v, int) and v < 1)):
            raise r.error(
                f"'time' must be whole minutes (or a Slurm time string), not {v!r}", value_node, key
            )
        out.append((name, v))
    return tuple(out)


def _grid(
    r: Reader,
    node: Node,
    index: int,
    template_names: tuple[str, ...],
    aliases: Mapping[str, Mapping[str, Mapping[str, Value]]],
) -> Grid:
    where = f"grid {index}"
    if not isinstance(node, MappingNode):
        raise r.error(
            f"{where}: a grid document must be a mapping of param: [values]",
            node,
            hint="e.g.\n---\nlr: [0.1, 0.01]\nbatch: 32",
        )
    params: list[tuple[str, tuple[Value, ...]]] = []
    title: str | None = None
    commands: tuple[str, ...] | None = None
    gpus: int | None = None
    targets: dict[str, str] = {}  # alias target param -> alias that sets it
    direct: dict[str, Node] = {}
    for name, key_node, value_node in r.items(node, ""):
        if name == "_title":
            t = r.value(value_node, name, "_title")
            title = str(t)
        elif name == "_cmd":
            nodes = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            if not nodes:
                raise r.error("'_cmd' lists no command", value_node, name)
            names: list[str] = []
            for n in nodes:
                c = r.value(n, name, "_cmd entry")
                if not isinstance(c, str) or c not in template_names:
                    guess = did_you_mean(str(c), template_names)
                    raise r.error(
                        f"'_cmd' names {c!r}, which is not a command in 'template'",
                        n,
                        name,
                        hint=(guess + " " if guess else "") + f"known commands: {', '.join(template_names)}",
                    )
                if c not in names:
                    names.append(c)
            commands = tuple(names)
        elif name == "_gpus":
            g = r.value(value_node, name, "_gpus")
            if isinstance(g, bool) or not isinstance(g, int) or g < 1:
                raise r.error(f"'_gpus' must be an integer >= 1, not {g!r}", value_node, name)
            gpus = g
        elif name.startswith("_"):
            guess = did_you_mean(name, GRID_KEYS)
            raise r.error(
                f"{where}: keys starting with '_' are reserved for settings",
                key_node,
                name,
                hint=(guess + " " if guess else "") + f"grid settings: {', '.join(GRID_KEYS)}",
            )
        else:
            if isinstance(value_node, SequenceNode):
                if not value_node.value:
                    raise r.error(
                        "the list of values is empty", value_node, name, hint="give at least one value"
                    )
                values = tuple(r.value(n, name) for n in value_node.value)
            else:
                values = (r.value(value_node, name),)
            if name in aliases:
                choices = aliases[name]
                value_nodes = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for n, v in zip(value_nodes, values, strict=True):
                    if choice_key(v) not in choices:
                        raise r.error(
                            f"{v!r} is not a choice of alias '{name}'",
                            n,
                            name,
                            hint=f"valid choices: {', '.join(choices)}",
                        )
                for target in next(iter(choices.values())):
                    if target in targets:
                        raise r.error(
                            f"aliases '{targets[target]}' and '{name}' both set '{target}'",
                            key_node,
                            name,
                            hint="use only one of them in this grid",
                        )
                    targets[target] = name
            else:
                direct[name] = key_node
            params.append((name, values))
    for target, alias in targets.items():
        if target in direct:
            raise r.error(
                f"'{target}' is set both here and by alias '{alias}'",
                direct[target],
                target,
                hint=f"drop '{target}' from this grid or change the alias choice",
            )
    return Grid(
        index=index, line=line_of(node), params=tuple(params), title=title, commands=commands, gpus=gpus
    )


def parse_spec(text: str, path: str = "params.yaml") -> Spec:
    """Parse and validate params.yaml text. Raises SpecError naming file, line and key."""
    path = str(path)
    docs = compose(text, path)
    init_hint = "run `mlrunner init` to write a documented example params.yaml"
    if not docs or all(is_null(d) for d in docs):
        raise SpecError("the file is empty", file=path, hint=init_hint)
    r = Reader(path)
    first = docs[0]
    if not isinstance(first, MappingNode):
        raise r.error(
            "the first YAML document must be a mapping with at least 'template:'", first, hint=init_hint
        )
    sections: dict[str, tuple[Node, Node]] = {}
    for name, key_node, value_node in r.items(first, ""):
        if name not in TOP_KEYS:
            guess = did_you_mean(name, TOP_KEYS)
            raise r.error(
                "unknown key in the first document",
                key_node,
                name,
                hint=(guess + " " if guess else "")
                + f"valid keys: {', '.join(TOP_KEYS)}; grids go in later documents after a `---` line",
            )
        sections[name] = (key_node, value_node)
    if "template" not in sections:
        raise r.error(
            "the first document has no 'template' (the commands to run)",
            first,
            "template",
            hint="add e.g.\ntemplate:\n    train: python train.py --lr {lr}",
        )
    locations: dict[str, int] = {}
    templates = _templates(r, sections["template"][1], locations)
    defaults = _defaults(r, sections["default"][1], locations) if "default" in sections else ()
    aliases = _aliases(r, sections["alias"][1], locations) if "alias" in sections else ()
    resource = _resource(r, sections["resource"][1]) if "resource" in sections else ResourceSpec(slots=("0",))
    slurm = _slurm(r, sections["slurm"][1]) if "slurm" in sections else None
    alias_map = {n: {c: dict(s) for c, s in cs} for n, cs in aliases}
    for name, value in defaults:
        if name in alias_map and choice_key(value) not in alias_map[name]:
            raise SpecError(
                f"{value!r} is not a choice of alias '{name}'",
                file=path,
                line=locations[f"default.{name}"],
                key=f"default.{name}",
                hint=f"valid choices: {', '.join(alias_map[name])}",
            )
    for cmd, template in templates:
        for _, param in template_fields(template):
            if param in alias_map:
                raise SpecError(
                    f"alias '{param}' cannot be used in a command: it only names a set of params",
                    file=path,
                    line=locations[f"template.{cmd}"],
                    key=f"template.{cmd}",
                    hint=f"use the params it sets: {', '.join(next(iter(alias_map[param].values())))}",
                )
    names = tuple(n for n, _ in templates)
    grids = tuple(
        _grid(r, node, i, names, alias_map) for i, node in enumerate(docs[1:], 1) if not is_null(node)
    )
    if not grids:
        raise SpecError(
            "no grid document: nothing to run",
            file=path,
            line=line_of(first),
            hint="add a grid after a `---` line, e.g.\n---\nlr: [0.1, 0.01]\n"
            "(`--- {}` alone runs one task with the defaults)",
        )
    return Spec(
        path=path,
        text=text,
        templates=templates,
        defaults=defaults,
        aliases=aliases,
        resource=resource,
        grids=grids,
        slurm=slurm,
        locations=locations,
    )


def load_spec(path: str | Path) -> Spec:
    """Read and parse a params.yaml file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(
            "file not found",
            file=str(path),
            hint="run `mlrunner init` to write an example params.yaml here, or pass -y/--yaml PATH",
        ) from None
    except IsADirectoryError:
        raise SpecError("is a directory, not a params.yaml file", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=str(path)) from None
    except OSError as exc:
        raise SpecError(f"cannot read the file: {exc.strerror}", file=str(path)) from None
    return parse_spec(text, str(path))


def _split_option(values: list[str]) -> Iterator[str]:
    for value in values:
        yield from re.sub(r"\s*,\s*", ",", value.strip()).split()


def parse_resource_option(values: list[str]) -> ResourceSpec:
    """-r/--resource values: `-r 0,1 -r 2,3` two 2-GPU slots; `-r "0 1 2"` three; `-r auto`."""
    slots = list(_split_option(values))
    hint = 'e.g. -r 0 -r 1, -r "0 1", -r 0,1 (one 2-GPU slot), or -r auto'
    if not slots:
        raise UsageError("no resource slot given", key="-r/--resource", hint=hint)
    if "auto" in slots:
        if len(slots) > 1:
            raise UsageError("'auto' cannot be combined with other slots", key="-r/--resource", hint=hint)
        return ResourceSpec(slots=None, auto=True)
    for slot in slots:
        if not _SLOT_RE.fullmatch(slot):
            raise UsageError(f"invalid resource slot {slot!r}", key="-r/--resource", hint=hint)
    return ResourceSpec(slots=tuple(slots))

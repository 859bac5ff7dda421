"""A grid document of params.yaml: its params (in every form of :mod:`.values`) and its
settings: ``_title``, ``_cmd``, ``_gpus`` (0.5.9 and issue 6), ``_zip``, ``_exclude``,
``_include``, ``_samples``, ``_seed``, ``_order``, ``_env`` (issue 15)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from yaml.nodes import MappingNode, Node, SequenceNode

from mlrunner.errors import did_you_mean
from mlrunner.spec.model import (
    GRID_KEYS,
    MAX_GPUS,
    ORDERS,
    RESERVED_NAMES,
    Axis,
    Combination,
    Grid,
    Match,
    SubGrid,
    choice_key,
)
from mlrunner.spec.reader import Reader, Value, line_of
from mlrunner.spec.sections import read_env
from mlrunner.spec.values import Aliases, read_axis, read_zip


def read_grid(
    r: Reader,
    node: Node,
    index: int,
    template_names: tuple[str, ...],
    aliases: Aliases,
    defaults: tuple[str, ...] = (),
) -> Grid:
    where = f"grid {index}"
    if not isinstance(node, MappingNode):
        raise r.error(
            f"{where}: a grid document must be a mapping of param: [values]",
            node,
            hint="e.g.\n---\nlr: [0.1, 0.01]\nbatch: 32",
        )
    axes: list[Axis] = []
    settings: dict[str, object] = {}
    later: dict[str, Node] = {}  # settings read once every param is known
    locations: dict[str, int] = {}
    for name, key_node, value_node in r.items(node, ""):
        if name.startswith("_") and name in GRID_KEYS:
            locations[name] = line_of(key_node)
            if name in ("_zip", "_exclude", "_include"):
                later[name] = value_node
            else:
                settings[name] = _setting(r, name, value_node, template_names, locations)
        elif name.startswith("_") or name in RESERVED_NAMES:
            guess = did_you_mean(name, GRID_KEYS)
            raise r.error(
                f"{where}: keys starting with '_' are reserved for settings",
                key_node,
                name,
                hint=(guess + " " if guess else "") + f"grid settings: {', '.join(GRID_KEYS)}",
            )
        else:
            axes.append(read_axis(r, name, key_node, value_node, aliases, ""))
    _check_alias_targets(r, axes, aliases)
    zips = read_zip(r, later["_zip"], axes) if "_zip" in later else ()
    _check_keys(r, SubGrid(line_of(node), tuple(axes), zips), {})
    samples = settings.get("_samples")
    if samples is None:
        for axis in _walk(axes):
            if axis.dist is not None:
                raise r.error_at(
                    f"'{axis.key}' draws {axis.dist!r} but this document draws no samples",
                    axis.line,
                    axis.key,
                    hint="add `_samples: 20` to the document to draw 20 tasks, "
                    "or give a list, {range: ...} or {linspace: ...}",
                )
    written = {a.key for a in _walk(axes)}
    targets = {t for choices in aliases.values() for sets in choices.values() for t in sets}
    known = written | set(defaults) | set(aliases) | targets
    exclude = _read_exclude(r, later["_exclude"], known) if "_exclude" in later else ()
    include = _read_include(r, later["_include"], aliases) if "_include" in later else ()
    return Grid(
        index=index,
        line=line_of(node),
        params=tuple((a.key, a.values) for a in axes if isinstance(a.values, tuple)),
        title=settings.get("_title"),  # type: ignore[arg-type]
        commands=settings.get("_cmd"),  # type: ignore[arg-type]
        gpus=settings.get("_gpus"),  # type: ignore[arg-type]
        axes=tuple(axes),
        zips=zips,
        exclude=exclude,
        include=include,
        samples=samples,  # type: ignore[arg-type]
        seed=settings.get("_seed"),  # type: ignore[arg-type]
        order=settings.get("_order"),  # type: ignore[arg-type]
        env=settings.get("_env", ()),  # type: ignore[arg-type]
        locations=locations,
    )


def _setting(
    r: Reader, name: str, node: Node, template_names: tuple[str, ...], locations: dict[str, int]
) -> object:
    if name == "_title":
        return str(r.value(node, name, "_title"))
    if name == "_cmd":
        nodes = node.value if isinstance(node, SequenceNode) else [node]
        if not nodes:
            raise r.error("'_cmd' lists no command", node, name)
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
        return tuple(names)
    if name == "_env":
        return read_env(r, node, "_env", locations)
    v = r.value(node, name, name)
    if name == "_order":
        if v not in ORDERS:
            raise r.error(
                f"'_order' must be one of {', '.join(ORDERS)}, not {v!r}", node, name, hint="_order: shuffle"
            )
        return v
    if isinstance(v, bool) or not isinstance(v, int) or (v < 1 and name != "_seed"):
        what = "an integer" if name == "_seed" else "an integer >= 1"
        raise r.error(f"'{name}' must be {what}, not {v!r}", node, name, hint=_EXAMPLES[name])
    if name == "_gpus" and v > MAX_GPUS:
        raise r.error(
            f"'_gpus' asks for {v} GPUs per task, more than {MAX_GPUS}",
            node,
            name,
            hint="_gpus is the number of GPUs one task needs, e.g. _gpus: 2",
        )
    return v


_EXAMPLES = {
    "_gpus": "the GPUs one task needs, e.g. _gpus: 2",
    "_samples": "how many tasks to draw, e.g. _samples: 20",
    "_seed": "e.g. _seed: 1",
}


def _walk(axes: tuple[Axis, ...] | list[Axis]) -> Iterator[Axis]:
    """Every axis, those of the sub-grids included."""
    for axis in axes:
        yield axis
        for _, sub in axis.branches or ():
            yield from _walk(sub.axes)


def _check_keys(r: Reader, sub: SubGrid, above: Mapping[str, int]) -> None:
    """A param is set once on the way to any task: never in a sub-grid and above it, nor in two
    sub-grids that cross (the branches of one param exclude each other: they may share keys)."""
    seen = dict(above)
    for axis in sub.axes:
        if axis.key in seen:
            raise r.error_at(
                f"'{axis.key}' is set twice for the same tasks (first on line {seen[axis.key]})",
                axis.line,
                axis.key,
                hint="set it once: at the top of the document, or in each branch of a sub-grid",
            )
        seen[axis.key] = axis.line
    for axis in sub.axes:
        branch_keys: dict[str, int] = {}
        for _, branch in axis.branches or ():
            _check_keys(r, branch, seen)
            for inner in _walk(branch.axes):
                branch_keys.setdefault(inner.key, inner.line)
        for key, line in branch_keys.items():
            seen.setdefault(key, line)


def _check_alias_targets(r: Reader, axes: list[Axis], aliases: Aliases) -> None:
    targets: dict[str, str] = {}  # alias target param -> alias that sets it
    direct = {a.key: a for a in axes if a.key not in aliases}
    for axis in axes:
        if axis.key not in aliases:
            continue
        for target in next(iter(aliases[axis.key].values())):
            if target in targets:
                raise r.error_at(
                    f"aliases '{targets[target]}' and '{axis.key}' both set '{target}'",
                    axis.line,
                    axis.key,
                    hint="use only one of them in this grid",
                )
            targets[target] = axis.key
    for target, alias in targets.items():
        if target in direct:
            raise r.error_at(
                f"'{target}' is set both here and by alias '{alias}'",
                direct[target].line,
                target,
                hint=f"drop '{target}' from this grid or change the alias choice",
            )


def _entries(r: Reader, node: Node, name: str, example: str) -> list[list[tuple[str, Node, Node]]]:
    if not isinstance(node, SequenceNode) or not node.value:
        raise r.error(f"'{name}' must be a list of mappings", node, name, hint=f"e.g. {name}: [{example}]")
    out = []
    for entry in node.value:
        if not isinstance(entry, MappingNode) or not entry.value:
            raise r.error(
                f"each '{name}' entry must be a mapping param: value", entry, name, hint=f"e.g. {example}"
            )
        out.append(r.items(entry, name))
    return out


def _read_exclude(r: Reader, node: Node, known: set[str]) -> tuple[Match, ...]:
    out: list[Match] = []
    for entry in _entries(r, node, "_exclude", "{model: lstm, lr: [0.1, 0.3]}"):
        match: list[tuple[str, tuple[Value, ...]]] = []
        for key, kn, vn in entry:
            if key not in known:
                guess = did_you_mean(key, known)
                raise r.error(
                    f"'_exclude' names '{key}', which no param of this document, default or alias sets",
                    kn,
                    "_exclude",
                    hint=(guess + " " if guess else "") + "an entry naming an unknown param drops nothing",
                )
            if isinstance(vn, SequenceNode):
                if not vn.value:
                    raise r.error(
                        "an '_exclude' list of values is empty",
                        vn,
                        "_exclude",
                        hint=f"e.g. {{{key}: [a, b]}}",
                    )
                match.append((key, tuple(r.value(n, f"_exclude.{key}") for n in vn.value)))
            else:
                match.append((key, (r.value(vn, f"_exclude.{key}"),)))
        out.append(tuple(match))
    return tuple(out)


def _read_include(r: Reader, node: Node, aliases: Aliases) -> tuple[Combination, ...]:
    out: list[Combination] = []
    for entry in _entries(r, node, "_include", "{model: transformer, layers: 24, lr: 0.001}"):
        combination: list[tuple[str, Value]] = []
        for key, kn, vn in entry:
            if key.startswith("_") or key in RESERVED_NAMES:
                raise r.error(
                    f"'{key}' cannot be set in an '_include' entry",
                    kn,
                    "_include",
                    hint="an entry lists params and their values, e.g. {model: transformer, lr: 0.001}",
                )
            value = r.value(vn, f"_include.{key}", "_include value")
            if key in aliases and choice_key(value) not in aliases[key]:
                raise r.error(
                    f"{value!r} is not a choice of alias '{key}'",
                    vn,
                    "_include",
                    hint=f"valid choices: {', '.join(aliases[key])}",
                )
            combination.append((key, value))
        out.append(tuple(combination))
    return tuple(out)

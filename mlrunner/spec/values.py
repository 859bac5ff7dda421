"""A param's value in a grid document, in each of its forms (issue 15), and the conditional
sub-grids they may hold:

- a list ``[a, b]`` or a scalar ``a`` (one value): as in mlrunner 0.5.9;
- a one-key mapping with a generator: ``{range: [0, 10, 2]}``, ``{linspace: [0, 1, 5]}``,
  ``{geomspace: ...}``, ``{logspace: ...}`` (finite lists), or a random distribution
  ``{uniform: [a, b]}``, ... (drawn only in a ``_samples`` document);
- any other mapping: a conditional sub-grid, ``model: {lstm: {hidden: [256, 512]}, linear: {}}``:
  each key is a value of the param, and its mapping (a grid itself) is crossed with it.
"""

from __future__ import annotations

from collections.abc import Mapping

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mlrunner.errors import did_you_mean
from mlrunner.spec.generators import DISTRIBUTIONS, FORMS, GENERATORS, check_dist, check_gen, valid_forms
from mlrunner.spec.model import RESERVED_NAMES, SUBGRID_KEYS, Axis, SubGrid, choice_key
from mlrunner.spec.reader import Reader, Value, is_null, line_of

Aliases = Mapping[str, Mapping[str, Mapping[str, Value]]]
_KNOWN = GENERATORS + DISTRIBUTIONS
MAX_DEPTH = 32  # sub-grids within sub-grids (each level is a few Python frames)


def read_axis(
    r: Reader, name: str, key_node: Node, node: Node, aliases: Aliases, where: str, depth: int = 0
) -> Axis:
    """The param ``name`` (its key at ``key_node``) with the value ``node``; ``where`` names
    its place for messages ('' at the top of a document, else the sub-grid's path), ``depth``
    how many sub-grids hold it."""
    line = line_of(key_node)
    if isinstance(node, SequenceNode):
        if not node.value:
            raise r.error("the list of values is empty", node, name, hint="give at least one value")
        values = tuple(r.value(n, name) for n in node.value)
        _check_choices(r, name, values, node.value, aliases)
        return Axis(name, line, values=values)
    if not isinstance(node, MappingNode):
        value = r.value(node, name)
        _check_choices(r, name, (value,), [node], aliases)
        return Axis(name, line, values=(value,))
    items = r.items(node, name, any_keys=True)
    if len(items) == 1 and items[0][0] in _KNOWN:
        return _generator(r, name, line, items[0], aliases)
    for k, kn, vn in items:  # a list is no sub-grid: a generator, mistyped or not alone
        if isinstance(vn, SequenceNode):
            guess = did_you_mean(k, _KNOWN)
            known = k in _KNOWN
            raise r.error(
                f"'{k}' is not a value generator" if not known else f"'{k}' must be the only key",
                kn,
                name,
                hint=(guess + " " if guess and not known else "")
                + f"valid forms: a list [a, b], a single value, {valid_forms()}; "
                "or a conditional sub-grid {value: {param: [values]}, other: {}}",
            )
    if depth >= MAX_DEPTH:
        raise r.error(
            f"sub-grids nest more than {MAX_DEPTH} deep here", key_node, name, hint="flatten the sweep"
        )
    return _branches(r, name, line, node, aliases, where, depth)


def _generator(r: Reader, name: str, line: int, item: tuple[str, Node, Node], aliases: Aliases) -> Axis:
    kind, kn, args_node = item
    if not isinstance(args_node, SequenceNode):
        raise r.error(f"{kind} takes a list of values", args_node, name, hint=f"write {FORMS[kind]}")
    args = tuple(r.value(n, name, f"{kind} value") for n in args_node.value)
    try:
        if kind in GENERATORS:
            if name in aliases:
                raise ValueError(f"'{name}' is an alias: list its choices instead")
            return Axis(name, line, values=check_gen(kind, args))
        if name in aliases and kind != "choice":
            raise ValueError(f"'{name}' is an alias: draw its choices with {{choice: [...]}}")
        dist = check_dist(kind, args)
    except ValueError as exc:
        raise r.error(str(exc), args_node, name, hint=f"write {FORMS[kind]}") from None
    if kind == "choice":
        _check_choices(r, name, args, args_node.value, aliases)
    return Axis(name, line, dist=dist)


def _branches(
    r: Reader, name: str, line: int, node: MappingNode, aliases: Aliases, where: str, depth: int
) -> Axis:
    hint = f"e.g. {name}: {{transformer: {{layers: [6, 12]}}, lstm: {{hidden: [256]}}, linear: {{}}}}"
    if not node.value:
        raise r.error(
            "an empty mapping is no value", node, name, hint=f"give a list of values; a sub-grid: {hint}"
        )
    branches: list[tuple[Value, SubGrid]] = []
    for key_node, sub_node in node.value:  # read_axis's r.items() rejected duplicate values
        if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            raise r.error("a conditional sub-grid's keys must be plain values", key_node, name, hint=hint)
        value = r.value(key_node, name, "conditional value")
        _check_choices(r, name, (value,), [key_node], aliases)
        path = f"{where}{name}: {value}"
        if is_null(sub_node):
            sub = SubGrid(line_of(key_node), ())
        elif isinstance(sub_node, MappingNode):
            sub = read_subgrid(r, sub_node, aliases, path + " > ", depth + 1)
        else:
            raise r.error(
                f"the sub-grid of {name}: {value} must be a mapping of param: values (or {{}} for none)",
                sub_node,
                name,
                hint=f"a conditional sub-grid: {hint}; to set several params from one name use `alias:`",
            )
        branches.append((value, sub))
    return Axis(name, line, branches=tuple(branches))


def read_subgrid(r: Reader, node: MappingNode, aliases: Aliases, where: str, depth: int) -> SubGrid:
    """A conditional sub-grid: params in any form, nesting included, and ``_zip``."""
    axes: list[Axis] = []
    zip_node: Node | None = None
    for name, key_node, value_node in r.items(node, where.rstrip(" >")):
        if name == "_zip":
            zip_node = value_node
        elif name.startswith("_") or name in RESERVED_NAMES:
            raise r.error(
                f"'{name}' cannot be set in a sub-grid ({where.rstrip(' >')})",
                key_node,
                name,
                hint=f"a sub-grid holds params and {', '.join(SUBGRID_KEYS)}; "
                "document settings go at the top of the document",
            )
        else:
            axes.append(read_axis(r, name, key_node, value_node, aliases, where, depth))
    zips = read_zip(r, zip_node, axes) if zip_node is not None else ()
    return SubGrid(line_of(node), tuple(axes), zips)


def read_zip(r: Reader, node: Node, axes: list[Axis]) -> tuple[tuple[str, ...], ...]:
    """``_zip: [a, b]`` or ``_zip: [[a, b], [c, d]]``: groups of params paired element by element."""
    hint = "e.g. _zip: [lr, warmup] or _zip: [[lr, warmup], [data, lang]]"
    if not isinstance(node, SequenceNode) or not node.value:
        raise r.error("'_zip' must list the params to pair", node, "_zip", hint=hint)
    nested = isinstance(node.value[0], SequenceNode)
    groups = node.value if nested else [node]
    by_name = {a.key: a for a in axes}
    used: set[str] = set()
    out: list[tuple[str, ...]] = []
    for group in groups:
        if not isinstance(group, SequenceNode) or len(group.value) < 2:
            raise r.error("each '_zip' group pairs at least two params", group, "_zip", hint=hint)
        names: list[str] = []
        for n in group.value:
            p = r.value(n, "_zip", "_zip entry")
            axis = by_name.get(str(p))
            if axis is None:
                guess = did_you_mean(str(p), by_name)
                raise r.error(
                    f"'_zip' names {p!r}, which is not a param here",
                    n,
                    "_zip",
                    hint=(guess + " " if guess else "") + f"params here: {', '.join(by_name) or 'none'}",
                )
            if axis.key in used:
                raise r.error(f"'_zip' names '{axis.key}' twice", n, "_zip", hint=hint)
            if axis.values is None:
                what = "a conditional sub-grid" if axis.branches is not None else "a random distribution"
                raise r.error(
                    f"'_zip' cannot pair '{axis.key}': it is {what}",
                    n,
                    "_zip",
                    hint="pair lists (or ranges, linspaces, ...) of the same length",
                )
            used.add(axis.key)
            names.append(axis.key)
        first = by_name[names[0]]
        for other in names[1:]:
            if by_name[other].size != first.size:
                raise r.error(
                    f"'_zip' pairs '{first.key}' ({_values(first.size)}) with '{other}' "
                    f"({_values(by_name[other].size)}): the lengths must match",
                    group,
                    "_zip",
                    hint="give the zipped params lists of the same length",
                )
        position = {a.key: i for i, a in enumerate(axes)}
        out.append(tuple(sorted(names, key=position.__getitem__)))  # in document order
    return tuple(out)


def _check_choices(
    r: Reader, name: str, values: tuple[Value, ...], nodes: list[Node], aliases: Aliases
) -> None:
    if name not in aliases:
        return
    choices = aliases[name]
    for n, v in zip(nodes, values, strict=True):
        if choice_key(v) not in choices:
            raise r.error(
                f"{v!r} is not a choice of alias '{name}'",
                n,
                name,
                hint=f"valid choices: {', '.join(choices)}",
            )


def _values(n: int) -> str:
    return f"{n} value" if n == 1 else f"{n} values"

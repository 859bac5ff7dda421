"""A grid document of params.yaml: its params and their values, ``_title``, ``_cmd``,
``_gpus``."""

from __future__ import annotations

from collections.abc import Mapping

from yaml.nodes import MappingNode, Node, SequenceNode

from mlrunner.errors import did_you_mean
from mlrunner.spec.model import GRID_KEYS, Grid, choice_key
from mlrunner.spec.reader import Reader, Value, line_of


def read_grid(
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

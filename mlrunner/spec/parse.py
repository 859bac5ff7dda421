"""params.yaml -> a frozen, validated :class:`~mlrunner.spec.model.Spec`: the documents
composed with line numbers, the first read by :mod:`.sections`, every grid by :mod:`.grids`."""

from __future__ import annotations

from pathlib import Path

from yaml.nodes import MappingNode, Node

from mlrunner.errors import SpecError
from mlrunner.spec.durations import read_timeout
from mlrunner.spec.grids import read_grid
from mlrunner.spec.model import TOP_KEYS, ResourceSpec, Spec, choice_key, template_fields
from mlrunner.spec.reader import Reader, compose, is_null, line_of
from mlrunner.spec.sections import (
    read_aliases,
    read_defaults,
    read_env,
    read_notify,
    read_resource,
    read_slurm,
    read_templates,
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
            more = "; grids go in later documents after a `---` line"
            raise r.unknown_key("unknown key in the first document", key_node, name, name, TOP_KEYS, more)
        sections[name] = (key_node, value_node)
    if "template" not in sections:
        raise r.error(
            "the first document has no 'template' (the commands to run)",
            first,
            "template",
            hint="add e.g.\ntemplate:\n    train: python train.py --lr {lr}",
        )
    locations: dict[str, int] = {}
    templates = read_templates(r, sections["template"][1], locations)
    defaults = read_defaults(r, sections["default"][1], locations) if "default" in sections else ()
    aliases = read_aliases(r, sections["alias"][1], locations) if "alias" in sections else ()
    resource = (
        read_resource(r, sections["resource"][1]) if "resource" in sections else ResourceSpec(slots=("0",))
    )
    slurm = read_slurm(r, sections["slurm"][1]) if "slurm" in sections else None
    env = read_env(r, sections["env"][1], "env", locations) if "env" in sections else ()
    commands = tuple(name for name, _ in templates)
    timeouts = read_timeout(r, sections["timeout"][1], commands) if "timeout" in sections else ()
    notify = read_notify(r, sections["notify"][1]) if "notify" in sections else None
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
    default_names = tuple(n for n, _ in defaults)
    grids = tuple(
        read_grid(r, node, i, names, alias_map, default_names)
        for i, node in enumerate(docs[1:], 1)
        if not is_null(node)
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
        env=env,
        timeouts=timeouts,
        notify=notify,
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

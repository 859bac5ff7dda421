"""A :class:`~mlrunner.spec.Spec` -> a :class:`Plan`: tasks, experiment names, rendered commands.

Planning is linear in the number of combinations: every template is split once into a
format string and its fields, rendered values and name pieces are cached per (param, value),
and tasks are deduplicated by the canonical JSON of their resolved params.
Within one plan, two tasks with different params never share a name: the later one gets
``-<8 hex of its params' hash>`` (0.5.9 made them share one directory). Naming is in
:mod:`.names`, rendering in :mod:`.render`, the per-grid tables in :mod:`.grid`.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mlrunner.errors import UsageError, did_you_mean
from mlrunner.plan.grid import Context, GridPlan
from mlrunner.plan.names import fit_name
from mlrunner.plan.render import canonical, json_str
from mlrunner.plan.tasks import Command, Plan, Task
from mlrunner.spec import Grid, Spec


def _select_grids(spec: Spec, title: str | None) -> list[Grid]:
    if title is None:
        return list(spec.grids)
    known = list(dict.fromkeys(g.title for g in spec.grids if g.title is not None))
    chosen = [g for g in spec.grids if g.title == str(title)]
    if not chosen:
        if not known:
            raise UsageError(
                f"unknown title '{title}': no grid in {spec.path} has a _title",
                key="-t/--title",
                hint="add `_title: NAME` to a grid document, or drop -t",
            )
        guess = did_you_mean(str(title), known)
        raise UsageError(
            f"unknown title '{title}'",
            key="-t/--title",
            hint=(guess + " " if guess else "") + f"known titles: {', '.join(known)}",
        )
    return chosen


def _check_commands(commands: Iterable[str] | None, spec: Spec) -> tuple[str, ...] | None:
    if not commands:
        return None
    known = [n for n, _ in spec.templates]
    for c in commands:
        if c not in known:
            guess = did_you_mean(c, known)
            raise UsageError(
                f"unknown command '{c}'",
                key="-c/--command",
                hint=(guess + " " if guess else "") + f"known commands: {', '.join(known)}",
            )
    return tuple(dict.fromkeys(commands))


def _unique(name: str, params_json: str, taken: Mapping[str, Any]) -> str:
    """``name-<hash of the params>``, lengthened (then counted) until no task has it."""
    digest = hashlib.sha256(params_json.encode("utf-8", "surrogatepass")).hexdigest()
    suffixes = itertools.chain(
        (digest[:n] for n in range(8, 65, 8)), (f"{digest}{i}" for i in itertools.count(2))
    )
    return next(c for c in (fit_name(name, s) for s in suffixes) if c not in taken)


def plan(
    spec: Spec,
    *,
    output: str | os.PathLike[str] = "output",
    title: str | None = None,
    commands: Sequence[str] | None = None,
    sample: int | None = None,
    seed: int | str | None = None,
    no_subdir: bool = False,
    time: str,
) -> Plan:
    """Expand the spec's grids into deduplicated, named tasks with rendered commands.

    Order: grids in document order, each in itertools.product order of its keys. The first
    occurrence of a set of resolved params wins; a later one with the same dir name only
    adds the commands the first lacks (0.5.9 ran it as a second task in the same dir).
    """
    output = os.fspath(output)
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 1):
        raise UsageError(f"--sample must be an integer >= 1, not {sample!r}", key="--sample")
    grids = _select_grids(spec, title)
    override = _check_commands(commands, spec)
    ctx = Context(spec)
    all_commands = tuple(ctx.templates)
    prefix = os.path.join(output, "")
    # a proto-task: [name, base name, params json, grid plan, combo, commands]
    protos: list[list[Any]] = []
    by_params: dict[str, int] = {}
    by_name: dict[str, int] = {}
    warnings: list[str] = []
    for grid in grids:
        gp = GridPlan(spec, grid, ctx)
        cmds = override or grid.commands or all_commands
        for c in cmds:
            gp.command(c)  # placeholder errors before any expansion
        for combo in gp.combinations(sample, seed):
            params_json = gp.params_json(combo)
            base = gp.name(combo)
            first = by_params.get(params_json)
            if first is not None:  # the same task again: first occurrence wins
                earlier = protos[first]
                if no_subdir or earlier[1] == base:  # same dir: it may add commands
                    earlier[5].extend(c for c in cmds if c not in earlier[5])
                continue
            name = base
            if name in by_name:
                name = _unique(base, params_json, by_name)
                warnings.append(
                    f"grid {grid.index} (line {grid.line}): '{base}' already names a task with other "
                    f"params (0.5.9 names are not unique); this one is named '{name}'"
                )
            by_params[params_json] = by_name[name] = len(protos)
            protos.append([name, base, params_json, gp, combo, list(cmds)])
    # A task's identity names its dir by the output root's real name, not by how this
    # command line spells the root: `-o output`, `-o ./output`, its absolute path, a symlink
    # to it or a runner in another cwd key the same tasks (and "output/X_1" stays the key
    # a plain `-o output` always gave).
    root = os.path.basename(os.path.realpath(output)) or output
    key_dirs = (root, os.path.join(root, ""))
    return _build(protos, ctx, output if no_subdir else None, prefix, time, warnings, key_dirs)


def _build(
    protos: list[list[Any]],
    ctx: Context,
    shared_dir: str | None,
    prefix: str,
    time: str,
    warnings: list[str],
    key_dirs: tuple[str, str],
) -> Plan:
    # per (grid, command list): commands JSON, (name, format, sources) to render, uses reserved?
    groups: dict[tuple[int, tuple[str, ...]], tuple[str, list[tuple[str, str, Any]], bool]] = {}
    orphans: dict[str, None] = {}
    quoted_time = shlex.quote(time)
    key_shared, key_prefix = key_dirs
    shared_json = None if shared_dir is None else json_str(key_shared)
    tasks = []
    n_commands = 0
    for index, (name, _, params_json, gp, combo, cmd_list) in enumerate(protos):
        cmds = tuple(cmd_list)
        group = groups.get((id(gp), cmds))
        if group is None:
            used = set().union(*(ctx.templates[c].params for c in cmds))
            orphans.update((k, None) for k in gp.resolved_keys if k not in used)
            renders = [(c, *gp.command(c)) for c in cmds]
            group = groups[(id(gp), cmds)] = (
                canonical([[c, ctx.templates[c].text] for c in cmds]),
                renders,
                any(i < 0 for _, _, sources in renders for i, _ in sources),
            )
        cj, renders, uses_reserved = group
        output_dir = shared_dir if shared_dir is not None else prefix + name
        reserved = (
            {"_output": shlex.quote(output_dir), "_name": shlex.quote(name), "_time": quoted_time}
            if uses_reserved
            else {}
        )
        commands = tuple(
            Command(c, fmt.format(*[reserved[s] if i < 0 else s[combo[i]] for i, s in sources]).strip())
            for c, fmt, sources in renders
        )
        n_commands += len(commands)
        key_text = f"[{params_json},{cj},{shared_json or json_str(key_prefix + name)}]"
        tasks.append(
            Task(
                index=index,
                name=name,
                output_dir=output_dir,
                params=gp.params(combo),
                grid_params=gp.grid_params(combo),
                commands=commands,
                key=hashlib.sha256(key_text.encode("utf-8", "surrogatepass")).hexdigest(),
                gpus=gp.gpus,
            )
        )
    return Plan(tasks=tuple(tasks), orphans=tuple(orphans), n_commands=n_commands, warnings=tuple(warnings))

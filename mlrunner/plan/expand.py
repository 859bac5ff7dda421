"""A :class:`~mlrunner.spec.Spec` -> a :class:`Plan`: tasks, experiment names, rendered commands.

Planning is linear in the number of combinations: every template is split once into a
format string and its fields, rendered values and name pieces are cached per (param, value),
and tasks are deduplicated by the canonical JSON of their resolved params.
Within one plan, two tasks with different params never share a name: the later one gets
``-<8 hex of its params' hash>`` (0.5.9 made them share one directory). Naming is in
:mod:`.names`, rendering in :mod:`.render`, the per-grid tables in :mod:`.grid`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import random
import shlex
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from mlrunner.errors import UsageError, did_you_mean
from mlrunner.plan.checks import check_orphans, identical_warning
from mlrunner.plan.grammar import Excluder, check_size, expand
from mlrunner.plan.grid import ENV_FIELD_RE, Context, GridPlan
from mlrunner.plan.names import fit_name
from mlrunner.plan.render import canonical, json_str
from mlrunner.plan.tasks import Command, Plan, Task
from mlrunner.spec import ORDERS, Grid, Spec

MAX_TASKS = 1_000_000  # a sweep bigger than this is refused unless run --max-tasks raises it


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
    order: str | None = None,
    max_tasks: int = MAX_TASKS,
    allow_orphans: bool = False,
) -> Plan:
    """Expand the spec's grids into deduplicated, named tasks with rendered commands.

    Order: grids in document order, each in itertools.product order of its params (a zipped
    group at its first param's place; ``_order: shuffle`` or ``order="shuffle"``: a seeded
    shuffle). The first occurrence of a set of resolved params wins; a later one with the
    same dir name only adds the commands the first lacks (0.5.9 ran it as a second task in
    the same dir). ``seed`` drives every random draw (``_samples``, shuffles, ``sample``);
    None: one is chosen (``Plan.seed``). More than ``max_tasks`` tasks: a SpecError, raised
    before anything is expanded.
    """
    output = os.fspath(output)
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 1):
        raise UsageError(f"--sample must be an integer >= 1, not {sample!r}", key="--sample")
    if isinstance(max_tasks, bool) or not isinstance(max_tasks, int) or max_tasks < 1:
        raise UsageError(f"--max-tasks must be an integer >= 1, not {max_tasks!r}", key="--max-tasks")
    if order not in (None, *ORDERS):
        raise UsageError(f"unknown order {order!r}", key="--order", hint=f"use one of {', '.join(ORDERS)}")
    grids = _select_grids(spec, title)
    override = _check_commands(commands, spec)
    check_size(spec, grids, sample, max_tasks)
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    ctx = Context(spec)
    all_commands = tuple(ctx.templates)
    prefix = os.path.join(output, "")
    # a proto-task: [name, base name, params json, grid plan, combo, commands]
    protos: list[list[Any]] = []
    by_params: dict[str, int] = {}
    by_name: dict[str, int] = {}
    warnings: list[str] = []
    drew = False
    fill = {**ctx.defaults, **spec.default_map}  # what _exclude sees for a param no column sets
    for grid in grids:
        excluded = Excluder(grid, ctx.aliases, fill) if grid.exclude else None
        doc = expand(spec, grid, excluded, seed=seed, sample=sample, order=order)
        drew = drew or doc.drew
        gps = [GridPlan(spec, grid, ctx, block) for block in doc.blocks]
        cmds = override or grid.commands or all_commands
        for gp in gps:
            for c in cmds:
                gp.command(c)  # placeholder errors before any expansion
        for b, combo in doc.rows:
            gp = gps[b]
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
    built = _build(protos, ctx, output if no_subdir else None, prefix, time, warnings, key_dirs)
    warnings.extend(check_orphans(spec, grids, built.orphans, _used(spec, grids, ctx), allow_orphans))
    return dataclasses.replace(built, warnings=tuple(warnings), seed=seed, drew=drew)


def _used(spec: Spec, grids: Sequence[Grid], ctx: Context) -> set[str]:
    """Every param a command template or an environment value names."""
    used: set[str] = set().union(*(t.params for t in ctx.templates.values()))
    for _, text in (*spec.env, *(e for g in grids for e in g.env)):
        used.update(m[1] for m in ENV_FIELD_RE.finditer(text))
    return used


_MARK_OUTPUT, _MARK_NAME = "\x00O\x00", "\x00N\x00"  # no param value holds a NUL


def _build(
    protos: list[list[Any]],
    ctx: Context,
    shared_dir: str | None,
    prefix: str,
    time: str,
    warnings: list[str],
    key_dirs: tuple[str, str],
) -> Plan:
    # per (grid, command list): commands JSON, (name, format, sources) to render, uses reserved?, env
    groups: dict[tuple[int, tuple[str, ...]], tuple[str, list[tuple[str, str, Any]], bool, Any]] = {}
    orphans: dict[str, None] = {}
    unused: set[str] = set()
    marks = {"_output": _MARK_OUTPUT, "_name": _MARK_NAME, "_time": shlex.quote(time)}
    key_shared, key_prefix = key_dirs
    shared_json = None if shared_dir is None else json_str(key_shared)
    tasks = []
    n_commands = 0
    seen: dict[str, int] = {}  # commands (_output, _name marked), env -> first task
    same: list[tuple[int, int]] = []  # (earlier task, a task that runs its commands)
    for index, (name, _, params_json, gp, combo, cmd_list) in enumerate(protos):
        cmds = tuple(cmd_list)
        group = groups.get((id(gp), cmds))
        if group is None:
            used = set().union(*(ctx.templates[c].params for c in cmds))
            env_items = tuple({**dict(gp.spec.env), **dict(gp.grid.env)}.items())
            used.update(m[1] for _, text in env_items for m in ENV_FIELD_RE.finditer(text))
            env = _Env(gp.env(env_items), cmds)
            orphans.update((k, None) for k in gp.resolved_keys if k not in used)
            unused.update(k for k in gp.resolved_keys if k not in used)
            renders = [(c, *gp.command(c)) for c in cmds]
            group = groups[(id(gp), cmds)] = (
                canonical([[c, ctx.templates[c].text] for c in cmds]),
                renders,
                any(i < 0 for _, _, sources in renders for i, _ in sources),
                env,
            )
        cj, renders, uses_reserved, env = group
        output_dir = shared_dir if shared_dir is not None else prefix + name
        # the commands with {_output} and {_name} marked: equal texts run the same thing
        texts = [
            fmt.format(*[marks[s] if i < 0 else s[combo[i]] for i, s in sources]).strip()
            for _, fmt, sources in renders
        ]
        task_env = env.constant
        if task_env is None:
            task_env = env.render(combo, {"_output": output_dir, "_name": name, "_time": time})
            signature = "\x01".join([env.prefix, *texts, *env.signature(task_env)])
        else:  # a str, not a tuple: nothing more for the garbage collector to scan
            signature = "\x01".join([env.prefix, *texts])
        first = seen.setdefault(signature, index)
        if first != index:
            same.append((first, index))
        if uses_reserved:
            out, nm = shlex.quote(output_dir), shlex.quote(name)
            texts = [t.replace(_MARK_OUTPUT, out).replace(_MARK_NAME, nm) for t in texts]
        commands = tuple([Command(c, t) for c, t in zip(cmds, texts, strict=True)])
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
                env=task_env,
            )
        )
    if same:
        a, b = (tasks[i] for i in same[0])
        warnings.append(identical_warning(len(same), (a.name, a.params), (b.name, b.params), unused))
    return Plan(tasks=tuple(tasks), orphans=tuple(orphans), n_commands=n_commands, warnings=tuple(warnings))


class _Env:
    """A group's environment variables: rendered once when no value depends on the task."""

    NONE: Mapping[str, str] = MappingProxyType({})

    def __init__(
        self, renders: list[tuple[str, str, list[tuple[int, Any]]]], commands: tuple[str, ...]
    ) -> None:
        self.renders = renders
        self.constant: Mapping[str, str] | None = None
        # what starts the signature of a task of this group: its commands, a constant environment
        self.prefix = "\x02".join(commands)
        if not any(sources for _, _, sources in renders):
            constant = {n: fmt.format() for n, fmt, _ in renders}
            self.constant = MappingProxyType(constant) if renders else self.NONE
            self.prefix = "\x01".join([self.prefix, *self.signature(self.constant)])

    def render(self, combo: tuple[int, ...], reserved: Mapping[str, str]) -> Mapping[str, str]:
        if self.constant is not None:
            return self.constant
        return {
            n: fmt.format(*[reserved[s] if i < 0 else s[combo[i]] for i, s in sources])
            for n, fmt, sources in self.renders
        }

    def signature(self, env: Mapping[str, str]) -> tuple[str, ...]:
        """The environment, for telling apart tasks with the same commands (mostly empty)."""
        return () if env is self.NONE else tuple(f"{k}={v}" for k, v in env.items())

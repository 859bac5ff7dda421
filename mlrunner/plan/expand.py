"""A :class:`~mlrunner.spec.model.Spec` -> a :class:`Plan`: tasks, experiment names, rendered commands.

Planning is linear in the number of combinations: every template is split once into a
format string and its fields, rendered values and name pieces are cached per (param, value),
and tasks are deduplicated by the canonical JSON of their resolved params.

Names are mlrunner 0.5.9's (``Norm_new-Moment_0.1``), made safe: a name that 0.5.9 would
produce and that is a safe single path component (no ``/``, no control or line-break
character, no leading ``.``, at most 255 UTF-8 bytes) is kept as is; any other name is
sanitised and gets ``-<16 hex of sha256(0.5.9 name)>``, so distinct 0.5.9 names stay
distinct. Within one plan, two tasks with different params never share a name: the later
one gets ``-<8 hex of its params' hash>`` (0.5.9 made them share one directory).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlrunner.errors import SpecError, UsageError, did_you_mean
from mlrunner.spec import (
    PLACEHOLDER_RE,
    RESERVED_PARAMS,
    Grid,
    Spec,
    Value,
    choice_key,
    template_fields,
)

MAX_NAME_BYTES = 255
MAX_LOG_NAME_BYTES = 240
EMPTY_NAME = "default"  # a grid that sets no param (0.5.9 used the output root itself)
_NAME_MAXLEN = 100  # 0.5.9's str_maxlen: a string value keeps its last 100 characters
_UNSAFE_RE = re.compile("[/\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SHELL_KEYWORDS = frozenset(
    {"if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac", "select",
     "function", "time", "coproc", "!", "[[", "{", "}"}
)  # fmt: skip


@dataclass(frozen=True)
class Command:
    name: str
    text: str  # rendered shell text: no env prefix, no redirect


@dataclass(frozen=True)
class Task:
    index: int  # 0-based position in plan order
    name: str  # experiment dir name (0.5.9 naming + safety)
    output_dir: str  # os.path.join(output, name), or output with --no-subdir
    params: dict  # resolved: grid values after alias, then defaults; JSON-able
    grid_params: dict  # only what the grid document wrote (shapes the name)
    commands: tuple[Command, ...]
    key: str  # sha256 hex of (resolved params, command names + templates, output_dir)
    gpus: int = 1  # from the grid's _gpus


@dataclass(frozen=True)
class Plan:
    tasks: tuple[Task, ...]
    orphans: tuple[str, ...]
    n_commands: int
    warnings: tuple[str, ...] = ()  # e.g. a task renamed because its name was taken


# --------------------------------------------------------------------------- naming
def _camel(key: str) -> str:
    """0.5.9's key style: split on '-' (else '_'), all but the last part cut to 2 letters."""
    parts = key.split("-")
    if len(parts) == 1:
        parts = parts[0].split("_")
    return "".join(p[:2].title() if len(p) > 2 else p for p in parts[:-1]) + parts[-1].title()


def _value_text(value: Value) -> str:
    if isinstance(value, str):
        if os.path.exists(value):
            text = os.path.basename(value)
        else:
            text = value.lstrip("/.").replace("/", "_")
        return text[-_NAME_MAXLEN:] if len(text) > _NAME_MAXLEN else text
    if isinstance(value, bool):
        return "T" if value else "F"
    try:
        return f"{value:g}"
    except OverflowError:  # an int too large for a float (0.5.9 crashes)
        return str(value)


def _entry(key: str, value: Value) -> str:
    return f"{_camel(key)}_{_value_text(value)}"


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def _with_suffix(base: str, suffix: str, limit: int = MAX_NAME_BYTES) -> str:
    """``base-suffix``, ``base`` cut (at a character boundary) so the whole fits ``limit`` bytes."""
    room = limit - len(suffix.encode()) - 1
    prefix = base.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
    return f"{prefix}-{suffix}"


def safe_name(raw: str) -> str:
    """A 0.5.9 name made into one safe path component (kept unchanged when it already is one)."""
    if not raw:
        return EMPTY_NAME
    if raw[0] != "." and _UNSAFE_RE.search(raw) is None and len(raw.encode("utf-8", "surrogatepass")) <= 255:
        return raw
    cleaned = _UNSAFE_RE.sub("_", raw)
    if cleaned.startswith("."):
        cleaned = "_" + cleaned[1:]
    return _with_suffix(cleaned, _digest(raw, 16))


def legacy_name(grid_params: Mapping[str, Value]) -> str:
    """0.5.9's ``spec2name``: what mlrunner 0.5.9 called this experiment (possibly unsafe)."""
    return "-".join(_entry(k, v) for k, v in grid_params.items())


def experiment_name(grid_params: Mapping[str, Value]) -> str:
    """The experiment dir name of one grid combination (document order of the grid's keys)."""
    return safe_name(legacy_name(grid_params))


def log_name(command: str, time: str, name: str | None = None) -> str:
    """``log.<cmd>.<time>``; with --no-subdir ``.<experiment name>`` is appended, and a log name
    over 240 bytes (room for a retry's ``.2``) is cut with a stable hash suffix."""
    base = f"log.{command}.{time}"
    if name is None:
        return base
    full = f"{base}.{name}"
    if len(full.encode("utf-8", "surrogatepass")) <= MAX_LOG_NAME_BYTES:
        return full
    return _with_suffix(full, _digest(name, 16), MAX_LOG_NAME_BYTES)


# --------------------------------------------------------------------------- shell
_PLAIN_WORDS = re.compile(r"[\w@%+=:,./\- ]+")


def _is_simple(text: str) -> bool:
    """True when ``ENV=x <text> > log 2>&1`` means the same as running text in bash with ENV set."""
    if _PLAIN_WORDS.fullmatch(text):  # the common case, without the cost of shlex
        first = text.split(None, 1)[0] if text.strip() else ""
        return bool(first) and first not in _SHELL_KEYWORDS
    if any(c in text for c in "`#$\n\\"):
        return False
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:
        return False
    if not tokens or tokens[0] in _SHELL_KEYWORDS:
        return False
    return not any(t and set(t) <= set("();<>|&") for t in tokens)


def shell_line(command: Command, resource: str, log_path: str | os.PathLike[str]) -> str:
    """A copy-pasteable line that runs ``command`` as a worker does (for the param file's _scripts)."""
    env = f"CUDA_VISIBLE_DEVICES={shlex.quote(resource)}"
    log = shlex.quote(os.fspath(log_path))
    if _is_simple(command.text):
        return f"{env} {command.text} > {log} 2>&1"
    return f"{env} bash -c {shlex.quote(command.text)} > {log} 2>&1"


# --------------------------------------------------------------------------- rendering
def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


class _Template:
    """A template split once into literal pieces and its fields."""

    __slots__ = ("name", "text", "pieces", "fields", "params")

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        pieces, pos = [], 0
        for m in PLACEHOLDER_RE.finditer(text):
            pieces.append(text[pos : m.start()])
            pos = m.end()
        pieces.append(text[pos:])
        self.pieces = tuple(pieces)
        self.fields = tuple(template_fields(text))
        self.params = frozenset(p for _, p in self.fields)


def render_field(kind: str, param: str, value: Value) -> str:
    """``{p}`` -> the shell-quoted value; ``[p]`` -> ``--p value``, ``--p`` (True) or '' (False).

    Raises ValueError for a bool in ``{p}`` (the caller words the SpecError)."""
    if isinstance(value, bool):
        if kind == "{":
            raise ValueError(param)
        return f"--{param}" if value else ""
    if kind == "{":
        return shlex.quote(str(value))
    return f"--{param} {shlex.quote(str(value))}"


def _frag(key: str, value: Value) -> str:
    """``"key":value`` as in the canonical JSON of a params dict."""
    return f"{_canonical(key)}:{_canonical(value)}"


_json_str = json.encoder.encode_basestring  # a str as a JSON string literal (non-ASCII kept)


def _canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class _GridPlan:
    """Everything about one grid that does not change from one combination to the next.

    A combination is a tuple of value *indices*, one per grid param; every per-task piece
    (name part, params, JSON fragment, rendered field) is a table lookup.
    """

    def __init__(self, spec: Spec, grid: Grid, ctx: _Context) -> None:
        self.spec, self.grid, self.ctx = spec, grid, ctx
        self.gpus = grid.gpus or 1
        self.keys = [k for k, _ in grid.params]
        self.values = [v for _, v in grid.params]
        self.pairs: list[list[tuple[tuple[str, Value], ...]]] = []  # [position][value index]
        self.provider: dict[str, int] = {}  # resolved param -> position of the grid param setting it
        self.pieces: list[list[str]] = []  # [position][value index] -> name part
        for i, (k, values) in enumerate(grid.params):
            if k in ctx.aliases:
                choices = ctx.aliases[k]
                self.pairs.append([tuple(choices[choice_key(v)].items()) for v in values])
            else:
                self.pairs.append([((k, v),) for v in values])
            for target, _ in self.pairs[i][0]:
                self.provider[target] = i
            self.pieces.append([ctx.entry(k, v) for v in values])
        self.fill = [(k, v) for k, v in ctx.defaults.items() if k not in self.provider]
        fill_map = dict(self.fill)
        self.resolved_keys = [*self.provider, *fill_map]
        self.json_slots: list[tuple[int, Any]] = []
        for key in sorted(self.resolved_keys):
            if key in self.provider:
                i = self.provider[key]
                self.json_slots.append((i, [_frag(key, dict(p)[key]) for p in self.pairs[i]]))
            else:
                self.json_slots.append((-1, _frag(key, fill_map[key])))
        self.fill_map = fill_map
        self._commands: dict[str, tuple[str, list[tuple[int, Any]]]] = {}

    def combinations(self, sample: int | None, seed: int | str | None) -> Iterable[tuple[int, ...]]:
        sizes = [len(v) for v in self.values]
        if sample is None:
            return itertools.product(*(range(n) for n in sizes))
        total = math.prod(sizes)
        material = f"mlrunner-sample\x00{seed}\x00{self.grid.params!r}"
        rng = random.Random(None if seed is None else material)
        chosen = sorted(rng.sample(range(total), min(sample, total)))

        def nth(i: int) -> tuple[int, ...]:
            combo = []
            for n in reversed(sizes):
                i, r = divmod(i, n)
                combo.append(r)
            return tuple(reversed(combo))

        return (nth(i) for i in chosen)

    def params(self, combo: tuple[int, ...]) -> dict[str, Value]:
        params: dict[str, Value] = {}
        for i, vi in enumerate(combo):
            params.update(self.pairs[i][vi])
        params.update(self.fill)
        return params

    def params_json(self, combo: tuple[int, ...]) -> str:
        return "{" + ",".join([s if i < 0 else s[combo[i]] for i, s in self.json_slots]) + "}"

    def name(self, combo: tuple[int, ...]) -> str:
        return safe_name("-".join([self.pieces[i][vi] for i, vi in enumerate(combo)]))

    def grid_params(self, combo: tuple[int, ...]) -> dict[str, Value]:
        return {k: self.values[i][vi] for i, (k, vi) in enumerate(zip(self.keys, combo, strict=True))}

    def command(self, name: str) -> tuple[str, list[tuple[int, Any]]]:
        """(format string, sources) of a command for this grid; values the grid does not vary are
        rendered into the format string once. A source is (-1, reserved name) or (position, table)."""
        cached = self._commands.get(name)
        if cached is not None:
            return cached
        t = self.ctx.templates[name]
        fmt = [_escape(t.pieces[0])]
        sources: list[tuple[int, Any]] = []
        for (kind, p), literal in zip(t.fields, t.pieces[1:], strict=True):
            if p in RESERVED_PARAMS:
                fmt.append("{}")
                sources.append((-1, p))
            elif p in self.provider:
                i = self.provider[p]
                fmt.append("{}")
                sources.append((i, [self._field(name, kind, p, dict(pairs)[p]) for pairs in self.pairs[i]]))
            elif p in self.fill_map:
                fmt.append(_escape(self._field(name, kind, p, self.fill_map[p])))
            else:
                shown = f"{{{p}}}" if kind == "{" else f"[{p}]"
                raise SpecError(
                    f"command '{name}' uses {shown} but '{p}' has no value (grid {self.grid.index}, "
                    f"line {self.grid.line}, does not set it and there is no default)",
                    file=self.spec.path,
                    line=self.spec.locations.get(f"template.{name}"),
                    key=f"template.{name}",
                    hint=f"add `{p}: <value>` under `default:` or to the grid",
                )
            fmt.append(_escape(literal))
        out = self._commands[name] = ("".join(fmt), sources)
        return out

    def _field(self, command: str, kind: str, param: str, value: Value) -> str:
        try:
            return self.ctx.field(kind, param, value)
        except ValueError:
            raise SpecError(
                f"command '{command}' uses {{{param}}} but '{param}' is a boolean ({value})",
                file=self.spec.path,
                line=self.spec.locations.get(f"template.{command}"),
                key=f"template.{command}",
                hint=f"write [{param}] (True -> --{param}, False -> nothing), "
                f"or quote the value in params.yaml ('{value}') to pass it as text",
            ) from None


class _Context:
    """Caches shared by all grids of one plan."""

    def __init__(self, spec: Spec) -> None:
        self.templates = {name: _Template(name, text) for name, text in spec.templates}
        self.aliases = spec.alias_map
        self.defaults = _defaults(spec)
        self._entries: dict[tuple[Any, ...], str] = {}
        self._fields: dict[tuple[Any, ...], str] = {}

    def entry(self, key: str, value: Value) -> str:
        ck = (key, value.__class__, value)
        hit = self._entries.get(ck)
        if hit is None:
            hit = self._entries[ck] = _entry(key, value)
        return hit

    def field(self, kind: str, param: str, value: Value) -> str:
        ck = (kind, param, value.__class__, value)
        hit = self._fields.get(ck)
        if hit is None:
            hit = self._fields[ck] = render_field(kind, param, value)
        return hit


# --------------------------------------------------------------------------- planning
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


def _defaults(spec: Spec) -> dict[str, Value]:
    """Defaults with alias entries expanded (an explicit default beats a default alias's)."""
    aliases = spec.alias_map
    out = {k: v for k, v in spec.defaults if k not in aliases}
    for k, v in spec.defaults:
        if k in aliases:
            for target, tv in aliases[k][choice_key(v)].items():
                out.setdefault(target, tv)
    return out


def _unique(name: str, params_json: str, taken: Mapping[str, Any]) -> str:
    """``name-<hash of the params>``, lengthened (then counted) until no task has it."""
    digest = hashlib.sha256(params_json.encode("utf-8", "surrogatepass")).hexdigest()
    suffixes = itertools.chain(
        (digest[:n] for n in range(8, 65, 8)), (f"{digest}{i}" for i in itertools.count(2))
    )
    return next(c for c in (_with_suffix(name, s) for s in suffixes) if c not in taken)


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
    ctx = _Context(spec)
    all_commands = tuple(ctx.templates)
    prefix = os.path.join(output, "")
    # a proto-task: [name, base name, params json, grid plan, combo, commands]
    protos: list[list[Any]] = []
    by_params: dict[str, int] = {}
    by_name: dict[str, int] = {}
    warnings: list[str] = []
    for grid in grids:
        gp = _GridPlan(spec, grid, ctx)
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
    return _build(protos, ctx, output if no_subdir else None, prefix, time, warnings)


def _build(
    protos: list[list[Any]],
    ctx: _Context,
    shared_dir: str | None,
    prefix: str,
    time: str,
    warnings: list[str],
) -> Plan:
    # per (grid, command list): commands JSON, (name, format, sources) to render, uses reserved?
    groups: dict[tuple[int, tuple[str, ...]], tuple[str, list[tuple[str, str, Any]], bool]] = {}
    orphans: dict[str, None] = {}
    quoted_time = shlex.quote(time)
    shared_json = None if shared_dir is None else _json_str(shared_dir)
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
                _canonical([[c, ctx.templates[c].text] for c in cmds]),
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
        key_text = f"[{params_json},{cj},{shared_json or _json_str(output_dir)}]"
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

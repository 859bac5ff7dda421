"""Per-block and per-plan caches: every per-task piece of a plan is a table lookup."""

from __future__ import annotations

import re
from typing import Any

from mlrunner.errors import SpecError
from mlrunner.plan.checks import close_match
from mlrunner.plan.grammar import Block
from mlrunner.plan.names import entry, safe_name
from mlrunner.plan.render import Template, escape, frag, render_field
from mlrunner.spec import ATTEMPT_TEXT, RESERVED_PARAMS, Grid, Spec, Value, choice_key

ENV_FIELD_RE = re.compile(r"\{([\w-]+)\}")  # env values take {p} only ([p] is a command's --p)


class GridPlan:
    """Everything about one block of a grid (one shape of its written params, see
    :mod:`.grammar`) that does not change from one combination to the next.

    A combination is a tuple of value *indices*, one per written param; every per-task
    piece (name part, params, JSON fragment, rendered field) is a table lookup.
    """

    def __init__(self, spec: Spec, grid: Grid, ctx: Context, block: Block) -> None:
        self.spec, self.grid, self.ctx = spec, grid, ctx
        self.gpus = grid.gpus or 1
        self.keys = list(block.keys)
        self.values = block.values
        self.pairs: list[list[tuple[tuple[str, Value], ...]]] = []  # [position][value index]
        self.provider: dict[str, int] = {}  # resolved param -> position of the grid param setting it
        self.pieces: list[list[str]] = []  # [position][value index] -> name part
        for i, (k, values) in enumerate(zip(block.keys, block.values, strict=True)):
            if k in ctx.aliases:
                choices = ctx.aliases[k]
                self.pairs.append([tuple(choices[choice_key(v)].items()) for v in values])
            else:
                self.pairs.append([((k, v),) for v in values])
            for target in ctx.aliases[k][choice_key(values[0])] if k in ctx.aliases else (k,):
                if target in self.provider:  # an alias in a sub-grid sets a param set above it
                    raise SpecError(
                        f"'{target}' is set both by '{self.keys[self.provider[target]]}' and by '{k}' "
                        f"for the same tasks (grid {grid.index}, line {grid.line})",
                        file=spec.path,
                        line=grid.line,
                        key=target,
                        hint="set each param once on the way to a task",
                    )
                self.provider[target] = i
            self.pieces.append([ctx.entry(k, v) for v in values])
        self.fill = [(k, v) for k, v in ctx.defaults.items() if k not in self.provider]
        fill_map = dict(self.fill)
        self.resolved_keys = [*self.provider, *fill_map]
        self.json_slots: list[tuple[int, Any]] = []
        for key in sorted(self.resolved_keys):
            if key in self.provider:
                i = self.provider[key]
                self.json_slots.append((i, [frag(key, dict(p)[key]) for p in self.pairs[i]]))
            else:
                self.json_slots.append((-1, frag(key, fill_map[key])))
        self.fill_map = fill_map
        self._commands: dict[str, tuple[str, list[tuple[int, Any]]]] = {}

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
        fmt = [escape(t.pieces[0])]
        sources: list[tuple[int, Any]] = []
        for (kind, p), literal in zip(t.fields, t.pieces[1:], strict=True):
            if p == "_attempt":  # the same text for every task: bash expands it at each attempt
                fmt.append(escape(ATTEMPT_TEXT))
            elif p in RESERVED_PARAMS:
                fmt.append("{}")
                sources.append((-1, p))
            elif p in self.provider:
                i = self.provider[p]
                fmt.append("{}")
                sources.append((i, [self._field(name, kind, p, dict(pairs)[p]) for pairs in self.pairs[i]]))
            elif p in self.fill_map:
                fmt.append(escape(self._field(name, kind, p, self.fill_map[p])))
            else:
                shown = f"{{{p}}}" if kind == "{" else f"[{p}]"
                guess = close_match(p, [*self.provider, *self.fill_map])
                raise SpecError(
                    f"command '{name}' uses {shown} but '{p}' has no value (grid {self.grid.index}, "
                    f"line {self.grid.line}, does not set it and there is no default)",
                    file=self.spec.path,
                    line=self.spec.locations.get(f"template.{name}"),
                    key=f"template.{name}",
                    hint=(f"did you mean '{guess}', which the grid sets? " if guess else "")
                    + f"add `{p}: <value>` under `default:` or to the grid",
                )
            fmt.append(escape(literal))
        out = self._commands[name] = ("".join(fmt), sources)
        return out

    def env(self, env: tuple[tuple[str, str], ...]) -> list[tuple[str, str, list[tuple[int, Any]]]]:
        """(name, format string, sources) of each environment variable, as :meth:`command`;
        ``{p}`` becomes the value as text (not shell-quoted: it is no shell text)."""
        out = []
        for name, text in env:
            where = f"_env.{name}" if name in dict(self.grid.env) else f"env.{name}"
            line = (self.grid.locations if where[0] == "_" else self.spec.locations).get(where)
            fmt, sources, pos = [], [], 0
            for m in ENV_FIELD_RE.finditer(text):
                fmt.append(escape(text[pos : m.start()]))
                pos, p = m.end(), m[1]
                if p in RESERVED_PARAMS and p != "_attempt":
                    fmt.append("{}")
                    sources.append((-1, p))
                elif p in self.provider:
                    i = self.provider[p]
                    texts = [self._env_text(name, p, dict(pairs)[p], where, line) for pairs in self.pairs[i]]
                    fmt.append("{}")
                    sources.append((i, texts))
                elif p in self.fill_map:
                    fmt.append(escape(self._env_text(name, p, self.fill_map[p], where, line)))
                else:
                    attempt = p == "_attempt"
                    raise SpecError(
                        f"environment variable {name} uses {{{p}}} but '{p}' "
                        + ("is known only when a command starts" if attempt else "has no value")
                        + f" (grid {self.grid.index}, line {self.grid.line})",
                        file=self.spec.path,
                        line=line,
                        key=where,
                        hint="commands see it as $MLRUNNER_ATTEMPT"
                        if attempt
                        else f"add `{p}: <value>` under `default:` or to the grid",
                    )
            fmt.append(escape(text[pos:]))
            out.append((name, "".join(fmt), sources))
        return out

    def _env_text(self, name: str, param: str, value: Value, where: str, line: int | None) -> str:
        if isinstance(value, bool):
            raise SpecError(
                f"environment variable {name} uses {{{param}}} but '{param}' is a boolean ({value})",
                file=self.spec.path,
                line=line,
                key=where,
                hint=f"quote the value in params.yaml ('{value}') to pass it as text",
            )
        return str(value)

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


class Context:
    """Caches shared by all grids of one plan."""

    def __init__(self, spec: Spec) -> None:
        self.templates = {name: Template(name, text) for name, text in spec.templates}
        self.aliases = spec.alias_map
        self.defaults = _defaults(spec)
        self._entries: dict[tuple[Any, ...], str] = {}
        self._fields: dict[tuple[Any, ...], str] = {}

    def entry(self, key: str, value: Value) -> str:
        ck = (key, value.__class__, value)
        hit = self._entries.get(ck)
        if hit is None:
            hit = self._entries[ck] = entry(key, value)
        return hit

    def field(self, kind: str, param: str, value: Value) -> str:
        ck = (kind, param, value.__class__, value)
        hit = self._fields.get(ck)
        if hit is None:
            hit = self._fields[ck] = render_field(kind, param, value)
        return hit


def _defaults(spec: Spec) -> dict[str, Value]:
    """Defaults with alias entries expanded (an explicit default beats a default alias's)."""
    aliases = spec.alias_map
    out = {k: v for k, v in spec.defaults if k not in aliases}
    for k, v in spec.defaults:
        if k in aliases:
            for target, tv in aliases[k][choice_key(v)].items():
                out.setdefault(target, tv)
    return out

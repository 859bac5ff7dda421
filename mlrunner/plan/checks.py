"""What a plan says about a sweep that looks mistyped (issue 13, item 14): an orphan param
that resembles a param a command uses (``lr`` vs ``[learning-rate]``), and tasks that would
run identical commands (a swept param no command reads); and ``run --only``'s selection of
tasks by name."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence

from mlrunner.errors import SpecError, UsageError, did_you_mean
from mlrunner.plan.tasks import Task
from mlrunner.spec import RESERVED_PARAMS, Grid, Spec, Value

_SEPARATORS = re.compile(r"[-_]+")


def _initials(word: str) -> str | None:
    parts = [p for p in _SEPARATORS.split(word.lower()) if p]
    return "".join(p[0] for p in parts) if len(parts) > 1 else None


def close_match(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``word`` is most likely a mistyping of: the same letters but for case,
    '-' and '_' (``learning_rate``); the initials (``lr`` for ``learning-rate``); or a close
    spelling (``n-embd`` for ``n-embed``). None when nothing is that close."""
    names = sorted(c for c in candidates if c != word and c not in RESERVED_PARAMS)
    plain = _SEPARATORS.sub("", word.lower())
    for c in names:
        if _SEPARATORS.sub("", c.lower()) == plain:
            return c
    for c in names:
        if len(word) >= 2 and (_initials(c) == word.lower() or _initials(word) == c.lower()):
            return c
    found = difflib.get_close_matches(word, names, n=1, cutoff=0.8)
    return found[0] if found else None


def where_set(spec: Spec, grids: Sequence[Grid], param: str) -> tuple[int | None, str]:
    """(line, key) of where ``param`` gets its value: a grid param, a default, an alias."""
    for grid in grids:
        for axis in _walk(grid):
            if axis[0] == param:
                return axis[1], param
        if any(param == k for entry in grid.include for k, _ in entry):
            return grid.locations.get("_include"), "_include"
    if f"default.{param}" in spec.locations:
        return spec.locations[f"default.{param}"], f"default.{param}"
    for alias, choices in spec.aliases:
        if any(param == p for p, _ in choices[0][1]):
            return spec.locations.get(f"alias.{alias}"), f"alias.{alias}"
    return None, param


def _walk(grid: Grid) -> Iterable[tuple[str, int]]:
    stack = list(reversed(grid.axes))
    while stack:
        axis = stack.pop()
        yield axis.key, axis.line
        for _, sub in reversed(axis.branches or ()):
            stack.extend(reversed(sub.axes))


def check_orphans(
    spec: Spec, grids: Sequence[Grid], orphans: Iterable[str], used: Iterable[str], allow: bool
) -> list[str]:
    """SpecError for the first orphan that resembles a used param (warnings when ``allow``)."""
    used = set(used)
    warnings = []
    for orphan in orphans:
        match = close_match(orphan, used)
        if match is None:
            continue
        message = f"'{orphan}' is used by no command; did you mean '{match}'?"
        if allow:
            warnings.append(message + " (allowed by --allow-orphans)")
            continue
        line, key = where_set(spec, grids, orphan)
        raise SpecError(
            message,
            file=spec.path,
            line=line,
            key=key,
            hint=f"rename it to '{match}' (the name the commands use), or run with --allow-orphans "
            "if it is meant to be set without reaching a command",
        )
    return warnings


def identical_warning(
    count: int,
    first: tuple[str, Mapping[str, Value]],
    second: tuple[str, Mapping[str, Value]],
    unused: set[str],
) -> str:
    """The warning for ``count`` tasks that run the same commands as an earlier task."""
    (a, pa), (b, pb) = first, second
    differ = sorted(k for k in pa.keys() | pb.keys() if pa.get(k, _MISSING) != pb.get(k, _MISSING))
    why = ", ".join(k + (" (used by no command)" if k in unused else " (rendered alike)") for k in differ)
    return (
        f"{count} task{'s' if count > 1 else ''} would run exactly the commands of an earlier task "
        f"(apart from {{_output}}/{{_name}}): '{b}' runs what '{a}' runs; their params differ only in "
        f"{why}. Check the param names against the command templates."
    )


_MISSING = object()


def only_tasks(tasks: Sequence[Task], names: Sequence[str]) -> list[Task]:
    """The tasks named in ``names`` (``run --only``: experiment names, as their dirs are
    named), in run order. UsageError for a name no task has, with the closest one."""
    wanted = set(names)
    known = {t.name for t in tasks}
    for name in names:
        if name not in known:
            guess = did_you_mean(name, known)
            raise UsageError(
                f"no experiment named {name!r} in this sweep",
                key="--only",
                hint=(guess + " " if guess else "")
                + "--only takes experiment names, as their dirs are named (`run --dry-run` lists "
                "them; `mlrunner failures` prints the --only arguments of failed ones)",
            )
    return [t for t in tasks if t.name in wanted]

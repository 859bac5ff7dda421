"""Durations (``90s``, ``10m``, ``6h``, ``1d``, ``1h30m`` or seconds as a number) and the
``timeout:`` section of params.yaml: one duration for every command, or command -> duration."""

from __future__ import annotations

import math
import re

from yaml.nodes import MappingNode, Node

from mlrunner.errors import did_you_mean
from mlrunner.spec.reader import Reader, is_null

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
DURATION_HINT = "write a duration as 90s, 10m, 6h, 1d, 1h30m, or seconds as a number"
ALL_COMMANDS = "*"  # the key of a timeout that applies to every command


def parse_duration(value: object) -> float:
    """Seconds of a duration; ValueError (with what is wrong) for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"{value} is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"'{value}' is not a duration") from None
            seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive, not {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest of the forms above (``5400`` -> ``1h30m``)."""
    if seconds != int(seconds) or seconds < 60:
        return f"{seconds:g}s"
    out, left = "", int(seconds)
    for unit in ("d", "h", "m", "s"):
        n, left = divmod(left, int(UNITS[unit]))
        if n:
            out += f"{n}{unit}"
    return out


def read_timeout(r: Reader, node: Node, commands: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """``timeout: 6h`` (every command) or ``timeout: {train: 6h, test: 10m}``; ``*`` in the
    mapping is every other command."""
    if is_null(node):
        return ()
    if not isinstance(node, MappingNode):
        return ((ALL_COMMANDS, _duration(r, node, "timeout")),)
    out: list[tuple[str, float]] = []
    for name, key_node, value_node in r.items(node, "timeout"):
        if name != ALL_COMMANDS and name not in commands:
            guess = did_you_mean(name, commands)
            raise r.error(
                f"'{name}' is not a command of the template",
                key_node,
                f"timeout.{name}",
                hint=(guess + " " if guess else "") + f"commands: {', '.join(commands)} (or * for all)",
            )
        out.append((name, _duration(r, value_node, f"timeout.{name}")))
    return tuple(out)


def _duration(r: Reader, node: Node, key: str) -> float:
    value = r.value(node, key, "duration")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise r.error(str(exc), node, key, hint=DURATION_HINT) from None


def timeout_of(timeouts: tuple[tuple[str, float], ...] | dict[str, float], command: str) -> float | None:
    """The timeout of ``command`` (its own, else the one for every command), or None."""
    table = dict(timeouts)
    return table.get(command, table.get(ALL_COMMANDS))

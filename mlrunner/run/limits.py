"""How long a command may run: ``timeout:`` of params.yaml with ``--timeout`` over it, and
``--stall`` (how long its log may stay the same size)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlrunner.errors import UsageError, did_you_mean
from mlrunner.run.request import RunRequest

if TYPE_CHECKING:
    from mlrunner.spec import Spec


def time_limits(req: RunRequest, spec: Spec) -> tuple[dict[str, float], float | None]:
    """The commands' timeouts (params.yaml's ``timeout:``, then ``--timeout`` over it) and
    the stall limit; UsageError for a bad ``--timeout`` / ``--stall``."""
    from mlrunner.spec import ALL_COMMANDS, parse_duration

    timeouts = dict(spec.timeouts)
    commands = [c for c, _ in spec.templates]
    for given in req.timeout or ():
        command, sep, text = given.rpartition("=")
        command = command if sep else ALL_COMMANDS
        if command != ALL_COMMANDS and command not in commands:
            raise UsageError(
                f"--timeout {given}: '{command}' is not a command of the template",
                key="--timeout",
                hint=did_you_mean(command, commands) or f"commands: {', '.join(commands)}",
            )
        try:
            timeouts[command] = parse_duration(text)
        except ValueError as exc:
            raise UsageError(f"--timeout {given}: {exc}", key="--timeout", hint=_DURATIONS) from None
    stall = None
    if req.stall is not None:
        try:
            stall = parse_duration(req.stall)
        except ValueError as exc:
            raise UsageError(f"--stall {req.stall}: {exc}", key="--stall", hint=_DURATIONS) from None
    return timeouts, stall


_DURATIONS = "a duration: 90s, 10m, 6h, 1d, 1h30m, or seconds; --timeout CMD=DURATION for one command"

"""Spec -> Plan: grid expansion, defaults, dedup by resolved params, 0.5.9-compatible
directory names, rendering of ``{p}`` / ``[p]`` templates, log names."""

from mlrunner.plan.expand import (
    EMPTY_NAME,
    Command,
    Plan,
    Task,
    experiment_name,
    legacy_name,
    log_name,
    plan,
    safe_name,
    shell_line,
)

__all__ = [
    "EMPTY_NAME",
    "Command",
    "Plan",
    "Task",
    "experiment_name",
    "legacy_name",
    "log_name",
    "plan",
    "safe_name",
    "shell_line",
]

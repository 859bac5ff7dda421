"""Spec -> Plan: grid expansion, defaults, dedup by resolved params, 0.5.9-compatible
directory names, rendering of ``{p}`` / ``[p]`` templates and of shell lines.

Modules: ``tasks`` (Command, Task, Plan), ``names`` (experiment names), ``render``
(templates, shell lines), ``grammar`` (a grid document's combinations: blocks and rows,
sizes, draws, excludes), ``grid`` (per-block tables), ``checks`` (orphans that look
mistyped, tasks that would run identical commands), ``expand`` (:func:`plan`). Log names
belong to the experiment dir: :func:`mlrunner.expdir.log_name`.
"""

from mlrunner.plan.checks import only_tasks
from mlrunner.plan.expand import MAX_TASKS, plan
from mlrunner.plan.names import (
    EMPTY_NAME,
    MAX_NAME_BYTES,
    digest,
    experiment_name,
    fit_name,
    legacy_name,
    safe_name,
)
from mlrunner.plan.render import render_field, shell_line
from mlrunner.plan.tasks import Command, Plan, Task

__all__ = [
    "EMPTY_NAME",
    "MAX_TASKS",
    "MAX_NAME_BYTES",
    "Command",
    "Plan",
    "Task",
    "digest",
    "experiment_name",
    "fit_name",
    "legacy_name",
    "only_tasks",
    "plan",
    "render_field",
    "safe_name",
    "shell_line",
]

"""Where commands run. ``base`` is the one interface (Backend, Recorder, Allocator and the
value objects they exchange); ``local/`` runs commands in a process pool on this machine,
``slurm/`` as Slurm jobs. A backend is imported by its own name (``mlrunner.backends.local``),
never from here, so that using one never imports the other."""

from mlrunner.backends.base import (
    Adopted,
    Allocation,
    Allocator,
    Backend,
    JobRef,
    Outcome,
    Placement,
    ProcessRef,
    Recorder,
    RunOptions,
    WorkItem,
)

__all__ = [
    "Adopted",
    "Allocation",
    "Allocator",
    "Backend",
    "JobRef",
    "Outcome",
    "Placement",
    "ProcessRef",
    "Recorder",
    "RunOptions",
    "WorkItem",
]

"""Where commands run. ``base`` is the one interface (Backend, Recorder, WorkItem,
RunOptions); ``local/`` runs them in a process pool on this machine, ``slurm/`` as Slurm jobs.
Backends are imported by name (``mlrunner.backends.local``), never from here, so that using
one never imports the other."""

from mlrunner.backends.base import Backend, Recorder, RunOptions, WorkItem

__all__ = ["Backend", "Recorder", "RunOptions", "WorkItem"]

"""The run loop: plan, snapshot, ledger, what is unfinished, execute, signals.

``request`` holds :class:`RunRequest` (and how a resume merges it with the stored run's
options), ``runner`` the :class:`Runner` (the steps of a run), ``recorder`` the
:class:`RunRecorder` (the backends' :class:`mlrunner.backends.base.Recorder`),
``orphans`` :func:`settle_orphans` (commands of dead runners), ``signals`` SIGINT/SIGTERM handling.
"""

from mlrunner.run.orphans import settle_orphans
from mlrunner.run.recorder import RunRecorder
from mlrunner.run.request import RunRequest
from mlrunner.run.runner import TIME_FORMAT, Runner

__all__ = ["TIME_FORMAT", "RunRecorder", "RunRequest", "Runner", "settle_orphans"]

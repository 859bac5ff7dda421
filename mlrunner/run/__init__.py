"""The run loop: plan, snapshot, ledger, what is unfinished, execute, signals."""

from mlrunner.run.runner import Runner, RunRecorder, RunRequest, reap_orphans

__all__ = ["RunRecorder", "RunRequest", "Runner", "reap_orphans"]

"""Attempts left ``running`` by a runner that died.

Resume policy for commands a crashed runner left alive: they are *stopped* (SIGTERM to
their process group and descendants, SIGKILL after the grace period), recorded as
``lost`` and run again. Their exit status cannot be known by a process that is not their
parent, so waiting for them would record a result we cannot trust.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlrunner import procs
from mlrunner.events import Emit, WarningMessage
from mlrunner.status import AttemptStatus

if TYPE_CHECKING:
    from mlrunner.ledger import Ledger


def reap_orphans(ledger: Ledger, emit: Emit, grace: float, task_key: str | None = None) -> None:
    """Settle attempts whose runner died: stop a command still alive, record them ``lost``."""
    for att in ledger.orphaned_attempts(task_key) if task_key else ledger.orphaned_attempts():
        if att.get("job_id"):  # a Slurm job: the Slurm backend reattaches to it
            continue
        alive = procs.is_alive(att.get("host"), att.get("boot_id"), att.get("pid"), att.get("proc_start"))
        if alive:
            emit(
                WarningMessage(
                    f"stopping '{att.get('command')}' (pid {att.get('pid')}) of "
                    f"{att.get('output_dir') or att.get('task_key')}: "
                    "its runner died; it will run again"
                )
            )
            procs.terminate_tree(int(att["pid"]), att.get("pgid"), att.get("proc_start"), grace=grace)
        ledger.end_attempt(att["id"], status=AttemptStatus.LOST)

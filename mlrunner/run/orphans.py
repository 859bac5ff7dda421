"""Attempts left ``running`` by a runner that died: settled, never run twice.

Every command's bash is its shepherd (:mod:`mlrunner.procs.spawn`): a runner that dies alone
leaves its commands running, and each one leaves its exit status beside its log when it
ends. :func:`settle_orphans` decides, for each attempt of a dead runner:

- its shepherd still runs (the same pid and start time, on this host and boot): the command
  is *adopted*: the new runner watches it, waits for it and records its real status. It is
  never stopped, never started a second time;
- it is gone and left an exit file: its real status is recorded (finished, or failed with
  its exit code and log tail), as if a runner had watched it;
- it is gone without one (killed with its runner, a power loss before it ended): ``lost``,
  and it runs again.

Nothing here signals a process. An attempt of a runner on another host (another container,
a renamed machine) is settled once that runner's heartbeat is stale: by its exit file, else
``lost``. Slurm attempts (a job id) are the Slurm backend's to reattach.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlrunner import expdir, procs
from mlrunner.backends.base import Adopted, ProcessRef
from mlrunner.events import Emit, InfoMessage, WarningMessage
from mlrunner.status import AttemptStatus

if TYPE_CHECKING:
    from mlrunner.ledger import Ledger


def live_shepherd(att: dict[str, Any]) -> ProcessRef | None:
    """The attempt's shepherd when it still runs here, its identity proven: this host and
    boot, and its pid with the recorded start time; for an attempt recorded without a start
    time, a bash whose command line names the attempt's exit file; for one recorded without
    a pid (its runner died right after spawning it), that bash found in /proc."""
    if att.get("host") != procs.hostname() or att.get("boot_id") != procs.boot_id():
        return None
    pid, log = att.get("pid"), att.get("log_path")
    if pid is None:
        found = procs.find_shepherd(log) if log else None
        return None if found is None else ProcessRef(pid=found[0], pgid=found[0], start=found[1])
    start = procs.proc_start_time(int(pid))
    if start is None:
        return None
    if att.get("proc_start") is not None:
        return ProcessRef(int(pid), att.get("pgid"), start) if start == att["proc_start"] else None
    if log and procs.is_shepherd(int(pid), log):
        return ProcessRef(int(pid), att.get("pgid"), start)
    return None


def settle_orphans(ledger: Ledger, emit: Emit, task_key: str | None = None) -> dict[str, Adopted]:
    """Settle the attempts of dead runners (of one task, or all); returns the commands to
    adopt, by task key."""
    adopted: dict[str, Adopted] = {}
    for att in ledger.orphaned_attempts(task_key) if task_key else ledger.orphaned_attempts():
        if att.get("job_id"):
            continue
        where = att.get("output_dir") or att["task_key"]
        elsewhere = bool(att.get("host")) and att["host"] != procs.hostname()
        command = att["command"]
        log = att.get("log_path")
        process = live_shepherd(att)
        if process is not None:
            assert log is not None
            adopted[att["task_key"]] = Adopted(
                attempt_id=int(att["id"]),
                command=command,
                process=process,
                log_path=Path(log),
                resource=att.get("resource") or "-",
            )
            emit(
                InfoMessage(
                    f"WAIT    '{command}' of {where} (pid {process.pid}): left running by a runner "
                    "that died; waiting for it, its own exit status will be recorded"
                )
            )
            continue
        code = procs.read_exit(procs.exit_path(log)) if log else None
        if code is None or log is None:
            ledger.end_attempt(att["id"], status=AttemptStatus.LOST)
            if elsewhere:  # its runner's heartbeat is stale; its command cannot be seen from here
                emit(
                    WarningMessage(
                        f"'{command}' of {where}: its runner on host {att['host']} stopped its heartbeat "
                        "and it left no exit status: it runs again (if it still runs there, stop it)"
                    )
                )
            continue
        failed = code != 0
        status = AttemptStatus.FAILED if failed else AttemptStatus.FINISHED
        ledger.end_attempt(
            att["id"], status=status, exit_code=code, log_tail=expdir.log_tail(log) if failed else None
        )
        if att.get("output_dir"):
            try:
                expdir.update_stat(att["output_dir"], command, status)
            except OSError:  # the ledger has it; the stat file is only its view
                pass
        emit(InfoMessage(f"'{command}' of {where} ended while no runner watched it (exit {code}): recorded"))
    return adopted

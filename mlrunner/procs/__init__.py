"""Processes (Linux, stdlib only): identity, signalling whole trees, starting commands.

- ``identity``: a process is (host, boot id, pid, start time); liveness; descendants;
- ``tree``: signalling a command's process group and every descendant;
- ``spawn``: the one way a command starts (posix_spawn of bash, its shepherd); exit files.
"""

from mlrunner.procs.identity import (
    ProcessId,
    boot_clock_ns,
    boot_id,
    descendant_ids,
    descendants,
    hostname,
    is_alive,
    proc_ppid,
    proc_start_time,
    proc_state,
    start_time_between,
)
from mlrunner.procs.spawn import (
    EXIT_SUFFIX,
    Child,
    Spawner,
    exit_path,
    find_shepherd,
    is_shepherd,
    read_exit,
    spawn,
    wait_gone,
)
from mlrunner.procs.tree import kill_proven, signal_tree, terminate_tree

__all__ = [
    "EXIT_SUFFIX",
    "Child",
    "ProcessId",
    "boot_clock_ns",
    "boot_id",
    "descendant_ids",
    "descendants",
    "exit_path",
    "find_shepherd",
    "hostname",
    "is_alive",
    "is_shepherd",
    "kill_proven",
    "proc_ppid",
    "proc_start_time",
    "proc_state",
    "read_exit",
    "signal_tree",
    "spawn",
    "Spawner",
    "start_time_between",
    "terminate_tree",
    "wait_gone",
]

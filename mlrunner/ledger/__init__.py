"""The SQLite ledger: every run, task, command and attempt.

``db`` is the storage (connection, transactions, batches, background WAL checkpoints,
migrations under a file lock, filesystem checks), ``schema`` the ordered migrations and
status rules, ``store`` the :class:`Ledger` (runs, tasks, claims, attempts, queries).
"""

from mlrunner.ledger.db import LEDGER_DIR_ENV, check_local_filesystem, ledger_dir, ledger_path, mount_of
from mlrunner.ledger.store import Ledger, iso

__all__ = [
    "LEDGER_DIR_ENV",
    "Ledger",
    "check_local_filesystem",
    "iso",
    "ledger_dir",
    "ledger_path",
    "mount_of",
]

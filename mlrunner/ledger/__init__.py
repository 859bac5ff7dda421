"""The SQLite ledger: every run, task, command and attempt.

``db`` is the storage (connection, transactions, batches, background WAL checkpoints,
migrations under a file lock; ``fs``: where the file lives, filesystem checks),
``schema`` the ordered migrations and derived task progress, ``store`` the
:class:`Ledger`, which has a ``db`` and is made of its concerns: ``runs`` (runs and
tasks), ``claims``, ``attempts`` and ``queries`` (the reads behind the views), over
``base``. ``views`` builds the documents shown of it (``ledger ls/show --json``,
``status --json``, the Examiner's ledger columns).
"""

from mlrunner.ledger.fs import LEDGER_DIR_ENV, check_local_filesystem, ledger_dir, ledger_path, mount_of
from mlrunner.ledger.store import Ledger
from mlrunner.ledger.views import iso

__all__ = [
    "LEDGER_DIR_ENV",
    "Ledger",
    "check_local_filesystem",
    "iso",
    "ledger_dir",
    "ledger_path",
    "mount_of",
]

"""The SQLite ledger: every run, task and command attempt, safe under many processes.

One file per output root, ``<output>/.mlrunner/ledger.db`` (``MLRUNNER_LEDGER_DIR``
moves it to local disk). :class:`Ledger` records runs and tasks (:mod:`.runs`), claims
(:mod:`.claims`) and attempts (:mod:`.attempts`), and answers the reads behind the views
(:mod:`.queries`; the documents themselves are :mod:`.views`'). It has a
:class:`~mlrunner.ledger.db.LedgerDB`, its storage (connection, transactions, batches,
checkpoints, migrations, filesystem checks), as ``db``.

Statuses (see :mod:`mlrunner.status`): a ``running`` attempt whose runner process is dead
(host, boot id, pid and start time, see :mod:`mlrunner.procs`) reads as ``lost``; so does
a ``running`` run.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path

from mlrunner.ledger.attempts import LOG_TAIL_MAX, AttemptsPart
from mlrunner.ledger.cancels import CancelsPart
from mlrunner.ledger.claims import ClaimsPart
from mlrunner.ledger.db import CHECKPOINT_INTERVAL_S, LedgerDB
from mlrunner.ledger.queries import QueriesPart
from mlrunner.ledger.runners import RunnersPart
from mlrunner.ledger.runs import RunsPart

__all__ = ["LOG_TAIL_MAX", "Ledger"]


class Ledger(RunsPart, RunnersPart, ClaimsPart, AttemptsPart, CancelsPart, QueriesPart):
    """The ledger of one output root. Thread-safe; fork-safe (reconnects in the child).

    ``create=False``: the ledger must exist (LedgerError otherwise); it is opened
    read-only when this process cannot write it.
    """

    def __init__(
        self, output: str | os.PathLike[str], *, create: bool = True, mounts_file: str | None = None
    ) -> None:
        self._me_cache = None
        self.db = LedgerDB(output, create=create, mounts_file=mounts_file)

    @property
    def output(self) -> str:
        return self.db.output

    @property
    def dir(self) -> Path:
        """The ledger's directory (``<output>/.mlrunner`` unless moved)."""
        return self.db.dir

    @property
    def read_only(self) -> bool:
        return self.db.read_only

    def batch(self) -> AbstractContextManager[None]:
        """Within the block, this thread's ledger calls share one write transaction
        (:meth:`LedgerDB.batch <mlrunner.ledger.db.LedgerDB.batch>`)."""
        return self.db.batch()

    def background_checkpoints(self, interval: float = CHECKPOINT_INTERVAL_S) -> AbstractContextManager[None]:
        """Within the block, WAL checkpoints run in a thread of their own
        (:meth:`LedgerDB.background_checkpoints <mlrunner.ledger.db.LedgerDB.background_checkpoints>`)."""
        return self.db.background_checkpoints(interval)

    def backup(self) -> Path:
        """A copy of the ledger beside it (:meth:`LedgerDB.backup <mlrunner.ledger.db.LedgerDB.backup>`)."""
        return self.db.backup()

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: 'ok' for a sound file."""
        return self.db.integrity_check()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

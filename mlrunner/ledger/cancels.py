"""Cancel requests: ``mlrunner cancel`` asks, every runner of the task stops it.

One row per task (the latest request wins). A runner honours the requests made after it
started (a run started later is the user asking for those tasks again: ``run --resume``
reruns cancelled commands like interrupted ones).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from mlrunner.ledger.base import LedgerPart


class CancelsPart(LedgerPart):
    """Ask for tasks to be cancelled; read the requests."""

    def request_cancel(self, task_keys: Sequence[str]) -> None:
        """Ask every runner of these tasks to stop them now."""
        me = self._me()
        now = time.time()
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO cancels (task_key, requested_at, requested_by) VALUES (?, ?, ?)",
                [(k, now, f"{me.host}:{me.pid}") for k in task_keys],
            )

    def cancelled_since(self, since: float) -> set[str]:
        """The keys of the tasks whose cancel was asked for at or after ``since`` (epoch)."""
        with self.db.transaction(write=False) as conn:
            rows = conn.execute("SELECT task_key FROM cancels WHERE requested_at >= ?", (since,)).fetchall()
        return {r[0] for r in rows}

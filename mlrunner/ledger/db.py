"""The ledger's storage: one SQLite file, safe under many processes and threads.

:class:`LedgerDB` owns the connection, the transactions and the file's health; the
runs, tasks, claims and attempts in it are :class:`mlrunner.ledger.store.Ledger`'s, which
holds one LedgerDB and writes and reads through :meth:`LedgerDB.transaction`. Rules,
after the SQLite docs and peers' bugs (Optuna #820, MLflow #4123):

- WAL journal, ``busy_timeout`` 30 s, ``synchronous=NORMAL``;
- ``isolation_level=None`` and an explicit ``BEGIN IMMEDIATE`` for every write
  transaction (a deferred BEGIN that reads then writes fails with "database is
  locked" under contention whatever the timeout);
- short transactions, no process or file work inside (liveness checks happen before);
- one connection per process, opened lazily and reopened after a fork;
- schema creation/migration serialised by a ``filelock`` on ``ledger.lock`` (never a lock
  on the .db itself);
- the ledger refuses network filesystems, where SQLite locking is unsafe.

Every SQLite failure becomes a :class:`~mlrunner.errors.LedgerError` that says what
happened and how to fix it: a write either commits or raises, never a silent success.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from mlrunner.errors import LedgerError, NoLedgerError
from mlrunner.ledger.fs import (
    LEDGER_DIR_ENV,
    check_local_filesystem,
    experiment_dirs,
    ledger_path,
    lock_holders,
    started_traces,
)
from mlrunner.ledger.schema import migrate, pending_migrations

BUSY_TIMEOUT_S = float(os.environ.get("MLRUNNER_LEDGER_BUSY_S") or 30.0)  # wait for the write lock
CHECKPOINT_INTERVAL_S = 0.5  # LedgerDB.background_checkpoints
CHECKPOINT_JOIN_S = 5.0  # how long the run's end waits for the last background checkpoint
WAL_AUTOCHECKPOINT_PAGES = 1000  # SQLite's default
MIGRATION_LOCK_TIMEOUT_S = 120.0

# Connections inherited over fork() are never closed in the child (closing could drop the
# parent's locks or checkpoint under it): they are parked here for the child's lifetime.
_ABANDONED: list[sqlite3.Connection] = []
_LEDGERS: weakref.WeakSet[LedgerDB] = weakref.WeakSet()


def _is_busy(e: sqlite3.Error) -> bool:
    name = getattr(e, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(e)


def _reset_locks_in_child() -> None:
    # A thread of the parent may have held a ledger's lock at fork(), inside a batch: neither
    # goes on here (the child gets a connection of its own).
    for ledger in list(_LEDGERS):
        ledger._lock = threading.RLock()
        ledger._batching = ledger._batch_began = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks_in_child)


_Self = TypeVar("_Self", bound="LedgerDB")


class LedgerDB:
    """The SQLite file of one output root: connection, transactions, schema, health."""

    def __init__(
        self, output: str | os.PathLike[str], *, create: bool = True, mounts_file: str | None = None
    ) -> None:
        self.output = os.fspath(output)
        self.path = ledger_path(output)
        self.dir = self.path.parent
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        # inside batch() (which holds _lock throughout, so only its thread gets here), and
        # whether its write transaction has begun
        self._batching = False
        self._batch_began = False
        # a runner sets this: waiting for the write lock is then said here and never fails
        self.on_busy: Callable[[str], None] | None = None
        _LEDGERS.add(self)
        check_local_filesystem(self.dir, mounts_file)
        if not create and not self.path.is_file():
            traces = started_traces(self.output)
            if traces:  # a run began here, and stopped before its ledger was written
                raise NoLedgerError(
                    f"no ledger for output '{self.output}', though a run started there (found "
                    f"{', '.join(traces)}): it stopped before its ledger existed, so nothing of it ran",
                    hint=f"start it again with `run -o {self.output}`",
                )
            raise NoLedgerError(
                f"no ledger for output '{self.output}': {self.path} does not exist",
                hint=f"nothing has run with -o {self.output} yet (check -o), "
                f"or it ran with {LEDGER_DIR_ENV} set differently",
            )
        if self.path.is_file() and self.path.stat().st_size == 0 and experiment_dirs(self.output, 1):
            # SQLite would read it as a fresh, empty ledger: every run forgotten, silently
            raise LedgerError(
                f"the ledger is empty (0 bytes) while {self.output} holds experiments: it is damaged",
                file=str(self.path),
                hint=f"`mlrunner ledger recover -o {self.output}` rebuilds it from the experiment dirs",
            )
        if create:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LedgerError(
                    f"cannot create the ledger directory {self.dir}: {e.strerror or e}",
                    hint=f"make the output dir writable, or set {LEDGER_DIR_ENV} to a writable local dir",
                ) from e
        # create=False never creates the file; a read-only ledger may still be read (see _prepare).
        self._query = "" if create else "?mode=rw"
        self.read_only = False
        self._prepare()

    # -- connection management ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        target = f"file:{quote(os.fspath(self.path.absolute()))}{self._query}"
        conn = sqlite3.connect(
            target, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def connection(self) -> sqlite3.Connection:
        """This process's connection (opened on first use, and again after a fork)."""
        pid = os.getpid()
        if self._conn is None or self._pid != pid:
            if self._conn is not None:  # inherited over fork: park it, never touch it here
                _ABANDONED.append(self._conn)
            self._conn = self._connect()
            self._pid = pid
        return self._conn

    def _inspect(self) -> tuple[list[str], str]:
        conn = self.connection()
        todo = pending_migrations(conn, str(self.path))
        return [m.name for m in todo], conn.execute("PRAGMA journal_mode").fetchone()[0]

    def _inspect_read_only(self, first: sqlite3.Error) -> tuple[list[str], str]:
        """create=False on a ledger this process cannot write: open it read-only.

        mode=ro reads a live WAL ledger (its -shm exists); a cleanly closed one (no -wal
        file) in a read-only directory can only be opened as immutable.
        """
        error: sqlite3.Error = first
        wal = Path(f"{self.path}-wal")
        queries = ["?mode=ro"]
        if not wal.exists() or wal.stat().st_size == 0:
            queries.append("?mode=ro&immutable=1")
        for query in queries:
            self._abandon_connection()
            self._query = query
            try:
                found = self._inspect()
            except sqlite3.Error as e:
                error = e
                continue
            self.read_only = True
            return found
        raise self._error(error, "open") from error

    def _abandon_connection(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
        self._conn = None

    def _prepare(self) -> None:
        """Create or upgrade the schema (under the file lock only when something is to do)."""
        where = str(self.path)
        try:
            todo, journal = self._inspect()
        except sqlite3.Error as e:
            name = getattr(e, "sqlite_errorname", "") or ""
            if self._query != "?mode=rw" or not name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")):
                raise self._error(e, "open") from e
            todo, journal = self._inspect_read_only(e)
        if self.read_only and todo:
            raise LedgerError(
                f"this ledger needs a schema upgrade ({', '.join(todo)}) but is read-only here",
                file=where,
                hint=f"run any mlrunner command on it once as a user who can write {self.dir}",
            )
        if self.read_only or (not todo and journal == "wal"):
            return
        conn = self.connection()
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.dir / "ledger.lock"), timeout=MIGRATION_LOCK_TIMEOUT_S)
        try:
            with lock:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise LedgerError(
                        f"cannot switch the ledger to WAL journal mode (SQLite kept '{mode}')",
                        file=where,
                        hint=f"put the ledger on a local disk: set {LEDGER_DIR_ENV} to a local directory",
                    )
                migrate(conn, where)
        except sqlite3.Error as e:
            raise self._error(e, "create or upgrade the schema of") from e
        except Timeout as e:
            raise LedgerError(
                f"timed out after {MIGRATION_LOCK_TIMEOUT_S:.0f} s waiting for {lock.lock_file} "
                "to create or upgrade the ledger",
                file=where,
                hint="another mlrunner process is stuck while upgrading this ledger; stop it and retry",
            ) from e
        except OSError as e:
            raise LedgerError(
                f"cannot lock {lock.lock_file} to create or upgrade the ledger: {e.strerror or e}",
                file=where,
                hint=f"make {self.dir} writable, or set {LEDGER_DIR_ENV} to a writable local directory",
            ) from e

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    @contextmanager
    def background_checkpoints(self, interval: float = CHECKPOINT_INTERVAL_S) -> Iterator[None]:
        """Within the block, WAL checkpoints run in a thread of their own, not in our commits.

        SQLite's automatic checkpoint runs inside whichever commit crosses 1000 WAL pages,
        and with ``synchronous=NORMAL`` it fsyncs the database file there: measured on
        the dispatch benchmark, about 0.2 ms per task on the run loop's thread. Here this
        process's connection stops checkpointing and a daemon thread with its own
        connection runs a PASSIVE checkpoint (it never blocks writers) every ``interval``
        seconds, and once more at the end.
        """
        conn = self.connection()
        with self._lock:
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        done = threading.Event()
        worker = threading.Thread(
            target=self._checkpoint_loop, args=(done, interval), name="mlrunner-checkpoint", daemon=True
        )
        worker.start()
        try:
            yield
        finally:
            done.set()
            # the last checkpoint is a courtesy: never let it hold the run's end up
            worker.join(CHECKPOINT_JOIN_S)
            with self._lock:
                if self._conn is conn:
                    try:
                        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
                    except sqlite3.Error:  # the connection is going away anyway
                        pass

    def _checkpoint_loop(self, done: threading.Event, interval: float) -> None:
        try:
            conn = self._connect()
            conn.execute("PRAGMA busy_timeout = 0")  # never wait for a lock: the next round will do
        except sqlite3.Error:
            return  # checkpoints then happen at the next autocheckpoint or close
        try:
            while True:
                finished = done.wait(interval)
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:  # busy or read-only: the next round (or close) does it
                    pass
                if finished:
                    return
        finally:
            conn.close()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _error(self, e: sqlite3.Error, doing: str = "write") -> LedgerError:
        name = getattr(e, "sqlite_errorname", "") or ""
        text = str(e)
        where = str(self.path)
        elsewhere = f"or set {LEDGER_DIR_ENV} to a writable local directory"
        if name.startswith("SQLITE_READONLY") or "readonly" in text:
            return LedgerError(
                f"cannot {doing} the ledger: it is read-only ({text})"
                + ("" if doing == "open" else "; nothing was recorded"),
                file=where,
                hint=f"make {self.dir} and the files in it writable, {elsewhere}",
            )
        if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
            return LedgerError(
                f"cannot {doing} the ledger: {text}",
                file=where,
                hint=f"SQLite needs {self.dir} to exist and be writable (it creates ledger.db-wal and "
                f"ledger.db-shm there); fix its permissions {elsewhere}",
            )
        if name == "SQLITE_FULL" or name.startswith("SQLITE_IOERR") or ("disk" in text and "full" in text):
            return LedgerError(
                f"cannot {doing} the ledger: {text}; the change was NOT recorded",
                file=where,
                hint=f"free space (or quota) on the filesystem holding {self.dir}, {elsewhere}; "
                "then continue with `run --resume`",
            )
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
            return LedgerError(
                f"cannot {doing} the ledger: it stayed locked by another process for more than "
                f"{BUSY_TIMEOUT_S:.0f} s ({text})",
                file=where,
                hint="another process holds a long transaction on it; see `mlrunner status` and retry",
            )
        if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "not a database" in text or "malformed" in text:
            return LedgerError(
                f"the ledger is damaged or not an SQLite database ({text})",
                file=where,
                hint=f"`mlrunner ledger recover -o {self.output}` rebuilds it (from its last backup and "
                "the experiment dirs), keeping the damaged file beside it",
            )
        return LedgerError(f"cannot {doing} the ledger: {text}", file=where)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Within the block, this thread's ledger calls share one write transaction.

        Each call is a savepoint of it (a failed call is undone alone); the transaction
        begins with the first call that writes and commits when the block ends, even
        when it ends with an exception. For the dispatch loop: a command's end and the
        next task's claim cost one commit instead of two. Keep the block free of side
        effects that must be recorded first (a spawned process): they would be lost
        with the transaction if this process died inside the block.
        """
        with self._lock:
            if self._batching:  # nested: the outer block commits
                yield
                return
            self._batching, self._batch_began = True, False
            try:
                yield
            finally:
                self._batching = False
                if self._batch_began:
                    conn = self.connection()
                    try:
                        conn.execute("COMMIT")
                    except sqlite3.Error as e:
                        self._quietly(conn, ("ROLLBACK",))
                        if sys.exc_info()[1] is None:  # else the block's own error is the one to see
                            raise self._error(e, "write") from e

    @contextmanager
    def _savepoint(self, write: bool) -> Iterator[sqlite3.Connection]:
        """One call's part of a :meth:`batch` transaction."""
        assert self._batching
        if write and not self._batch_began:
            try:
                self._begin(self.connection(), "BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise self._error(e, "write") from e
            self._batch_began = True
        if not self._batch_began:  # a read before any write: a read transaction of its own
            with self._own_tx(False) as conn:
                yield conn
            return
        rollback = ("ROLLBACK TO call", "RELEASE call")
        with self._statements(write, ("SAVEPOINT call",), ("RELEASE call",), rollback) as conn:
            yield conn

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction: BEGIN IMMEDIATE for writes, a consistent snapshot for reads
        (inside :meth:`batch`, a savepoint of the batch's transaction)."""
        with self._lock:
            if self._batching:
                with self._savepoint(write) as conn:
                    yield conn
            else:
                with self._own_tx(write) as conn:
                    yield conn

    def _own_tx(self, write: bool) -> AbstractContextManager[sqlite3.Connection]:
        begin = "BEGIN IMMEDIATE" if write else "BEGIN"
        return self._statements(write, (begin,), ("COMMIT",), ("ROLLBACK",))

    @contextmanager
    def _statements(
        self, write: bool, begin: Sequence[str], commit: Sequence[str], rollback: Sequence[str]
    ) -> Iterator[sqlite3.Connection]:
        """Run ``begin``, the block, then ``commit``; ``rollback`` when the block or the commit
        fails. SQLite errors become LedgerErrors."""
        doing = "write" if write else "read"
        with self._lock:
            try:
                conn = self.connection()
                for sql in begin:
                    self._begin(conn, sql)
            except sqlite3.Error as e:
                raise self._error(e, doing) from e
            try:
                yield conn
            except BaseException as exc:
                self._quietly(conn, rollback)
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc, doing) from exc
                raise
            try:
                for sql in commit:
                    conn.execute(sql)
            except sqlite3.Error as e:
                self._quietly(conn, rollback)
                raise self._error(e, doing) from e

    def _begin(self, conn: sqlite3.Connection, sql: str) -> None:
        """``sql`` (a BEGIN): when another process holds the write lock past the busy timeout
        and ``on_busy`` is set (a runner), say who holds it and wait on, never fail."""
        waited = 0.0
        while True:
            try:
                conn.execute(sql)
                return
            except sqlite3.OperationalError as e:
                if self.on_busy is None or not _is_busy(e):
                    raise
                waited += BUSY_TIMEOUT_S
                holders = lock_holders(self.path) or ["another process"]
                self.on_busy(
                    f"waiting for the ledger's write lock ({waited:.0f} s so far), held by "
                    f"{'; '.join(holders)}; this runner waits on"
                )

    @staticmethod
    def _quietly(conn: sqlite3.Connection, statements: Sequence[str]) -> None:
        try:
            for sql in statements:
                conn.execute(sql)
        except sqlite3.Error:  # the error that brought us here is the one to report
            pass

    def backup(self) -> Path:
        """A copy of the ledger beside it, ``ledger.db.bak`` (SQLite's online backup, then an
        atomic rename): what ``mlrunner ledger recover`` starts from if the file is lost."""
        dest = self.path.with_name(self.path.name + ".bak")
        tmp = dest.with_name(dest.name + f".tmp.{os.getpid()}")
        with self._lock:
            copy = sqlite3.connect(tmp)
            try:
                self.connection().backup(copy)
            finally:
                copy.close()
        os.replace(tmp, dest)
        return dest

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: 'ok' for a sound file."""
        with self.transaction(write=False) as conn:
            return "\n".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))

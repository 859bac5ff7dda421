"""Parse results cached by the (name, mtime_ns, size) listing of each experiment dir.

A cached result is used only when the dir's listing (every top-level entry's name,
mtime_ns and size) is exactly what it was when the result was computed. A listing with an
entry modified less than ``RACY_NS`` before it was taken is never stored: a file written
again within the file system's time-stamp granularity could keep its mtime and size
(git's "racy" index entries), and such dirs belong to experiments still running anyway.

The store is one pickle per parser pipeline under ``<output>/.mlrunner/examine-cache/``,
written atomically; when the output dir is read-only the cache lives in memory only.
Pickles are loaded from your own output dir only: whoever can write there can already
run code as you through the experiments' scripts.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("mlrunner.examine")

CACHE_DIR = os.path.join(".mlrunner", "examine-cache")
FORMAT = 1
RACY_NS = 2_000_000_000
MAX_FILES = 8

Listing = tuple[tuple[str, int, int], ...]
# dir name -> (listing, {token: pickled payload})
Entries = dict[str, tuple[Listing, dict[str, bytes]]]


@dataclass(frozen=True)
class DirScan:
    listing: Listing
    names: tuple[str, ...]
    racy: bool


def scan_dir(path: str, now_ns: int) -> DirScan | None:
    """The fingerprint of one experiment dir, None when it vanished meanwhile."""
    rows = []
    newest = 0
    try:
        with os.scandir(path) as it:
            for entry in it:
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue  # deleted while we looked: not part of the listing
                rows.append((entry.name, st.st_mtime_ns, st.st_size))
                newest = max(newest, st.st_mtime_ns)
    except (FileNotFoundError, NotADirectoryError):
        return None
    rows.sort()
    return DirScan(tuple(rows), tuple(r[0] for r in rows), newest > now_ns - RACY_NS)


class CacheStore:
    """The cached entries of one output dir for one parser pipeline (``key``)."""

    def __init__(self, output: str | os.PathLike[str], key: str) -> None:
        self.dir = Path(output, CACHE_DIR)
        self.path = self.dir / f"{key}.pkl"
        self.entries: Entries = self._load()
        self.dirty = False

    def _load(self) -> Entries:
        try:
            with open(self.path, "rb") as f:
                data = pickle.load(f)
        except FileNotFoundError:
            return {}
        except Exception as exc:  # a torn or foreign file: start over, it is only a cache
            log.debug("ignoring unreadable examine cache %s: %s", self.path, exc)
            return {}
        if not isinstance(data, dict) or data.get("format") != (FORMAT, sys.version_info[:2]):
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}

    def get(self, name: str, scan: DirScan) -> dict[str, bytes]:
        """The cached payloads of ``name`` when its listing is unchanged, else {}."""
        entry = self.entries.get(name)
        if entry is None or entry[0] != scan.listing:
            return {}
        return entry[1]

    def put(self, name: str, scan: DirScan, payloads: dict[str, bytes]) -> None:
        if scan.racy or not payloads:
            if self.entries.pop(name, None) is not None:
                self.dirty = True
            return
        old = self.entries.get(name)
        if old is None or old[0] != scan.listing or old[1] != payloads:
            self.entries[name] = (scan.listing, payloads)
            self.dirty = True

    def keep_only(self, names: set[str]) -> None:
        """Forget dirs that no longer exist."""
        gone = [n for n in self.entries if n not in names]
        for name in gone:
            del self.entries[name]
        self.dirty = self.dirty or bool(gone)

    def save(self) -> bool:
        """Write the store atomically; False (and memory-only caching) when that fails."""
        if not self.dirty:
            return True
        data = {"format": (FORMAT, sys.version_info[:2]), "entries": self.entries}
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.dir)
            try:
                with os.fdopen(fd, "wb") as f:
                    pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            log.debug("examine cache not saved to %s: %s", self.path, exc)
            return False
        self.dirty = False
        self._prune()
        return True

    def _prune(self) -> None:
        try:
            files = sorted(self.dir.glob("*.pkl"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
            for old in files[MAX_FILES:]:
                old.unlink()
        except OSError:
            pass

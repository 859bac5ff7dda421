"""Parse results cached by the (name, mtime_ns, size) listing of each experiment dir.

A cached result is used only when the dir's listing (every top-level entry's name,
mtime_ns and size, and the TensorBoard event files of its sub-dirs) is exactly what it was
when the result was computed. A listing with an entry modified less than ``RACY_NS`` before
it was taken is never a hit: a file written again within the file system's time-stamp
granularity could keep its mtime and size (git's "racy" index entries), and such dirs
belong to experiments still running anyway. Their result is kept all the same, as the
point a growing ``metrics.jsonl`` is read on from (see :mod:`mlrunner.examine.series`).

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

from mlrunner.examine import tboard

log = logging.getLogger("mlrunner.examine")

CACHE_DIR = os.path.join(".mlrunner", "examine-cache")
FORMAT = 2
RACY_NS = 2_000_000_000
MAX_FILES = 8

Listing = tuple[tuple[str, int, int], ...]
# dir name -> (listing, {token: pickled payload}); listing None: computed from a dir that was
# being written (racy): never a hit, only the previous result a growing metrics.jsonl resumes from
Entries = dict[str, tuple[Listing | None, dict[str, bytes]]]


@dataclass(frozen=True)
class DirScan:
    listing: Listing
    names: tuple[str, ...]  # the top-level entries
    racy: bool
    events: tuple[str, ...] = ()  # TensorBoard event files in sub-dirs, relative paths


def scan_dir(path: str, now_ns: int, events: bool = False) -> DirScan | None:
    """The fingerprint of one experiment dir, None when it vanished meanwhile.

    ``events``: also list the TensorBoard event files of its sub-dirs (a few levels down),
    whose names, mtimes and sizes then belong to the fingerprint."""
    rows = []
    deep: list[tuple[str, int, int]] = []
    newest = 0
    try:
        with os.scandir(path) as it:
            for entry in it:
                try:
                    st = entry.stat()
                    if events and entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                        newest = max(
                            newest, tboard.walk(entry.path, entry.name + "/", tboard.MAX_DEPTH, deep)
                        )
                except FileNotFoundError:
                    continue  # deleted while we looked: not part of the listing
                rows.append((entry.name, st.st_mtime_ns, st.st_size))
                newest = max(newest, st.st_mtime_ns)
    except (FileNotFoundError, NotADirectoryError):
        return None
    rows.sort()
    names = tuple(r[0] for r in rows)
    found = tuple(n for n in names if n.startswith(tboard.EVENT_PREFIX))
    if deep:
        deep.sort()
        rows.extend(deep)
        found += tuple(r[0] for r in deep)
    return DirScan(tuple(rows), names, newest > now_ns - RACY_NS, found)


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
        if entry is None or entry[0] is None or entry[0] != scan.listing:
            return {}
        return entry[1]

    def previous(self, name: str) -> dict[str, bytes]:
        """The payloads last stored for ``name``, whatever its listing was then."""
        entry = self.entries.get(name)
        return {} if entry is None else entry[1]

    def put(self, name: str, scan: DirScan, payloads: dict[str, bytes]) -> None:
        if not payloads:
            if self.entries.pop(name, None) is not None:
                self.dirty = True
            return
        listing = None if scan.racy else scan.listing
        old = self.entries.get(name)
        if old is None or old[0] != listing or old[1] != payloads:
            self.entries[name] = (listing, payloads)
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

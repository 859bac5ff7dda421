"""Where an output root's ledger lives, and whether SQLite can lock files there.

The ledger refuses network filesystems, where SQLite's POSIX locks are unreliable
(sqlite.org/faq.html#q5, lockingv3): ``MLRUNNER_LEDGER_DIR`` moves it to a local disk.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mlrunner.errors import UnsafeFilesystemError

LEDGER_DIR_ENV = "MLRUNNER_LEDGER_DIR"
MOUNTS_FILE_ENV = "MLRUNNER_MOUNTS_FILE"  # testing hook: read this instead of /proc/mounts
# Filesystems where SQLite's POSIX locks are unreliable (sqlite.org/faq.html#q5, lockingv3).
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "ncpfs", "afs", "9p", "sshfs",
        "fuse.sshfs", "lustre", "gpfs", "beegfs", "fhgfs", "glusterfs", "fuse.glusterfs",
        "panfs", "davfs", "fuse.davfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone",
        "fuse.juicefs", "fuse.cephfs", "ceph",
    }
)  # fmt: skip


def ledger_dir(output: str | os.PathLike[str]) -> Path:
    """Directory of the ledger of ``output``: ``<output>/.mlrunner``.

    With ``MLRUNNER_LEDGER_DIR`` set, ``<that dir>/<basename>-<hash of realpath(output)>``,
    so several output roots can keep their ledgers on one local disk without mixing.
    """
    override = os.environ.get(LEDGER_DIR_ENV)
    if override:
        real = os.path.realpath(os.fspath(output))
        import hashlib  # only for a moved ledger (MLRUNNER_LEDGER_DIR): not at start-up

        tag = hashlib.sha256(real.encode()).hexdigest()[:12]
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(real)).strip("._")[:40] or "root"
        return Path(override).expanduser().absolute() / f"{base}-{tag}"
    return Path(output) / ".mlrunner"


def ledger_path(output: str | os.PathLike[str]) -> Path:
    """The ledger file of ``output`` (see :func:`ledger_dir`)."""
    return ledger_dir(output) / "ledger.db"


def _unescape_mount(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_of(path: str | os.PathLike[str], mounts_file: str | None = None) -> tuple[str, str, str] | None:
    """(mount point, fs type, source) of the mount holding ``path``; None if unknown."""
    probe = os.path.realpath(os.fspath(path))  # the path need not exist yet
    mounts_file = mounts_file or os.environ.get(MOUNTS_FILE_ENV) or "/proc/mounts"
    try:
        with open(mounts_file, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    best: tuple[str, str, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        source, point, fstype = _unescape_mount(fields[0]), _unescape_mount(fields[1]), fields[2]
        inside = probe == point or probe.startswith(point.rstrip("/") + "/")
        # Later lines win on equal length: the last mount on a point hides earlier ones.
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fstype, source)
    return best


def check_local_filesystem(directory: str | os.PathLike[str], mounts_file: str | None = None) -> None:
    """Raise UnsafeFilesystemError when ``directory`` is on a network filesystem."""
    mount = mount_of(directory, mounts_file)
    if mount is None:
        return
    point, fstype, source = mount
    network = fstype.lower() in NETWORK_FILESYSTEMS or (fstype == "fuse" and source.startswith("sshfs#"))
    if network:
        raise UnsafeFilesystemError(
            f"the ledger directory {os.fspath(directory)} is on a network filesystem "
            f"({fstype} mounted at {point} from {source}), where SQLite locking is unsafe: "
            f"concurrent runs could corrupt the ledger",
            hint=f"keep the outputs where they are and put the ledger on a local disk that survives "
            f"reboots, e.g. export {LEDGER_DIR_ENV}=/var/tmp/$USER/mlrunner, and use the same value "
            f"for every run and `mlrunner` command on this output",
        )


def lock_holders(db: Path) -> list[str]:
    """The other processes that have the ledger open (from /proc), each as 'pid N (its
    command line)', and 'stopped' with how to go on when one is (Ctrl-Z, SIGSTOP): who may
    hold its write lock."""
    names = {os.path.realpath(db), os.path.realpath(f"{db}-wal")}
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if target in names:
                out.append(describe_process(int(entry)))
                break
    return out


def describe_process(pid: int) -> str:
    """'pid N (command line)', with '(stopped: kill -CONT N resumes it)' when it is stopped."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return f"pid {pid}"
    state = stat[stat.rindex(b")") + 2 :].split()[0]
    text = f"pid {pid} ({argv[:80]})"
    if state in (b"T", b"t"):
        text += f" which is STOPPED (Ctrl-Z or SIGSTOP): `kill -CONT {pid}` resumes it"
    return text


def started_traces(output: str | os.PathLike[str]) -> list[str]:
    """What a run leaves in an output root before its ledger exists (the params file's copy,
    its git snapshot's work dir), by name."""
    out = Path(output)
    found = [p.name for p in out.glob("*.yaml*") if p.is_file()][:3]
    if (out / ".mlrunner" / "snapshots").is_dir():
        found.append(".mlrunner/snapshots")
    return found


def experiment_dirs(output: str | os.PathLike[str], most: int | None = None) -> list[Path]:
    """Experiment dirs of an output root (a ``param`` or ``stat`` file in them), at most ``most``."""
    found: list[Path] = []
    try:
        entries = list(os.scandir(output))
    except OSError:
        return found
    for e in entries:
        if (
            e.is_dir()
            and not e.name.startswith(".")
            and (
                os.path.exists(os.path.join(e.path, "param")) or os.path.exists(os.path.join(e.path, "stat"))
            )
        ):
            found.append(Path(e.path))
            if most is not None and len(found) >= most:
                break
    return found

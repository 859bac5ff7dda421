"""GPUs of this machine: discovery, machine-wide share locks, out-of-memory triage.

* :func:`query_gpus` asks ``nvidia-smi`` (present wherever the NVIDIA driver is) for the
  GPU table. Indices are nvidia-smi's, i.e. PCI bus order: whoever sets
  ``CUDA_VISIBLE_DEVICES`` from them should also set ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.
* :class:`ShareLock` is one kernel lock (``flock``) on ``<lock_dir>/gpu<i>.share<k>.lock``:
  a task holds one per GPU share it uses. The kernel drops it when the holding process
  dies, so a crashed runner never leaves a GPU reserved. The lock directory is shared by
  every runner (and user) of the machine: see :func:`default_lock_dir`.
* :func:`classify_failure` reads a failed command's log tail and says ``gpu_oom`` when a
  CUDA out-of-memory error (PyTorch, TensorFlow, JAX/XLA, plain CUDA) ended it.

The allocator that hands slots and GPU shares to tasks is :mod:`mlrunner.resources.slots`
(``SlotAllocator`` and ``Allocation`` can be imported from here too). Nothing here
prints; errors are :class:`~mlrunner.errors.ResourceError`.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from mlrunner.errors import ResourceError
from mlrunner.status import FailureClass

QUERY_FIELDS = "index,uuid,name,memory.total,memory.used,memory.free,utilization.gpu"
NVIDIA_SMI_ARGS = (f"--query-gpu={QUERY_FIELDS}", "--format=csv,noheader,nounits")
LOCK_DIR_ENV = "MLRUNNER_GPU_LOCK_DIR"
MANUAL_SLOTS_HINT = (
    "list the slots by hand instead: `resource: [0, 1]` in params.yaml or `-r 0 -r 1` on the command line"
)


@dataclass(frozen=True)
class GpuInfo:
    """One row of nvidia-smi's table. Memory in MiB; a value nvidia-smi cannot report
    (``[N/A]``, ``[Not Supported]``) reads as 0."""

    index: int
    uuid: str
    name: str
    memory_total_mib: int
    memory_used_mib: int
    memory_free_mib: int
    utilization: int  # percent


class NvidiaSmiNotFound(ResourceError):
    """nvidia-smi is not on PATH (no NVIDIA driver here)."""


def query_gpus(*, timeout: float = 10.0) -> list[GpuInfo]:
    """The GPUs nvidia-smi lists, in its order.

    Raises :class:`NvidiaSmiNotFound` when nvidia-smi is missing and
    :class:`ResourceError` when it fails, hangs or prints something unreadable.
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise NvidiaSmiNotFound(
            "cannot find GPUs: nvidia-smi is not on PATH (is the NVIDIA driver installed?)",
            key="resource",
            hint=MANUAL_SLOTS_HINT,
        )
    argv = [exe, *NVIDIA_SMI_ARGS]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ResourceError(
            f"cannot find GPUs: `{' '.join(argv)}` did not answer within {timeout:g} s",
            key="resource",
            hint="check the driver with `nvidia-smi`, or " + MANUAL_SLOTS_HINT,
        ) from None
    except OSError as exc:
        raise ResourceError(
            f"cannot find GPUs: cannot run {exe}: {exc.strerror or exc}",
            key="resource",
            hint=MANUAL_SLOTS_HINT,
        ) from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip() or "(no output)")[-2000:]
        raise ResourceError(
            f"cannot find GPUs: `{' '.join(argv)}` failed with exit code {done.returncode}:\n{said}",
            key="resource",
            hint="fix the driver (see `nvidia-smi`), or " + MANUAL_SLOTS_HINT,
        )
    return parse_gpu_table(done.stdout)


def parse_gpu_table(text: str) -> list[GpuInfo]:
    """Parse ``--query-gpu=<QUERY_FIELDS> --format=csv,noheader,nounits`` output."""
    gpus: list[GpuInfo] = []
    for lineno, row in enumerate(csv.reader(text.splitlines(), skipinitialspace=True), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 7:
            raise ResourceError(
                f"cannot read nvidia-smi's answer, line {lineno}: expected 7 fields "
                f"({QUERY_FIELDS}), got {len(row)}: {','.join(row)!r}",
                key="resource",
                hint=MANUAL_SLOTS_HINT,
            )
        cells = [cell.strip() for cell in row]
        try:
            index = int(cells[0])
        except ValueError:
            raise ResourceError(
                f"cannot read nvidia-smi's answer, line {lineno}: GPU index {cells[0]!r} is not a number",
                key="resource",
                hint=MANUAL_SLOTS_HINT,
            ) from None
        total, used, free, util = (_number(c) for c in cells[3:7])
        gpus.append(GpuInfo(index, cells[1], cells[2], total, used, free, util))
    return gpus


def _number(cell: str) -> int:
    try:
        return int(float(cell))
    except ValueError:  # [N/A], [Not Supported], ...
        return 0


# --- machine-wide share locks ------------------------------------------------------------


def default_lock_dir() -> str:
    """Where GPU share locks live: ``$MLRUNNER_GPU_LOCK_DIR``, else
    ``<system temp dir>/mlrunner-gpu-locks`` (the same for every runner of the machine)."""
    return os.environ.get(LOCK_DIR_ENV) or os.path.join(tempfile.gettempdir(), "mlrunner-gpu-locks")


def ensure_lock_dir(path: str) -> str:
    """Create the lock directory if needed and return its absolute path. One we create is
    world-writable and sticky, like /tmp, so that runners of other users reserve GPUs
    through the same files; an existing directory is left as it is."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return path
    try:
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o1777)
    except OSError as exc:
        if not os.path.isdir(path):
            raise ResourceError(
                f"cannot create the GPU lock directory {path}: {exc.strerror or exc}",
                hint=f"set {LOCK_DIR_ENV} to a writable directory shared by every runner of this machine",
            ) from None
        # another runner created it first (and owns it): use it as it is
    return path


def share_lock_path(lock_dir: str, gpu: int, share: int) -> str:
    return os.path.join(lock_dir, f"gpu{gpu}.share{share}.lock")


class ShareLock:
    """An exclusive kernel lock on one GPU share file, taken without waiting.

    ``ShareLock.try_take(...)`` returns the held lock or None when someone else (this
    process or another) holds that share. :meth:`release` drops it; so does the process's
    death. Lock files are never deleted (deleting a lock file races with its lockers).
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def try_take(cls, lock_dir: str, gpu: int, share: int) -> ShareLock | None:
        path = share_lock_path(lock_dir, gpu, share)
        fd = _open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise ResourceError(
                f"cannot lock {path}: {exc.strerror or exc}",
                hint=f"set {LOCK_DIR_ENV} to a directory on a local filesystem",
            ) from None
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock

    def __del__(self) -> None:
        self.release()


def _open_lock_file(path: str) -> int:
    flags = os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags | os.O_RDWR, 0o666)
    except PermissionError:
        try:  # another user's lock file: flock works on a read-only descriptor too
            fd = os.open(path, flags | os.O_RDONLY)
        except OSError as exc:
            raise _lock_file_error(path, exc) from None
        return fd
    except OSError as exc:
        raise _lock_file_error(path, exc) from None
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o666)  # let other users' runners open it too (umask cut it)
    except OSError:
        pass
    return fd


def _lock_file_error(path: str, exc: OSError) -> ResourceError:
    return ResourceError(
        f"cannot open the GPU lock file {path}: {exc.strerror or exc}",
        hint=f"set {LOCK_DIR_ENV} to a writable directory shared by every runner of this machine",
    )


# --- failure triage ----------------------------------------------------------------------

_OOM_PATTERNS = re.compile(
    "|".join(
        [
            r"CUDA out of memory",  # PyTorch: torch.cuda.OutOfMemoryError: CUDA out of memory. Tried...
            r"CUDA error: out of memory",  # PyTorch, when the caching allocator is bypassed
            r"torch(?:\.cuda)?\.OutOfMemoryError",
            r"CUBLAS_STATUS_ALLOC_FAILED",
            r"CUDNN_STATUS_ALLOC_FAILED",
            r"ResourceExhaustedError",  # TensorFlow
            r"OOM when allocating tensor",  # TensorFlow
            r"RESOURCE_EXHAUSTED: Out of memory",  # JAX / XLA
            r"XlaRuntimeError: RESOURCE_EXHAUSTED",  # JAX
            r"cudaErrorMemoryAllocation",  # CUDA runtime
        ]
    )
)


def classify_failure(log_tail: str) -> FailureClass | None:
    """``FailureClass.GPU_OOM`` when the log tail of a failed command shows a CUDA
    out-of-memory error (PyTorch, TensorFlow, JAX/XLA, CUDA runtime), None for any other.

    A plain Python ``MemoryError`` (host memory) is not a GPU OOM and gives None.
    """
    if log_tail and _OOM_PATTERNS.search(log_tail):
        return FailureClass.GPU_OOM
    return None

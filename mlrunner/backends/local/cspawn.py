"""``posix_spawn`` of bash through libc (ctypes), which releases the GIL while it waits.

``os.posix_spawn`` holds the GIL until the child has exec'd bash (glibc spawns with
``CLONE_VFORK``): 0.3-1 ms per command on a busy machine, during which no other thread of
the process runs. Called through ctypes, the same libc function lets the local backend's
event loop record other commands meanwhile (the spawn runs in a thread of its own).

The child gets what :func:`mlrunner.procs.spawn` gives it: a new session, stdin from
/dev/null, stdout and stderr to the log, SIGPIPE and SIGXFSZ at their defaults, the
inherited descriptors closed. :func:`available` is False where this cannot be set up
(no glibc-style libc, no ``POSIX_SPAWN_SETSID``): the caller then uses ``os.posix_spawn``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

POSIX_SPAWN_SETSIGDEF = 0x04
POSIX_SPAWN_SETSID = 0x80  # glibc >= 2.26
_STRUCT_BYTES = 1024  # posix_spawnattr_t (336 bytes on x86-64 glibc), file actions (80), sigset_t (128)

_c_char_pp = ctypes.POINTER(ctypes.c_char_p)


@lru_cache(maxsize=1)
def _libc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        names = (
            "posix_spawn",
            "posix_spawnattr_init",
            "posix_spawnattr_setflags",
            "posix_spawnattr_setsigdefault",
            "posix_spawn_file_actions_init",
            "posix_spawn_file_actions_addopen",
            "posix_spawn_file_actions_adddup2",
            "posix_spawn_file_actions_addclose",
            "posix_spawn_file_actions_destroy",
            "sigemptyset",
            "sigaddset",
            "gnu_get_libc_version",  # glibc: the flag values above are glibc's
        )
        for name in names:
            getattr(libc, name)
    except (OSError, AttributeError):
        return None
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    major, minor = (int(x) for x in libc.gnu_get_libc_version().decode().split(".")[:2])
    if (major, minor) < (2, 26):
        return None
    libc.posix_spawn.argtypes = [
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        _c_char_pp,
        _c_char_pp,
    ]
    libc.posix_spawn.restype = ctypes.c_int
    libc.posix_spawn_file_actions_addopen.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint,
    ]
    libc.posix_spawn_file_actions_adddup2.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    libc.posix_spawn_file_actions_addclose.argtypes = [ctypes.c_void_p, ctypes.c_int]
    libc.posix_spawnattr_setflags.argtypes = [ctypes.c_void_p, ctypes.c_short]
    return libc


def available() -> bool:
    return _libc() is not None


class BashSpawner:
    """Spawns ``bash -c TEXT``; one instance per thread (its structures are reused)."""

    def __init__(self, bash: str, close_fds: Sequence[int]) -> None:
        if not available():
            raise OSError("posix_spawn through ctypes is not available here")
        self._libc = libc = _libc()
        self._bash = os.fsencode(bash)
        self._close = list(close_fds)
        self._attr = ctypes.create_string_buffer(_STRUCT_BYTES)
        self._sigset = ctypes.create_string_buffer(_STRUCT_BYTES)
        self._envs: dict[Any, Any] = {}
        self._check(libc.posix_spawnattr_init(self._attr), "posix_spawnattr_init")
        libc.sigemptyset(self._sigset)
        libc.sigaddset(self._sigset, int(signal.SIGPIPE))
        libc.sigaddset(self._sigset, int(signal.SIGXFSZ))
        self._check(libc.posix_spawnattr_setsigdefault(self._attr, self._sigset), "setsigdefault")
        flags = POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF
        self._check(libc.posix_spawnattr_setflags(self._attr, flags), "posix_spawnattr_setflags")

    @staticmethod
    def _check(err: int, what: str) -> None:
        if err:
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def envp(self, key: Any, env: Mapping[str, str]) -> Any:
        """The C environment array for ``env``, built once per ``key``."""
        arr = self._envs.get(key)
        if arr is None:
            items = [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()]
            arr = (ctypes.c_char_p * (len(items) + 1))(*items, None)
            self._envs[key] = arr
        return arr

    def spawn(self, text: str, log_fd: int, envp: Any) -> int:
        """Start ``bash -c text`` with stdout/stderr on ``log_fd``; its pid. OSError if not."""
        libc = self._libc
        actions = ctypes.create_string_buffer(_STRUCT_BYTES)
        self._check(libc.posix_spawn_file_actions_init(actions), "posix_spawn_file_actions_init")
        try:
            libc.posix_spawn_file_actions_addopen(actions, 0, os.devnull.encode(), os.O_RDONLY, 0)
            libc.posix_spawn_file_actions_adddup2(actions, log_fd, 1)
            libc.posix_spawn_file_actions_adddup2(actions, log_fd, 2)
            for fd in self._close:
                libc.posix_spawn_file_actions_addclose(actions, fd)
            argv = (ctypes.c_char_p * 4)(b"bash", b"-c", os.fsencode(text), None)
            pid = ctypes.c_int()
            err = libc.posix_spawn(ctypes.byref(pid), self._bash, actions, self._attr, argv, envp)
        finally:
            libc.posix_spawn_file_actions_destroy(actions)
        if err:
            raise OSError(err, os.strerror(err), os.fsdecode(self._bash))
        return pid.value

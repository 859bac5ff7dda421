"""Waking the local loop: a non-blocking pipe in its selector, written by helper threads
(an allocation handed back) and by signals (``signal.set_wakeup_fd``: a stop request is
seen at once, not at the next poll)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Waker:
    """The loop's wake-up pipe: ``fd`` to register for reading, :meth:`wake` from anywhere."""

    def __init__(self) -> None:
        self.fd, self._w = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._w, False)

    def wake(self) -> None:
        try:
            os.write(self._w, b"\0")
        except OSError:  # full: a wake-up is pending anyway; closed: the loop is over
            pass

    def drain(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    @contextmanager
    def on_signals(self) -> Iterator[None]:
        """Within the block, signals write a byte to the pipe (in the main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._w)

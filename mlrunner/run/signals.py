"""SIGINT/SIGTERM during a run: stop launching, stop what runs, a second Ctrl-C kills."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from mlrunner.events import Emit, Stopping

if TYPE_CHECKING:
    from mlrunner.run.recorder import RunRecorder


class stop_on_signals:
    """Within the block: SIGINT/SIGTERM ask the run to stop (``recorder.stop``, a
    :class:`mlrunner.events.Stopping` event); a second SIGINT kills at once
    (``recorder.kill_now``). SIGHUP (a dropped ssh session, a closed terminal) is ignored:
    the sweep goes on, its output in the run's console log. Outside the main thread it
    does nothing."""

    def __init__(self, recorder: RunRecorder, emit: Emit) -> None:
        self.recorder = recorder
        self.emit = emit
        self.previous: dict[int, Any] = {}  # whatever signal.signal returned: handler, int or None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        rec = self.recorder
        if rec.stop.is_set():
            if signum == signal.SIGINT:
                rec.kill_now.set()
            return
        rec.signal_received = signum
        rec.stop.set()
        self.emit(Stopping(signum))

    def __enter__(self) -> stop_on_signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
            self.previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

"""SIGTERM / SIGINT (preemption, Ctrl-C): finish the current step, save, exit cleanly.

A second Ctrl-C while the run is saving stops at once. `stop_exit_code()` tells the command
which exit code to return after such a stop (130 for SIGINT, 143 for SIGTERM), so that
`pvdm train-diffusion ... && pvdm sample ...` does not go on with a half-trained model.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

_stopped_by: int | None = None  # the signal that stopped the last training loop, if any


def stop_exit_code() -> int:
    """0, or 128 + the signal number when the last training loop was stopped by a signal
    (read once: the next call says 0 until another loop is stopped)."""
    global _stopped_by
    code = 128 + _stopped_by if _stopped_by is not None else 0
    _stopped_by = None
    return code


class StopRequest:
    """While active, the first SIGTERM/SIGINT only sets `requested`; the loop checks it."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        global _stopped_by
        _stopped_by = None
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        global _stopped_by
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        _stopped_by = signum
        self.signal_name = signal.Signals(signum).name
        log.warning(
            "%s received: finishing the current step, saving a checkpoint, then stopping "
            "(run the same command again to resume)",
            self.signal_name,
        )

"""SIGTERM / SIGINT during a run: finish the current step, save a checkpoint, exit non-zero with the
command that resumes it (SLURM preemption, Ctrl-C, `kill`)."""
from __future__ import annotations

import signal
import threading
import time

from ..errors import LTBenchError

# a second Ctrl-C this long after the first stops at once (torchrun forwards the terminal's SIGINT to
# its workers, which then see it twice within milliseconds: that must not skip the checkpoint)
FORCE_AFTER_S = 2.0


class RunInterrupted(LTBenchError):
    """Stopped by a signal; a checkpoint was saved (or the run had not trained anything yet)."""

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


_received: int | None = None  # a process that was told to stop starts no further run (sweeps in one process)


def refuse_if_stopped() -> None:
    if _received is not None:
        name = signal.Signals(_received).name
        raise RunInterrupted(f"not started: this process received {name} during an earlier run", _received)


class GracefulStop:
    """Context manager: while inside, SIGTERM/SIGINT only set ``requested``; the loop polls it."""

    def __init__(self):
        self.signum: int | None = None
        self._first_at = 0.0
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "signal"

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT and time.monotonic() - self._first_at > FORCE_AFTER_S:
            raise KeyboardInterrupt
        if self.signum is None:
            global _received
            self.signum, self._first_at, _received = signum, time.monotonic(), signum

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():  # signals only reach the main thread
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

"""Ctrl-C and SIGTERM: abandon the current round, keep the history, stop Ray, exit 130/143.

Inside `interruptible()` both signals raise `Interrupted` (a BaseException, so library
code that catches `Exception` lets it through) in the main thread; the run's `finally`
blocks then shut Ray down. Flower's server thread may still be waiting for the abandoned
round's replies, so the entry point ends the process with `os._exit` once the history
file is not being written.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(BaseException):
    """The run was asked to stop by a signal."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """130 for SIGINT, 143 for SIGTERM (128 + the signal number)."""
        return EXIT_CODES.get(self.signum, 128 + self.signum)


def _raise(signum, frame) -> None:
    for sig in EXIT_CODES:  # one stop is enough: a second signal must not break the clean-up
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted`; old handlers come back after."""
    previous = {sig: signal.signal(sig, _raise) for sig in EXIT_CODES}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

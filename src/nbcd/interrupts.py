"""Ctrl-C and SIGTERM: stop every kernel, write nothing half-done, exit 130 or 143.

While :func:`interruptible` is active, both signals raise :class:`Interrupted` in the main
thread wherever it is, an event loop included. The engines clean up on the way out (kernels
are shut down in ``finally`` blocks, the kernel pool kills its kernels, writes are atomic), and
the CLI prints ``interrupted`` and exits with 128 + the signal's number.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

__all__ = ["Interrupted", "interruptible", "requested"]

_requested: list[int] = []  # the signal that asked nbcd to stop, once one has


def requested() -> bool:
    """Whether a stop was asked for: work finishing now is being cut short, not judged."""
    return bool(_requested)


class Interrupted(KeyboardInterrupt):
    """The user or the system asked nbcd to stop (SIGINT or SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for Ctrl-C, 143 for TERM)."""
        return 128 + self.signum


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into Interrupted for the duration of the block."""

    def handler(signum: int, frame: FrameType | None) -> None:
        # one stop is enough: a second signal during clean-up must not cut it short
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        _requested.append(signum)
        raise Interrupted(signum)

    _requested.clear()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)

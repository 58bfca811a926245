"""Ctrl-C and SIGTERM during a run: stop scheduling first, kill only when asked twice.

- first Ctrl-C (SIGINT): no new cell starts; the cells in flight may finish within
  :data:`GRACE` seconds, then their workers are killed; the run writes its table, leaderboards
  and a manifest marked ``interrupted`` and exits 130;
- second Ctrl-C: the workers are killed at once;
- SIGTERM (a scheduler or ``kill``): like a second Ctrl-C (a batch system gives little time),
  and the outputs are still written; exit 143.

Workers ignore SIGINT (see :func:`moebench.execution.limits.worker_init`), so a terminal's
Ctrl-C, which reaches the whole process group, is handled here only.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

#: Seconds the cells in flight may take to finish after the first Ctrl-C.
GRACE = 10.0


class StopRequest:
    """The state of a run's stop: requested (stop scheduling), forced (kill now)."""

    def __init__(self, grace: float = GRACE):
        self.grace = grace
        self.signum: int | None = None
        self.requested_at: float | None = None
        self.forced = False

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def request(self, signum: int = signal.SIGINT) -> None:
        """Ask the run to stop (the first Ctrl-C); a second request forces it."""
        if self.requested:
            self.forced = True
            return
        self.signum = signum
        self.requested_at = time.monotonic()
        if signum == signal.SIGTERM:
            self.forced = True

    def must_kill(self) -> bool:
        """Whether the cells in flight must be killed now (forced, or the grace is over)."""
        return self.forced or (
            self.requested_at is not None and time.monotonic() - self.requested_at > self.grace
        )

    def _handle(self, signum: int, frame) -> None:
        self.request(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Route SIGINT and SIGTERM to this request inside the block (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

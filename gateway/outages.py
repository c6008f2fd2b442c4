"""Log a failing background job by its state changes, not by its attempts.

A poller that retries every half second and logs every failure floods the log
(two workers: 240 lines a minute, each with a traceback) and buries the moment
it started. An OutageLog writes one line when the job starts failing, a summary
every SUMMARY_SECONDS while it keeps failing, and one line when it works again:

    config refresh failing: OperationalError: connection failed: ... Connection refused
    config refresh still failing after 60 s (120 attempts): OperationalError: ...
    config refresh recovered after 63.5 s (127 failed attempts)

Plain Python (no Django); one instance per job, used from one thread at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

SUMMARY_SECONDS = 60.0


def describe(exc: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, short enough for one log line."""
    message = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


class OutageLog:
    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        summary_seconds: float = SUMMARY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.logger = logger
        self.summary_seconds = summary_seconds
        self.clock = clock
        self.since: float | None = None  # when the current outage began; None: working
        self.failures = 0
        self.reason = ""
        self._last_line = 0.0

    @property
    def failing(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        now = self.clock()
        self.failures += 1
        self.reason = describe(exc)
        if self.since is None:
            self.since = self._last_line = now
            self.logger.warning("%s failing: %s", self.what, self.reason)
            self.logger.debug("%s: the first failure", self.what, exc_info=exc)
        elif now - self._last_line >= self.summary_seconds:
            self._last_line = now
            self.logger.warning(
                "%s still failing after %.0f s (%d attempts): %s",
                self.what,
                now - self.since,
                self.failures,
                self.reason,
            )

    def succeeded(self) -> None:
        if self.since is None:
            return
        self.logger.info(
            "%s recovered after %.1f s (%d failed attempts)",
            self.what,
            self.clock() - self.since,
            self.failures,
        )
        self.since = None
        self.failures = 0
        self.reason = ""

"""Back-off and logging while a broker or result store cannot be reached."""

from __future__ import annotations

import collections
import logging
import time

from qhive.errors import BrokerError

logger = logging.getLogger("qhive.cluster")

#: Back-off after errors: short, so that work resumes within seconds of the
#: server coming back (a reconnect attempt costs little).
FIRST_BACKOFF, MAX_BACKOFF = 0.25, 2.0


class Outage:
    """Counts the errors of one connection and says, once, when it works again."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.errors = 0  # in a row, until it works again
        self.since = 0.0
        #: every error since the start, by ``what`` failed (for metrics)
        self.totals: collections.Counter[str] = collections.Counter()

    def failed(self, exc: Exception, action: str) -> float:
        """Log the error (not every one) and return how long to wait before retrying."""
        if not self.errors:
            self.since = time.monotonic()
        self.errors += 1
        self.totals[self.what] += 1
        delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** min(self.errors - 1, 8))
        level = logging.ERROR if self.errors in (1, 5) or self.errors % 50 == 0 else logging.DEBUG
        kind = f"{self.what} error" if isinstance(exc, BrokerError) else type(exc).__name__
        logger.log(level, "%s: %s: %s; retrying every %.1f s at most", action, kind, exc,
                   MAX_BACKOFF)
        return delay

    def recovered(self) -> None:
        if self.errors:
            logger.warning("%s reachable again after %.1f s (%d failed attempts)", self.what,
                           time.monotonic() - self.since, self.errors)
            self.errors = 0

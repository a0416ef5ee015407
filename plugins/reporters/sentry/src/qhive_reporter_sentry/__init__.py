"""qhive's Sentry error reporter: Django Q2's ``Q_CLUSTER["error_reporter"]["sentry"]``.

Selected with Django Q2's key, ``Q_CLUSTER = {"error_reporter": {"sentry": {"dsn": "…"}}}``.
The class is :class:`qhive_reporter_sentry.reporter.SentryReporter`; importing this package
imports neither it nor sentry_sdk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qhive_reporter_sentry.reporter import SentryReporter

__all__ = ["SentryReporter"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        # on first use: listing the entry points must not import sentry_sdk
        from qhive_reporter_sentry import reporter

        return getattr(reporter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

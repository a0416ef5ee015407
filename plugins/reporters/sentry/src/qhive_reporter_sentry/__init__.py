"""qhive's Sentry error reporter: Django Q2's ``Q_CLUSTER["error_reporter"]["sentry"]``.

Selected with Django Q2's key, ``Q_CLUSTER = {"error_reporter": {"sentry": {"dsn": "…"}}}``.
The class is :class:`qhive_reporter_sentry.reporter.SentryReporter` (the entry point
names it there); importing this package imports neither it nor sentry_sdk.
"""

__all__: list[str] = []

"""qhive's Rollbar error reporter: Django Q2's ``Q_CLUSTER["error_reporter"]["rollbar"]``.

Selected with Django Q2's key, ``Q_CLUSTER = {"error_reporter": {"rollbar": {"access_token":
"…", "environment": "production"}}}``. The class is
:class:`qhive_reporter_rollbar.reporter.RollbarReporter` (the entry point names it there);
importing this package imports neither it nor rollbar.
"""

__all__: list[str] = []

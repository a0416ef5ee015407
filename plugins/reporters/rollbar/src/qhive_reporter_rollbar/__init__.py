"""qhive's Rollbar error reporter: Django Q2's ``Q_CLUSTER["error_reporter"]["rollbar"]``.

Selected with Django Q2's key, ``Q_CLUSTER = {"error_reporter": {"rollbar": {"access_token":
"…", "environment": "production"}}}``. The class is
:class:`qhive_reporter_rollbar.reporter.RollbarReporter`; importing this package imports
neither it nor rollbar.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qhive_reporter_rollbar.reporter import RollbarReporter

__all__ = ["RollbarReporter"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        # on first use: listing the entry points must not import rollbar
        from qhive_reporter_rollbar import reporter

        return getattr(reporter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

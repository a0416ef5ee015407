"""The cluster's log on stderr, for ``qcluster``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qhive.config import Config


def configure_logging(config: Config) -> None:
    """Show the cluster's log on stderr at ``log_level``, as Django Q does, unless the
    project configured the ``qhive`` logger itself."""
    root = logging.getLogger("qhive")
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s [Q] %(levelname)s %(message)s",
                                           "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(config.log_level)
    root.propagate = False

"""Set-up of the processes a cluster starts: ``qcluster`` hands the cluster
``setup="qhive_django.runtime:setup"``, which it calls first thing in every child.
"""

from __future__ import annotations

from typing import Any

import django
from django.apps import apps
from django.db import connections

SETUP = "qhive_django.runtime:setup"

# Connections inherited through fork(), kept referenced so that garbage
# collection never closes them: closing sends the server a goodbye on a socket
# the parent shares, which would end the parent's session.
_inherited: list[Any] = []


def setup() -> None:
    """Make this process a Django process: ``django.setup()`` (the settings come from
    ``DJANGO_SETTINGS_MODULE``, inherited from ``qcluster``), fresh database
    connections; qhive_django's hooks are default plugins of every plugin manager."""
    if apps.ready:  # forked from a process that had set Django up
        _drop_inherited_connections()
    else:
        django.setup()  # registers qhive_django's hooks (AppConfig.ready)


def _drop_inherited_connections() -> None:
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None:
            _inherited.append(connection.connection)
            connection.connection = None  # the next query opens this process's own

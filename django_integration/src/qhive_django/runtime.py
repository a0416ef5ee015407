"""Set-up of the processes a cluster starts: ``qcluster`` hands the cluster
``setup="qhive_django.runtime:setup"``, which it calls first thing in every child.
"""

from __future__ import annotations

from typing import Any

SETUP = "qhive_django.runtime:setup"

# Connections inherited through fork(), kept referenced so that garbage
# collection never closes them: closing sends the server a goodbye on a socket
# the parent shares, which would end the parent's session.
_inherited: list[Any] = []


def setup() -> None:
    """Make this process a Django process: ``django.setup()`` (the settings come from
    ``DJANGO_SETTINGS_MODULE``, inherited from ``qcluster``), fresh database
    connections, and qhive_django's hooks registered with the plugin manager."""
    import django
    from django.apps import apps

    if apps.ready:  # forked from a process that had set Django up
        _drop_inherited_connections()
    else:
        django.setup()

    from qhive_django.conf import plugin_manager

    plugin_manager()  # registered again if the manager was rebuilt in this process


def _drop_inherited_connections() -> None:
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if connection.connection is not None:
            _inherited.append(connection.connection)
            connection.connection = None  # the next query opens this process's own

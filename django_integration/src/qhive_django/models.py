"""Django Q's model names, owned by the plugins that store them.

``Task``, ``Success`` and ``Failure`` live in the ORM result store (app
``qhive_store_orm``), ``QueuedTask`` in the ORM broker (app ``qhive_broker_orm``).
They are imported on first access, so that this app also works in a project
that uses other backends, and a missing app is a clear error, not an import
crash during ``django.setup()``.
"""

from __future__ import annotations

import importlib
from typing import Any

#: name -> (Django app, distribution)
_OWNERS = {
    "Task": ("qhive_store_orm", "qhive-store-orm"),
    "Success": ("qhive_store_orm", "qhive-store-orm"),
    "Failure": ("qhive_store_orm", "qhive-store-orm"),
    "QueuedTask": ("qhive_broker_orm", "qhive-broker-orm"),
}

__all__ = list(_OWNERS)


def __getattr__(name: str) -> Any:
    if name not in _OWNERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from django.apps import apps

    app, distribution = _OWNERS[name]
    if not apps.is_installed(app):
        raise ImportError(
            f"qhive_django.models.{name} is the model of the {app!r} app, which is not in "
            f"INSTALLED_APPS: add {app!r} there (pip install {distribution}) and run migrate",
            name=__name__,
        )
    return getattr(importlib.import_module(f"{app}.models"), name)

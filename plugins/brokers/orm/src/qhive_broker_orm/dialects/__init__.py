"""The ORM broker's databases: one :class:`~qhive_broker_orm.dialects.base.Dialect`
per Django vendor, picked by :func:`dialect_for`.

The broker supports PostgreSQL, MariaDB/MySQL and SQLite; a database alias of
any other database (or none) is a :class:`qhive.errors.ConfigError` saying so.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.utils import ConnectionDoesNotExist
from qhive.errors import ConfigError

from qhive_broker_orm.dialects.base import Dialect
from qhive_broker_orm.dialects.mysql import MySQL
from qhive_broker_orm.dialects.postgresql import PostgreSQL
from qhive_broker_orm.dialects.sqlite import SQLite

__all__ = ["DIALECTS", "Dialect", "dialect_for"]

#: The supported databases by Django vendor (``connection.vendor``).
DIALECTS: dict[str, Dialect] = {d.vendor: d for d in (PostgreSQL(), MySQL(), SQLite())}


def dialect_for(alias: str) -> Dialect:
    """The dialect of database ``alias`` of ``settings.DATABASES``, or a ConfigError
    (key ``orm``, Django Q2's ``Q_CLUSTER['orm']``) saying what is wrong."""
    try:
        vendor = connections[alias].vendor
    except ConnectionDoesNotExist:
        known = ", ".join(map(repr, settings.DATABASES)) or "none"
        raise ConfigError(
            f"the ORM broker's database {alias!r} (Q_CLUSTER['orm']) is not in "
            f"settings.DATABASES; databases: {known}", key="orm"
        ) from None
    except ImproperlyConfigured as exc:
        raise ConfigError(
            f"the ORM broker needs Django's settings (set DJANGO_SETTINGS_MODULE): {exc}",
            key="orm",
        ) from exc
    try:
        return DIALECTS[vendor]
    except KeyError:
        supported = ", ".join(d.display_name for d in DIALECTS.values())
        raise ConfigError(
            f"the ORM broker does not support database {alias!r} (Q_CLUSTER['orm']), "
            f"whose Django vendor is {vendor!r}; it supports {supported}", key="orm"
        ) from None

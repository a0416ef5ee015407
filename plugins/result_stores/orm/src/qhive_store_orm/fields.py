"""The model field of ``args``, ``kwargs`` and ``result``: a Python value in the
instance, signed bytes in the database (see :mod:`qhive_store_orm.codec`)."""

from __future__ import annotations

import base64
from typing import Any

from django.db import models

from qhive_store_orm.codec import get_codec

__all__ = ["Encoded", "SignedValueField"]


class Encoded(bytes):
    """Bytes that already are the stored form (a signed package).

    :class:`SignedValueField` writes them unchanged; any other value, plain
    ``bytes`` included, is a Python value and gets encoded.
    """

    __slots__ = ()


class SignedValueField(models.BinaryField):
    """Any value the cluster's serializer can encode, stored as a signed package.

    ``None`` is stored as SQL ``NULL``. Reading a package that fails
    verification gives a :class:`qhive_store_orm.codec.UnreadableValue`, never
    an exception. ``dumpdata`` writes the signed bytes (base64) and ``loaddata``
    puts them back unchanged, so fixtures move between databases of one project.
    """

    description = "A Python value stored as a signed package of the cluster's serializer"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None:
            return None
        return get_codec().read(bytes(value), self.name)

    def get_prep_value(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, Encoded):
            return bytes(value)
        return get_codec().encode(value)

    def to_python(self, value: Any) -> Any:
        # Strings come from serialized fixtures: the base64 of the stored bytes.
        if isinstance(value, str):
            return Encoded(base64.b64decode(value.encode("ascii")))
        return value

    def value_to_string(self, obj: Any) -> Any:
        value = self.value_from_object(obj)
        if value is None:
            return None
        return base64.b64encode(self.get_prep_value(value)).decode("ascii")

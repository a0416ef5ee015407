"""``ArgumentsField``: a schedule's ``args`` / ``kwargs``, stored so they come back as
they went in.

Django Q2 stores them as ``str(tuple)`` / ``str(dict)`` and reads them back with
``ast.literal_eval``: anything but a Python literal is lost, and a bad value fails
silently at run time. Here they are JSON text, with tuples, datetimes, dates,
decimals, UUIDs, bytes and sets kept as what they were (qhive's ``json``
serializer); a value that cannot be stored is a ``ValidationError`` when the
schedule is saved, naming the value's type. The admin shows and takes plain JSON,
and also Django Q2's notation (``1, 'two'`` for args, ``x=1, y='two'`` for kwargs),
so schedules written for Django Q2 can be pasted in.

args read as Django Q2 reads them, a single value being the one argument (``"2"``
is ``(2,)``, ``"'a'"`` is ``("a",)``), with one difference: a list (``[1, "two"]``,
JSON or Python) is the arguments, where Django Q2 would pass it as one argument.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from qhive.builtin.serializers import JsonSerializer
from qhive.errors import SerializationError

_json = JsonSerializer()


def dumps(value: Any) -> str:
    """JSON text of ``value``; raises ValidationError if it cannot be stored."""
    try:
        return _json.dumps(value).decode()
    except SerializationError as exc:
        raise ValidationError(str(exc), code="unstorable") from exc


def loads(text: str) -> Any:
    return _json.loads(text.encode())


def args_of(value: Any) -> tuple:
    """The arguments ``value`` stands for: a list or tuple is them, anything else is one."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def parse_legacy(text: str, kind: str) -> Any:
    """Django Q2's notation: ``1, 'a'`` / ``(1, 'a')`` / ``2`` (args) or ``x=1, y='a'`` /
    ``{'x': 1}`` (kwargs)."""
    if kind == "args":
        # One literal, as Django Q2's scheduler reads it: "2" is (2,), and "(1.5,)",
        # what Django Q2 stores, is (1.5,).
        return args_of(ast.literal_eval(text)) if text.strip() else ()
    try:
        value = ast.literal_eval(text)
        if isinstance(value, dict):
            return value
    except (ValueError, SyntaxError):
        pass
    call = ast.parse(f"f({text})", mode="eval").body
    if not isinstance(call, ast.Call) or call.args:
        raise ValueError("not keyword arguments")
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}


class ArgumentsField(models.TextField):
    """``args`` (a tuple; ``kind="args"``) or ``kwargs`` (a dict; ``kind="kwargs"``)."""

    def __init__(self, *args: Any, kind: str = "args", **kwargs: Any) -> None:
        if kind not in ("args", "kwargs"):
            raise ValueError("kind is 'args' or 'kwargs'")
        self.kind = kind
        kwargs.setdefault("null", True)
        kwargs.setdefault("blank", True)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> tuple:
        name, path, args, kwargs = super().deconstruct()
        kwargs["kind"] = self.kind
        return name, path, args, kwargs

    def _shape(self, value: Any) -> Any:
        if value is None:
            return None
        if self.kind == "args":
            return args_of(value)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValidationError(f"kwargs must be a dict with string keys, got {value!r}"[:200],
                                  code="invalid")
        return value

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None or value == "":
            return None
        try:
            return self._shape(loads(value))
        except (SerializationError, ValueError, ValidationError):
            # Written by something else (a Django Q2 import): its own notation.
            try:
                return parse_legacy(value, self.kind)
            except (ValueError, SyntaxError):
                return value  # shown as it is; validation refuses it on the next save

    def to_python(self, value: Any) -> Any:
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                value = loads(value)
            except SerializationError:
                try:
                    value = parse_legacy(value, self.kind)
                except (ValueError, SyntaxError) as exc:
                    raise ValidationError(
                        f"{self.kind} must be JSON (e.g. {self._example()}) or Django Q "
                        f"notation; could not read {value!r}: {exc}", code="invalid") from exc
        return self._shape(value)

    def get_prep_value(self, value: Any) -> Any:
        value = self.to_python(value)
        if value is None:
            return None
        if self.kind == "args":
            value = list(value)  # a JSON array: readable, and a tuple again when read
        return dumps(value)

    def validate(self, value: Any, model_instance: Any) -> None:
        super().validate(value, model_instance)
        if value is not None:
            dumps(self._shape(value))

    def value_to_string(self, obj: Any) -> str:
        value = self.value_from_object(obj)
        return "" if value is None else self.get_prep_value(value)

    def formfield(self, **kwargs: Any) -> Any:
        return super().formfield(**{"form_class": _ArgumentsFormField, "field": self, **kwargs})

    def _example(self) -> str:
        return '[1, "two"]' if self.kind == "args" else '{"x": 1}'


class _ArgumentsFormField(forms.CharField):
    widget = forms.Textarea(attrs={"rows": 2})

    def __init__(self, *args: Any, field: ArgumentsField, **kwargs: Any) -> None:
        self.model_field = field
        kwargs.pop("max_length", None)
        super().__init__(*args, **kwargs)

    def prepare_value(self, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        shown = list(value) if isinstance(value, tuple) else value
        try:
            return json.dumps(json.loads(dumps(shown)))
        except ValidationError:
            return repr(value)

    def to_python(self, value: Any) -> Any:
        value = super().to_python(value)
        return self.model_field.to_python(value) if value not in (None, "") else None

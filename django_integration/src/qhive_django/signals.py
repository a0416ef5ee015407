"""Django Q's signals, fed by qhive's hooks (see :mod:`qhive_django.hooks`).

All are sent with ``sender="qhive"``. Receivers connected the Django Q way,
``pre_enqueue.connect(f, sender="django_q")``, receive them too.

* ``pre_enqueue(task)`` — in the caller, before the task is signed; receivers may change it.
* ``pre_execute(func, task)`` — in the worker, before the task runs; an error fails the task.
* ``post_execute_in_worker(func, task, result)`` — in the worker (the caller for ``sync``
  tasks), right after the task ran, before its result is saved. ``task`` is the package
  with ``result``, ``success`` and ``stopped`` added; ``func`` the task's function (None
  if it could not be imported). Errors are logged: the outcome stays what it was.
* ``post_execute(task, result)`` — after the result was saved and the message
  acknowledged. ``task`` is the package with ``result``, ``success`` and ``stopped``
  added, as Django Q sends it; ``result`` is the saved :class:`qhive.contracts.TaskResult`.
* ``post_spawn(proc_name)`` — in a worker process that just started.
"""

from __future__ import annotations

from typing import Any

from django.dispatch import Signal

SENDER = "qhive"
DJANGO_Q_SENDER = "django_q"


def _sender(sender: Any) -> Any:
    return SENDER if sender == DJANGO_Q_SENDER else sender


class QhiveSignal(Signal):
    """A signal that treats Django Q's sender ``"django_q"`` as qhive's ``"qhive"``."""

    def connect(self, receiver: Any, sender: Any = None, weak: bool = True,
                dispatch_uid: Any = None) -> None:
        super().connect(receiver, _sender(sender), weak, dispatch_uid)

    def disconnect(self, receiver: Any = None, sender: Any = None,
                   dispatch_uid: Any = None) -> bool:
        return super().disconnect(receiver, _sender(sender), dispatch_uid)


pre_enqueue = QhiveSignal()
pre_execute = QhiveSignal()
post_execute_in_worker = QhiveSignal()
post_execute = QhiveSignal()
post_spawn = QhiveSignal()

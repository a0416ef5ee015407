"""Django Q2's "Queued tasks" admin page (its ``OrmQ`` admin), for the ORM broker's table.

The list shows every message waiting in a queue or taken by a cluster. The task's
name, function, group and id come from the payload, decoded with the codec of the
queue's cluster (:func:`qhive.plugins.project_pipeline`): the signature is checked
before anything is deserialized, so unverified bytes are never unpickled. A
package that fails — altered, signed with another secret key or project name,
written by another serializer — shows ``cannot decode: <reason>`` in those
columns and never breaks the page. Each row is decoded once per request.

``queue`` and ``visible_at`` (Django Q2's ``lock``) are editable: move a task to
another cluster's queue, or make a taken task visible now. Saving writes only the
columns that changed, with an ``UPDATE`` of that row, so it never brings back a
message a cluster acknowledged meanwhile (a plain ``save()`` would insert it
again) and never undoes a claim's ``deliveries`` count. On PostgreSQL the save
wakes the clusters listening on the queue, as an enqueue does. A move to a queue
no cluster of these settings consumes, or to a cluster that cannot read the
package, is refused with a form error.

Differences from Django Q2: registered whenever the app is installed (Django Q2:
only with the ORM broker configured, or ``testing``); listed in the order
clusters take the messages (``priority`` descending, ``visible_at``, then ``id``),
with each one's priority; the page reads the broker database of
the root cluster (``Q_CLUSTER["orm"]``).
"""

from __future__ import annotations

import pprint
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import connections
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from qhive.errors import BadSignature, ConfigError, QhiveError
from qhive.plugins import project_pipeline
from qhive.task import func_name

from qhive_broker_orm.broker import OrmBroker
from qhive_broker_orm.dialects import DIALECTS
from qhive_broker_orm.models import QueuedTask

__all__ = ["QueueAdmin", "decode_payload", "queue_database"]

#: Keys of a task package shown in their own columns; the rest are its options.
_SHOWN_KEYS = frozenset({"id", "name", "group", "func", "args", "kwargs", "started"})
#: Where a decoded package is kept on its instance (one decode per row and request).
_DECODED = "_qhive_decoded_package"
#: Set on an instance whose row was gone when the change form was saved.
_GONE = "_qhive_row_gone"


# --------------------------------------------------------------------------- helpers


def queue_database() -> str | None:
    """The database of the root cluster's ORM broker, or None when another broker is
    configured or ``Q_CLUSTER`` is broken (the system checks say why)."""
    try:
        broker = project_pipeline().broker
    except QhiveError:
        return None
    return broker.alias if isinstance(broker, OrmBroker) else None


def _pipeline_of(queue: str) -> Any:
    """The pipeline of the cluster consuming ``queue``; ConfigError when there is none."""
    root = project_pipeline()
    return root if queue == root.config.queue else project_pipeline(queue)


def _known_queues() -> str:
    try:
        return ", ".join(repr(name) for name in project_pipeline().config.cluster_names)
    except ConfigError as exc:
        return f"none (Q_CLUSTER is invalid: {exc})"


def _decode(queued: QueuedTask) -> dict[str, Any] | str:
    note = ""
    try:
        try:
            codec = _pipeline_of(queued.queue).codec
        except ConfigError:
            # The project name (the signing salt) is shared by every cluster: the
            # default cluster's codec reads the package if only the queue is unknown.
            codec = project_pipeline().codec
            note = (f" (no cluster of these settings consumes queue {queued.queue!r}; "
                    f"tried the default cluster's codec)")
        task = codec.decode(bytes(queued.payload or b""))
    except BadSignature as exc:
        return f"cannot decode: {exc}{note}"
    except Exception as exc:  # a bad format, another serializer, a missing class, a bad config
        return f"cannot decode: {type(exc).__name__}: {exc}{note}"
    if not isinstance(task, dict) or "func" not in task:
        return f"cannot decode: the package holds a {type(task).__name__}, not a task"
    return task


def decode_payload(queued: QueuedTask) -> dict[str, Any] | str:
    """The task dict in ``queued``'s payload, or ``"cannot decode: <reason>"``.

    Kept on the instance, so that the columns of one row share one decode.
    """
    decoded = queued.__dict__.get(_DECODED)
    if decoded is None:
        decoded = queued.__dict__[_DECODED] = _decode(queued)
    return decoded


def _pre(value: Any) -> str:
    try:
        text = pprint.pformat(value, width=100)
    except Exception as exc:  # a value whose repr() raises still gets a page
        text = f"<{type(value).__name__} object; repr() failed: {exc}>"
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


# --------------------------------------------------------------------------- the form


class QueuedTaskForm(forms.ModelForm):
    """``queue`` and ``visible_at``; a new queue must be one a cluster of these
    settings consumes, and that cluster must be able to read the package."""

    class Meta:
        model = QueuedTask
        fields = ("queue", "visible_at")

    def clean_queue(self) -> str:
        queue = self.cleaned_data["queue"]
        if queue == self.instance.queue:
            return queue
        try:
            pipeline = _pipeline_of(queue)
        except ConfigError:
            raise forms.ValidationError(
                f"No cluster of these settings consumes queue {queue!r}, so the task would "
                f"never run. Queues: {_known_queues()} (Q_CLUSTER['name'] and the keys of "
                f"Q_CLUSTER['ALT_CLUSTERS'])."
            ) from None
        try:
            pipeline.codec.decode(bytes(self.instance.payload or b""))
        except Exception as exc:
            raise forms.ValidationError(
                f"Cluster {queue!r} cannot read this task's package ({exc}); it would fail "
                f"there. Leave it in queue {self.instance.queue!r}."
            ) from None
        return queue


# --------------------------------------------------------------------------- the admin


@admin.register(QueuedTask)
class QueueAdmin(admin.ModelAdmin):
    """The ORM broker's queue (Django Q2's name for this admin)."""

    form = QueuedTaskForm
    list_display = ("id", "queue", "task_name", "func", "group", "task_id", "priority", "lock",
                    "deliveries", "in_flight")
    list_filter = ("queue",)
    ordering = ("-priority", "visible_at", "id")  # the order clusters take them
    fields = ("id", "queue", "priority", "visible_at", "deliveries", "in_flight", "created",
              "task_id", "task_name", "func", "group", "task_args", "task_kwargs", "q_options",
              "payload_size")
    readonly_fields = ("id", "priority", "deliveries", "in_flight", "created", "task_id",
                       "task_name", "func", "group", "task_args", "task_kwargs", "q_options",
                       "payload_size")

    def get_queryset(self, request: HttpRequest) -> Any:
        queryset = super().get_queryset(request)
        database = queue_database()
        return queryset.using(database) if database else queryset

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tasks are queued with async_task(), which signs them

    # -- saving only what changed

    def save_model(self, request: HttpRequest, obj: QueuedTask, form: Any, change: bool) -> None:
        changed = {name: form.cleaned_data[name] for name in ("queue", "visible_at")
                   if name in form.changed_data}
        if not changed:
            return
        database = obj._state.db
        updated = QueuedTask.objects.using(database).filter(pk=obj.pk).update(**changed)
        if not updated:
            setattr(obj, _GONE, True)
            return
        connection = connections[database]
        # Wake the clusters waiting on the queue (PostgreSQL). No ORM broker runs on a
        # database without a dialect: nobody waits there.
        if (dialect := DIALECTS.get(connection.vendor)) is not None:
            dialect.wake(connection, obj.queue)

    def log_change(self, request: HttpRequest, obj: QueuedTask, message: Any) -> Any:
        if getattr(obj, _GONE, False):
            return None
        return super().log_change(request, obj, message)

    def response_change(self, request: HttpRequest, obj: QueuedTask) -> HttpResponse:
        if getattr(obj, _GONE, False):
            self.message_user(
                request,
                f"Queued task #{obj.pk} is no longer in the queue: a cluster acknowledged it, "
                f"or it was deleted, before your change was saved. Nothing was changed.",
                messages.ERROR)
            return HttpResponseRedirect(
                reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist",
                        current_app=self.admin_site.name))
        return super().response_change(request, obj)

    # -- columns from the package

    @admin.display(description=_("name"))
    def task_name(self, queued: QueuedTask) -> str | None:
        task = decode_payload(queued)
        return task if isinstance(task, str) else task.get("name")

    @admin.display(description=_("func"))
    def func(self, queued: QueuedTask) -> str | None:
        task = decode_payload(queued)
        return task if isinstance(task, str) else func_name(task["func"])

    @admin.display(description=_("group"))
    def group(self, queued: QueuedTask) -> str | None:
        task = decode_payload(queued)
        return task if isinstance(task, str) else task.get("group")

    @admin.display(description=_("task id"))
    def task_id(self, queued: QueuedTask) -> str | None:
        task = decode_payload(queued)
        return task if isinstance(task, str) else task.get("id")

    @admin.display(description=_("args"))
    def task_args(self, queued: QueuedTask) -> str:
        task = decode_payload(queued)
        return task if isinstance(task, str) else _pre(task.get("args", ()))

    @admin.display(description=_("kwargs"))
    def task_kwargs(self, queued: QueuedTask) -> str:
        task = decode_payload(queued)
        return task if isinstance(task, str) else _pre(task.get("kwargs", {}))

    @admin.display(description=_("q_options"))
    def q_options(self, queued: QueuedTask) -> str:
        """The task's options: every key of the package but id, name, group, func, args,
        kwargs and started."""
        task = decode_payload(queued)
        if isinstance(task, str):
            return task
        return _pre({k: v for k, v in task.items() if k not in _SHOWN_KEYS})

    # -- columns of the row

    @admin.display(description=_("lock (visible at)"), ordering="visible_at")
    def lock(self, queued: QueuedTask) -> Any:
        return queued.visible_at

    @admin.display(description=_("in flight"), boolean=True)
    def in_flight(self, queued: QueuedTask) -> bool:
        return queued.in_flight

    @admin.display(description=_("payload size (bytes)"))
    def payload_size(self, queued: QueuedTask) -> int:
        return queued.payload_size

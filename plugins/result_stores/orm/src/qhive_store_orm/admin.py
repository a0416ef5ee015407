"""Django Q2's admin pages of task results: "Successful tasks" and "Failed tasks".

Same columns, filters, search and "Resubmit selected tasks to queue" action as
Django Q2's ``TaskAdmin`` (``Success``) and ``FailAdmin`` (``Failure``); the plain
``Task`` model is not registered. Differences, on purpose:

* A task's page is a read-only view, without a Save button: saving would encode
  the values again, and a value that failed verification would be overwritten
  by its placeholder.
* The lists do not load ``args`` and ``kwargs`` (nor a success's ``result``):
  a page costs the same few queries whatever its length, and no row is decoded
  for a column the list does not show.
* A failure's "short result" is its error (``ValueError: boom``), not the first
  100 characters of ``Traceback (most recent call last):``.
* Resubmitting passes the options in ``q_options``, so a function keyword named
  like an option (``group``, ``timeout``, ...) reaches the function; a failure
  is deleted only once its task is queued again; a task that cannot be queued
  is reported and kept; a task of a cluster these settings do not know goes to
  the default cluster, with a warning.
* The pages read the result store's database (``result_store_options =
  {"database": ...}``), not only the one Django's router picks.
"""

from __future__ import annotations

import logging
import pprint
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_permission_codename
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from qhive.errors import ConfigError, QhiveError
from qhive.plugins import project_pipeline
from qhive.task import OPTION_KEYS, split_options

from qhive_store_orm.codec import UnreadableValue
from qhive_store_orm.models import Failure, Success, Task
from qhive_store_orm.store import OrmResultStore

__all__ = ["FailAdmin", "TaskAdmin", "error_line", "resubmit_task", "results_database"]

logger = logging.getLogger("qhive.store.orm")

#: Characters of a failure's error shown in the list (as in Django Q2).
SHORT_RESULT_LENGTH = 100


class CannotResubmit(Exception):
    """A task that cannot be queued again as it is stored; the message says why."""


# --------------------------------------------------------------------------- helpers


def results_database() -> str | None:
    """The database the root cluster's ORM result store reads and writes, or None when
    another store is configured or ``Q_CLUSTER`` is broken (the system checks say why)."""
    try:
        store = project_pipeline().result_store
    except QhiveError:
        return None
    return store.alias if isinstance(store, OrmResultStore) else None


def error_line(text: str) -> str:
    """The error of a traceback text — what follows its last frame, e.g.
    ``ValueError: boom`` —, on one line; any other text as it is, on one line."""
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("Traceback (most recent call last)"):
        # Frames and their source lines are indented; the error and its notes are not.
        frames = [i for i, line in enumerate(lines) if line[:1].isspace()]
        if frames and frames[-1] + 1 < len(lines):
            lines = lines[frames[-1] + 1 :]
    return " ".join(line.strip() for line in lines if line.strip())


def _is_dotted_path(func: str) -> bool:
    parts = func.replace(":", ".").split(".")
    return len(parts) >= 2 and all(part.isidentifier() for part in parts)


def _pre(text: str) -> str:
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def _pformat(value: Any) -> str:
    try:
        return pprint.pformat(value, width=100)
    except Exception as exc:  # a value whose repr() raises still gets a page
        return f"<{type(value).__name__} object; repr() failed: {exc}>"


# --------------------------------------------------------------------------- resubmitting


def resubmit_task(task: Task) -> tuple[str, str | None]:
    """Queue ``task``'s function again with its arguments, hook, group and cluster.

    Returns the new task's id and a warning for the user, or None. The options
    travel in ``q_options``: ``async_task`` takes every option keyword out of the
    function's keywords unless ``q_options`` names it, so each option the
    function's keywords collide with is named there too, with its default value.

    :raises CannotResubmit: its values cannot be read, its function is not a
        dotted path, or a keyword cannot be passed by ``async_task``.
    :raises Exception: whatever ``async_task`` raises (the broker is down, ...).
    """
    for field in ("args", "kwargs"):
        value = getattr(task, field)
        if isinstance(value, UnreadableValue):
            raise CannotResubmit(f"its {field} cannot be read: {value.reason}")
    if not _is_dotted_path(task.func):
        raise CannotResubmit(f"its function {task.func!r} is not a dotted path such as "
                             f"'myapp.tasks.report', so it cannot be found again; queue it "
                             f"from code with async_task()")
    args = tuple(task.args or ())
    kwargs = dict(task.kwargs or {})
    if "q_options" in kwargs:
        raise CannotResubmit("its function takes a keyword argument named 'q_options', which "
                             "async_task() cannot pass to a function; queue it from code")

    warning = None
    cluster = task.cluster or None
    if cluster is not None:
        try:
            project_pipeline(cluster)
        except ConfigError:
            warning = (f"Task {task.name} ran in cluster {cluster!r}, which is neither "
                       f"Q_CLUSTER['name'] nor a key of Q_CLUSTER['ALT_CLUSTERS'] in these "
                       f"settings: it was resubmitted to the default cluster.")
            cluster = None
    pipeline = project_pipeline(cluster)
    options: dict[str, Any] = {"hook": task.hook, "group": task.group}
    for key in OPTION_KEYS:
        if key in kwargs and key not in options:
            # None means "not given" for every option but timeout, where it means "none".
            options[key] = pipeline.config.timeout if key == "timeout" else None
    options, kwargs = split_options({**kwargs, "q_options": options})
    return pipeline.submit(task.func, args, kwargs, options), warning


@admin.action(description=_("Resubmit selected tasks to queue"), permissions=["resubmit"])
def resubmit_tasks(model_admin: _ResultAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """Queue the selected tasks again; delete each resubmitted failure once its task is
    queued (``model_admin.delete_resubmitted``). A task that cannot be queued is
    reported and kept."""
    resubmitted = 0
    for task in queryset.defer(None):  # the list leaves args and kwargs out
        try:
            new_id, warning = resubmit_task(task)
        except CannotResubmit as exc:
            model_admin.message_user(
                request, f"Task {task.name} ({task.id}) was not resubmitted: {exc}",
                messages.ERROR)
            continue
        except Exception as exc:
            logger.warning("resubmitting task %s (%s) from the admin failed", task.name,
                           task.id, exc_info=True)
            model_admin.message_user(
                request, f"Task {task.name} ({task.id}) was not resubmitted: "
                         f"{type(exc).__name__}: {exc}", messages.ERROR)
            continue
        if warning:
            model_admin.message_user(request, warning, messages.WARNING)
        if model_admin.delete_resubmitted:
            # Right after its enqueue: a later error cannot leave a queued task's failure behind.
            Task.objects.using(task._state.db).filter(pk=task.pk, success=False).delete()
        logger.info("task %s (%s) resubmitted from the admin as %s", task.name, task.id, new_id)
        resubmitted += 1
    if resubmitted:
        model_admin.message_user(
            request,
            ngettext("%(count)d task was resubmitted to the queue.",
                     "%(count)d tasks were resubmitted to the queue.",
                     resubmitted) % {"count": resubmitted},
            messages.SUCCESS)


# --------------------------------------------------------------------------- the admins


class _LeanChangeList(ChangeList):
    """The list's rows without the columns it does not show (``list_deferred``):
    decoding each row's arguments would cost more than the page."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
        queryset = super().get_queryset(request, exclude_parameters)
        return queryset.defer(*self.model_admin.list_deferred)


class _ResultAdmin(admin.ModelAdmin):
    """What the two pages share: read-only rows, filters, search, the resubmit action."""

    list_filter = ("group", "cluster")
    search_fields = ("name", "func", "group")
    actions = [resubmit_tasks]
    fields = (
        "id", "name", "func", "hook", "group", "cluster", "started", "stopped", "time_taken",
        "attempt_count", "success", "show_args", "show_kwargs", "show_result",
    )
    readonly_fields = fields
    #: Columns the list does not load.
    list_deferred: tuple[str, ...] = ("args", "kwargs", "result")
    #: Whether resubmitting deletes the task's row (failures: Django Q2 does).
    delete_resubmitted = False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        database = results_database()
        return queryset.using(database) if database else queryset

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return _LeanChangeList

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # results are facts: the page is a view (see the module docs)

    def has_resubmit_permission(self, request: HttpRequest) -> bool:
        """Resubmitting needs the model's "change" permission (a superuser has it)."""
        codename = get_permission_codename("change", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    @admin.display(description=_("args"))
    def show_args(self, task: Task) -> str:
        return _pre(_pformat(task.args))

    @admin.display(description=_("kwargs"))
    def show_kwargs(self, task: Task) -> str:
        return _pre(_pformat(task.kwargs))

    @admin.display(description=_("result"))
    def show_result(self, task: Task) -> str:
        if not task.success and isinstance(task.result, str):
            return _pre(task.result)  # the traceback, as it was printed
        return _pre(_pformat(task.result))


@admin.register(Success)
class TaskAdmin(_ResultAdmin):
    """The successful tasks (Django Q2's name for this admin)."""

    list_display = ("name", "group", "func", "cluster", "started", "stopped", "time_taken")


@admin.register(Failure)
class FailAdmin(_ResultAdmin):
    """The failed tasks; resubmitting one deletes it once it is queued again."""

    list_display = ("name", "group", "func", "cluster", "started", "stopped", "next_attempt",
                    "short_result")
    list_deferred = ("args", "kwargs")
    delete_resubmitted = True
    fields = (
        "id", "name", "func", "hook", "group", "cluster", "started", "stopped", "time_taken",
        "attempt_count", "next_attempt", "success", "show_args", "show_kwargs", "show_result",
    )
    readonly_fields = fields

    @admin.display(description=_("short result"))
    def short_result(self, task: Task) -> str | None:
        """The error, cut to :data:`SHORT_RESULT_LENGTH` characters."""
        result = task.result
        if result is None:
            return None
        text = error_line(result) if isinstance(result, str) else str(result)
        return Truncator(text).chars(SHORT_RESULT_LENGTH)

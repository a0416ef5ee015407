"""Django Q2's "Scheduled tasks" admin page: ``ScheduleAdmin``.

Same columns, filters, search and links as Django Q2, with full add / change /
delete. The form takes ``args`` and ``kwargs`` as JSON or in Django Q2's notation
(``1, 'two'`` and ``x=1``) and refuses with a form error what would only fail at
run time: a bad cron expression, arguments it cannot read, an unknown
``q_options`` key, a cluster these settings do not know.

"Last run" links to the result of the schedule's last task (``Schedule.task``) on
the "Successful tasks" or "Failed tasks" page, and "Success" shows how it ended.
The list gets both without a query per row: when the ``Task`` table is on the
schedules' database the queryset is annotated with the task's name and success
(``Subquery``, as Django Q2 does); when the ORM result store writes to another
database (``result_store_options = {"database": ...}``) one query fetches the
last tasks of the whole page from there.

Successful and failed tasks have their pages in ``qhive_store_orm.admin``, the
ORM broker's queue in ``qhive_broker_orm.admin``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.db import router
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from qhive.errors import ConfigError

from qhive_django.conf import get_config, known_clusters
from qhive_django.models import Schedule, result_link

__all__ = ["ScheduleAdmin", "ScheduleForm"]

#: The app of the ``Task`` model (the ORM result store).
RESULTS_APP = "qhive_store_orm"


def _task_model() -> Any:
    """The ``Task`` model, or None when the ORM result store's app is not installed."""
    if not apps.is_installed(RESULTS_APP):
        return None
    from qhive_store_orm.models import Task

    return Task


def _results_database(task_model: Any) -> str:
    """The database holding the ``Task`` rows the admin shows."""
    from qhive_store_orm.admin import results_database

    return results_database() or router.db_for_read(task_model)


class ScheduleForm(forms.ModelForm):
    """The model's fields; ``cluster`` must be one these settings know."""

    class Meta:
        model = Schedule
        fields = "__all__"

    def clean_cluster(self) -> str | None:
        cluster = self.cleaned_data.get("cluster") or None
        if cluster is None:
            return None
        try:
            get_config(cluster)
        except ConfigError:
            raise forms.ValidationError(
                f"No cluster of these settings is named {cluster!r}, so this schedule would "
                f"never run. Clusters: {known_clusters()} (Q_CLUSTER['name'] and the keys of "
                f"Q_CLUSTER['ALT_CLUSTERS']); leave it empty for the default cluster."
            ) from None
        return cluster


class _ScheduleChangeList(ChangeList):
    """Adds the last tasks of the page in one query when the queryset could not be
    annotated with them (results on another database)."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.model_admin.attach_last_tasks(self.result_list)


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    """The schedules (Django Q2's name for this admin)."""

    form = ScheduleForm
    list_display = ("id", "name", "func", "schedule_type", "repeats", "cluster", "next_run",
                    "last_run", "success")
    list_filter = ("next_run", "schedule_type", "cluster")
    search_fields = ("name", "func")
    list_display_links = ("id", "name")
    readonly_fields = ("last_run", "success")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        task_model = _task_model()
        if task_model is None or _results_database(task_model) != queryset.db:
            return queryset  # attach_last_tasks() fills them in for the page
        last = task_model.objects.filter(pk=OuterRef("task"))
        return queryset.annotate(
            last_task_name=Subquery(last.values("name")[:1]),
            last_task_success=Subquery(last.values("success")[:1]),
        )

    def get_fields(self, request: HttpRequest, obj: Schedule | None = None) -> Any:
        fields = super().get_fields(request, obj)
        if obj is None:  # a new schedule has no last run to show
            return [f for f in fields if f not in self.readonly_fields]
        return fields

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return _ScheduleChangeList

    def attach_last_tasks(self, schedules: Any) -> None:
        """Give each schedule ``last_task_name`` / ``last_task_success`` (None when
        its task is not stored) with one query, unless they are annotated already."""
        schedules = list(schedules)
        task_model = _task_model()
        if (task_model is None or not schedules
                or hasattr(schedules[0], "last_task_name")):
            return
        ids = {s.task for s in schedules if s.task}
        found = dict.fromkeys(ids)
        if ids:
            rows = (task_model.objects.using(_results_database(task_model))
                    .filter(pk__in=ids).values_list("id", "name", "success"))
            found.update((task_id, (name, success)) for task_id, name, success in rows)
        for schedule in schedules:
            name, success = found.get(schedule.task) or (None, None)
            schedule.last_task_name, schedule.last_task_success = name, success

    def _last_task(self, schedule: Schedule) -> tuple[str, bool] | None:
        """(name, success) of the schedule's last task, or None if it is not stored."""
        if not hasattr(schedule, "last_task_name"):  # one schedule's page: one query
            self.attach_last_tasks([schedule])
        if getattr(schedule, "last_task_name", None) is None:
            return None
        return schedule.last_task_name, bool(schedule.last_task_success)

    @admin.display(description=_("last run"))
    def last_run(self, schedule: Schedule) -> str | None:
        """A link to the result of the schedule's last task."""
        last = self._last_task(schedule)
        if last is None:
            return None
        name, success = last
        return result_link(schedule.task, name, success, self.admin_site.name)

    @admin.display(description=_("success"), boolean=True)
    def success(self, schedule: Schedule) -> bool | None:
        """Whether the schedule's last task succeeded (empty: not run, or not stored)."""
        last = self._last_task(schedule)
        return None if last is None else last[1]

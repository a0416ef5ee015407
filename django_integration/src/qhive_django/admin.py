"""Django Q2's "Scheduled tasks" admin page: ``ScheduleAdmin``.

Same columns, filters, search and links as Django Q2, with full add / change /
delete. The form takes ``args`` and ``kwargs`` as JSON or in Django Q2's notation
(``1, 'two'`` and ``x=1``) and refuses with a form error what would only fail at
run time: a bad cron expression, arguments it cannot read, an unknown
``q_options`` key, a cluster these settings do not know.

"Last run" links to the result of the schedule's last task (``Schedule.task``) on
the "Successful tasks" or "Failed tasks" page, and "Success" shows how it ended.
The list gets both without a query per row: the last tasks of the whole page are
read from each schedule's result store in one call
(:meth:`~qhive.contracts.ResultStore.get_many`: one query with the ORM result store,
wherever it writes), through the store's contract, so any result store works.

"Running tasks" lists what the project's clusters run now, from their stats
(:func:`qhive_django.monitor.running`): on which cluster, host and worker, since
when, and the progress each task reported. It reads no table and refreshes itself.

Successful and failed tasks have their pages in ``qhive_store_orm.admin``, the
ORM broker's queue in ``qhive_broker_orm.admin``.
"""

from __future__ import annotations

import logging
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _
from qhive.errors import ConfigError, QhiveError

from qhive_django import monitor
from qhive_django.conf import get_config, known_clusters
from qhive_django.models import RunningTask, Schedule, result_link
from qhive_django.results import records

__all__ = ["RunningTaskAdmin", "ScheduleAdmin", "ScheduleForm"]

logger = logging.getLogger("qhive")


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
    """Adds the last tasks of the page, one read per result store."""

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

    def get_fields(self, request: HttpRequest, obj: Schedule | None = None) -> Any:
        fields = super().get_fields(request, obj)
        if obj is None:  # a new schedule has no last run to show
            return [f for f in fields if f not in self.readonly_fields]
        return fields

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return _ScheduleChangeList

    def attach_last_tasks(self, schedules: Any) -> None:
        """Give each schedule ``last_result`` (None when its task is not stored), with one
        read per result store for all of them."""
        by_store: dict[int, tuple[Any, list[Schedule]]] = {}
        for schedule in schedules:
            store = schedule.result_store()
            by_store.setdefault(id(store), (store, []))[1].append(schedule)
        for store, group in by_store.values():
            try:
                found = store.get_many({s.task for s in group if s.task})
            except Exception:  # the store is down: the page still shows the schedules
                logger.warning("admin: cannot read the last tasks of schedules from %r",
                               store, exc_info=True)
                found = {}
            found = dict(zip(found, records(store, list(found.values())), strict=True))
            for schedule in group:
                schedule.last_result = found.get(schedule.task)

    def _last_task(self, schedule: Schedule) -> Any:
        """The result of the schedule's last task, or None if it is not stored."""
        if not hasattr(schedule, "last_result"):  # one schedule's page: one read
            self.attach_last_tasks([schedule])
        return schedule.last_result

    @admin.display(description=_("last run"))
    def last_run(self, schedule: Schedule) -> str | None:
        """A link to the result of the schedule's last task."""
        last = self._last_task(schedule)
        if last is None:
            return None
        return result_link(last, self.admin_site.name)

    @admin.display(description=_("success"), boolean=True)
    def success(self, schedule: Schedule) -> bool | None:
        """Whether the schedule's last task succeeded (empty: not run, or not stored)."""
        last = self._last_task(schedule)
        return None if last is None else last.success


@admin.register(RunningTask)
class RunningTaskAdmin(admin.ModelAdmin):
    """The tasks running now: a page of its own, not a change list (there is no table)."""

    #: Seconds between the page's own reloads.
    refresh = 5

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest,
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        error, tasks = None, []
        try:
            tasks = monitor.running()
        except (QhiveError, OSError) as exc:  # the page says why instead of a 500
            error = f"Cannot read the clusters' stats: {exc}"
        context = {**self.admin_site.each_context(request), **(extra_context or {}),
                   "title": RunningTask._meta.verbose_name_plural.capitalize(),
                   "opts": RunningTask._meta, "tasks": tasks, "error": error,
                   "refresh": self.refresh}
        return TemplateResponse(request, "admin/qhive_django/running_tasks.html", context)

"""Django Q's ``Task`` model and its ``Success`` / ``Failure`` proxies.

Same fields, method names and semantics as Django Q2 (``django_q.models.Task``),
with three differences:

* ``args``, ``kwargs`` and ``result`` are signed packages of the cluster's
  serializer, not bare pickles (see :mod:`qhive_store_orm.codec`); reading them
  on an instance gives the Python value.
* Lookups by name (``get_result``, ``get_task``) return the newest task of that
  name instead of raising ``MultipleObjectsReturned`` once names collide, and
  accept a :class:`uuid.UUID` as well as its hex string.
* The table has the indexes its queries need (group, name, success + stopped,
  func for ``save_limit_per="func"``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.db import models
from django.db.models import QuerySet
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from qhive.contracts import TaskResult

from qhive_store_orm.fields import SignedValueField

__all__ = ["Failure", "ResultStat", "Success", "Task"]


def _key(task_id: Any) -> str:
    return task_id.hex if isinstance(task_id, uuid.UUID) else str(task_id)


def _aware(value: dt.datetime) -> dt.datetime:
    # USE_TZ = False gives naive datetimes in TIME_ZONE; the core wants aware ones.
    if value is not None and timezone.is_naive(value):
        return timezone.make_aware(value)
    return value


class Task(models.Model):
    """One executed task: its result or, for a failure, the error with its traceback."""

    id = models.CharField(max_length=32, primary_key=True, editable=False)
    name = models.CharField(max_length=100, editable=False)
    func = models.CharField(max_length=256)
    hook = models.CharField(max_length=256, null=True)
    args = SignedValueField(null=True)
    kwargs = SignedValueField(null=True)
    result = SignedValueField(null=True)
    group = models.CharField(max_length=100, editable=False, null=True)
    cluster = models.CharField(max_length=100, default=None, null=True, blank=True)
    started = models.DateTimeField(editable=False)
    stopped = models.DateTimeField(editable=False)
    success = models.BooleanField(default=True, editable=False)
    attempt_count = models.IntegerField(default=0)
    #: A part of an unfinished async_iter: kept whatever save_limit says.
    pinned = models.BooleanField(default=False, editable=False)
    #: A failure that will be tried again (a retry policy with a backoff): about when
    #: the next attempt starts. Null otherwise, and for every success.
    next_attempt = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="For a failure that will be tried again: about when the next attempt "
                  "starts. Empty when no attempt follows.")

    class Meta:
        app_label = "qhive_store_orm"
        db_table = "qhive_task"
        ordering = ["-stopped"]
        indexes = [
            # get_group / count_group / delete_group, save_limit_per="group"
            models.Index(fields=["group", "success", "stopped"], name="qhive_task_group_idx"),
            # lookups by name (newest first), save_limit_per="name"
            models.Index(fields=["name", "stopped"], name="qhive_task_name_idx"),
            # the Success / Failure lists (admin), save_limit pruning
            models.Index(fields=["success", "stopped", "id"], name="qhive_task_success_idx"),
            # save_limit_per="func"
            models.Index(fields=["func", "success", "stopped"], name="qhive_task_func_idx"),
        ]

    # -- lookups (static, as in Django Q)

    @staticmethod
    def get_task(task_id: str | uuid.UUID) -> Task | None:
        """The task with this id (when it is 32 characters and exists), else the
        newest task with this name, else None."""
        key = _key(task_id)
        if len(key) == 32:
            task = Task.objects.filter(id=key).first()
            if task is not None:
                return task
        return Task.objects.filter(name=key).order_by("-stopped", "-id").first()

    @staticmethod
    def get_result(task_id: str | uuid.UUID) -> Any:
        """The result of :meth:`get_task`'s task, or None."""
        key = _key(task_id)
        if len(key) == 32:
            row = Task.objects.filter(id=key).values_list("id", "result").first()
            if row is not None:
                return row[1]
        row = (Task.objects.filter(name=key).order_by("-stopped", "-id")
               .values_list("id", "result").first())
        return None if row is None else row[1]

    @staticmethod
    def get_result_group(group_id: str, failures: bool = False) -> QuerySet:
        """The results of a group, newest first (a flat ``values_list`` queryset);
        successes only unless ``failures``."""
        tasks = Task.objects.filter(group=group_id)
        if not failures:
            tasks = tasks.exclude(success=False)
        return tasks.values_list("result", flat=True)

    @staticmethod
    def get_group_count(group_id: str, failures: bool = False) -> int:
        """Every task of the group, or with ``failures`` only the failed ones."""
        if failures:
            return Failure.objects.filter(group=group_id).count()
        return Task.objects.filter(group=group_id).count()

    @staticmethod
    def delete_group(group_id: str, objects: bool = False) -> Any:
        """Forget a group: with ``objects`` delete its tasks (returns what
        ``QuerySet.delete()`` returns), else only clear their group label (returns
        the number of tasks)."""
        group = Task.objects.filter(group=group_id)
        if objects:
            return group.delete()
        return group.update(group=None)

    @staticmethod
    def get_task_group(group_id: str, failures: bool = True) -> QuerySet:
        """The tasks of a group, newest first; failures too unless ``failures`` is False."""
        tasks = Task.objects.filter(group=group_id)
        if not failures:
            tasks = tasks.exclude(success=False)
        return tasks

    # -- the same, for this task's group (None when it has none)

    def group_result(self, failures: bool = False) -> QuerySet | None:
        if self.group:
            return self.get_result_group(self.group, failures)
        return None

    def group_count(self, failures: bool = False) -> int | None:
        if self.group:
            return self.get_group_count(self.group, failures)
        return None

    def group_delete(self, tasks: bool = False) -> Any:
        if self.group:
            return self.delete_group(self.group, tasks)
        return None

    # -- to and from the core's TaskResult

    @classmethod
    def from_result(cls, result: TaskResult, *, database: str | None = None) -> Task:
        """An instance holding ``result``: unsaved (for hooks that expect a ``Task``), or
        with ``database`` the row the ORM result store read ``result`` from there (no
        query: every column is in ``result``)."""
        task = cls(
            id=result.id, name=result.name, func=result.func, hook=result.hook,
            args=result.args, kwargs=result.kwargs, result=result.result, group=result.group,
            cluster=result.cluster, started=result.started, stopped=result.stopped,
            success=result.success, attempt_count=result.attempt_count, pinned=result.pinned,
            next_attempt=result.next_attempt,
        )
        if database is not None:
            task._state.adding, task._state.db = False, database
        return task

    def admin_url(self, current_app: str | None = None) -> str | None:
        """This task's page among the successful or failed tasks of the admin, or None
        when those pages are not registered."""
        page = "success" if self.success else "failure"
        try:
            return reverse(f"admin:{self._meta.app_label}_{page}_change", args=(self.pk,),
                           current_app=current_app)
        except NoReverseMatch:
            return None

    def to_result(self) -> TaskResult:
        """This task as the core's :class:`~qhive.contracts.TaskResult`."""
        return TaskResult(
            id=self.id, name=self.name, func=self.func, hook=self.hook,
            args=() if self.args is None else self.args,
            kwargs={} if self.kwargs is None else self.kwargs,
            result=self.result, group=self.group, cluster=self.cluster,
            started=_aware(self.started), stopped=_aware(self.stopped),
            success=self.success, attempt_count=self.attempt_count, pinned=self.pinned,
            next_attempt=_aware(self.next_attempt),
        )

    def time_taken(self) -> float:
        """Seconds from enqueue (``started``) to the end of the run (``stopped``)."""
        return (self.stopped - self.started).total_seconds()

    def __str__(self) -> str:
        return f"{self.name or self.id}"


class SuccessManager(models.Manager):
    def get_queryset(self) -> QuerySet:
        return super().get_queryset().filter(success=True)


class FailureManager(models.Manager):
    def get_queryset(self) -> QuerySet:
        return super().get_queryset().filter(success=False)


class Success(Task):
    """The successful tasks."""

    objects = SuccessManager()

    class Meta:
        app_label = "qhive_store_orm"
        proxy = True
        ordering = ["-stopped"]
        verbose_name = "Successful task"
        verbose_name_plural = "Successful tasks"


class Failure(Task):
    """The failed tasks; the ``result`` is the error with its traceback."""

    objects = FailureManager()

    class Meta:
        app_label = "qhive_store_orm"
        proxy = True
        ordering = ["-stopped"]
        verbose_name = "Failed task"
        verbose_name_plural = "Failed tasks"


class ResultStat(models.Model):
    """A cluster statistic kept by the ORM result store (``set_stat`` / ``get_stats``),
    for clusters whose broker keeps none, so that ``qmonitor`` still sees them."""

    key = models.CharField(max_length=255, primary_key=True)
    value = models.BinaryField()
    #: Set and compared by the database's clock: the hosts' clocks do not matter.
    expires = models.DateTimeField(db_index=True)

    class Meta:
        app_label = "qhive_store_orm"
        db_table = "qhive_result_stat"
        verbose_name = "Cluster statistic"
        verbose_name_plural = "Cluster statistics"

    def __str__(self) -> str:
        return self.key

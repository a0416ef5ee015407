"""``Schedule``, and Django Q's other model names, owned by the plugins that store them.

``Task``, ``Success`` and ``Failure`` live in the ORM result store (app
``qhive_store_orm``), ``QueuedTask`` in the ORM broker (app ``qhive_broker_orm``).
They are imported on first access, so that this app also works in a project
that uses other backends, and a missing app is a clear error, not an import
crash during ``django.setup()``.
"""

from __future__ import annotations

import datetime as dt
import importlib
import keyword
import zoneinfo
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connections, models, router, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from qhive.contracts import ResultStore
from qhive.errors import ConfigError
from qhive.task import split_options

from qhive_django import recurrence
from qhive_django.conf import get_config, get_pipeline
from qhive_django.fields import ArgumentsField
from qhive_django.results import as_task

#: name -> (Django app, distribution)
_OWNERS = {
    "Task": ("qhive_store_orm", "qhive-store-orm"),
    "Success": ("qhive_store_orm", "qhive-store-orm"),
    "Failure": ("qhive_store_orm", "qhive-store-orm"),
    "QueuedTask": ("qhive_broker_orm", "qhive-broker-orm"),
}

__all__ = ["Schedule", *_OWNERS]


def __getattr__(name: str) -> Any:
    if name not in _OWNERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app, distribution = _OWNERS[name]
    if not apps.is_installed(app):
        raise ImportError(
            f"qhive_django.models.{name} is the model of the {app!r} app, which is not in "
            f"INSTALLED_APPS: add {app!r} there (pip install {distribution}) and run migrate",
            name=__name__,
        )
    return getattr(importlib.import_module(f"{app}.models"), name)


def validate_cron(value: str) -> None:
    try:
        recurrence.check_cron(value)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid_cron") from exc


def validate_kwarg(value: str) -> None:
    if not value.isidentifier() or keyword.iskeyword(value):
        raise ValidationError(f"{value!r} is not a keyword argument name", code="invalid")


def validate_func(value: str) -> None:
    parts = value.replace(":", ".").split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise ValidationError(f"{value!r} is not a dotted path such as 'myapp.tasks.report'",
                              code="invalid")


#: The PostgreSQL ``NOTIFY`` channel of :func:`schedules_changed`; ORM broker queues
#: notify on ``qhive_<queue>``, so no queue name can collide with it.
SCHEDULES_CHANNEL = "qhive:schedules"


def schedules_changed(using: str | None = None) -> None:
    """Wake the schedulers of running clusters: schedules on database ``using`` changed.

    ``Schedule.save()``, ``delete()`` and ``Schedule.objects``' ``update()``,
    ``delete()`` and ``bulk_create()`` call it; call it after changing schedules
    behind the ORM's back (raw SQL). Once the transaction commits, it increments
    :class:`ScheduleRevision` (which a sleeping scheduler reads every second) and, on
    PostgreSQL, sends ``NOTIFY`` (which a listening scheduler gets at once).
    A failure is logged: the schedulers then see the change at their next look.
    """
    using = using or router.db_for_write(Schedule)
    connection = connections[using]
    if connection.in_atomic_block or connection.get_autocommit():
        transaction.on_commit(lambda: _mark_changed(using), using=using, robust=True)
    else:  # set_autocommit(False): no on_commit; the mark commits with the caller's work
        _mark_changed(using)


def _mark_changed(using: str) -> None:
    revision = ScheduleRevision.objects.using(using).filter(pk=1)
    if not revision.update(revision=F("revision") + 1):
        ScheduleRevision.objects.using(using).get_or_create(pk=1)  # a flushed table
        revision.update(revision=F("revision") + 1)
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [SCHEDULES_CHANNEL])


class ScheduleQuerySet(models.QuerySet):
    """``Schedule.objects``: bulk writes wake the schedulers too (:func:`schedules_changed`)."""

    def update(self, **kwargs: Any) -> int:
        rows = super().update(**kwargs)
        if rows:
            schedules_changed(self._write_db())
        return rows

    def delete(self) -> tuple[int, dict[str, int]]:
        deleted = super().delete()
        if deleted[0]:
            schedules_changed(self._write_db())
        return deleted

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list[Any]:
        created = super().bulk_create(objs, *args, **kwargs)
        if created:
            schedules_changed(self._write_db())
        return created

    def _write_db(self) -> str:
        return self._db or router.db_for_write(self.model)


class ScheduleRevision(models.Model):
    """One row whose ``revision`` every change of the schedules increments: where a
    scheduler cannot ``LISTEN`` (SQLite, MariaDB), it reads it every second to learn
    that a schedule was added, changed or deleted. Incremented after the change
    committed, so a scheduler that sees the new number also sees the change, and
    writers hold the row only for that one statement."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    revision = models.BigIntegerField(default=0)

    class Meta:
        app_label = "qhive_django"
        db_table = "qhive_schedule_revision"


class Schedule(models.Model):
    """A task to run once or repeatedly: Django Q2's ``Schedule``.

    Same fields and type codes, plus ``SECONDS`` (with ``seconds``) for schedules
    more frequent than a minute, and ``anchor``, the slot the calendar counts from
    (see :mod:`qhive_django.recurrence`). ``args`` and ``kwargs`` are stored as
    JSON that keeps tuples, datetimes, decimals ... (not as ``repr`` text);
    ``kwargs`` may hold ``q_options``. ``name`` is unique.

    ``repeats``: ``n > 0`` runs n more times, ``0`` is paused, negative runs for
    ever and counts down (-1, -2, ...: ``-repeats - 1`` runs so far). A ``ONCE``
    schedule with negative ``repeats`` deletes itself after its run.

    Writing schedules wakes the schedulers of running clusters (:func:`schedules_changed`).
    """

    ONCE = recurrence.ONCE
    SECONDS = recurrence.SECONDS
    MINUTES = recurrence.MINUTES
    HOURLY = recurrence.HOURLY
    DAILY = recurrence.DAILY
    WEEKLY = recurrence.WEEKLY
    BIWEEKLY = recurrence.BIWEEKLY
    MONTHLY = recurrence.MONTHLY
    BIMONTHLY = recurrence.BIMONTHLY
    QUARTERLY = recurrence.QUARTERLY
    YEARLY = recurrence.YEARLY
    CRON = recurrence.CRON
    TYPE = (
        (ONCE, _("Once")),
        (SECONDS, _("Seconds")),
        (MINUTES, _("Minutes")),
        (HOURLY, _("Hourly")),
        (DAILY, _("Daily")),
        (WEEKLY, _("Weekly")),
        (BIWEEKLY, _("Biweekly")),
        (MONTHLY, _("Monthly")),
        (BIMONTHLY, _("Bimonthly")),
        (QUARTERLY, _("Quarterly")),
        (YEARLY, _("Yearly")),
        (CRON, _("Cron")),
    )

    objects = ScheduleQuerySet.as_manager()

    name = models.CharField(max_length=100, null=True, blank=True, unique=True)
    func = models.CharField(max_length=256, validators=[validate_func],
                            help_text="e.g. module.tasks.function")
    hook = models.CharField(max_length=256, null=True, blank=True, validators=[validate_func],
                            help_text="e.g. module.tasks.result_function")
    args = ArgumentsField(kind="args", help_text='e.g. [1, "two"] (JSON) or 1, "two"')
    kwargs = ArgumentsField(kind="kwargs",
                            help_text='e.g. {"x": 1, "q_options": {"timeout": 30}} or x=1')
    schedule_type = models.CharField(max_length=2, choices=TYPE, default=ONCE,
                                     verbose_name=_("Schedule Type"))
    minutes = models.PositiveSmallIntegerField(null=True, blank=True,
                                               help_text="Number of minutes for the Minutes type")
    seconds = models.PositiveIntegerField(null=True, blank=True,
                                          help_text="Number of seconds for the Seconds type")
    repeats = models.IntegerField(default=-1, verbose_name=_("Repeats"),
                                  help_text="n = n times, 0 = paused, negative = forever")
    next_run = models.DateTimeField(verbose_name=_("Next Run"), default=timezone.now, null=True)
    anchor = models.DateTimeField(
        null=True, editable=False,
        help_text="The slot the calendar counts from: next_run as last set by hand.")
    cron = models.CharField(max_length=100, null=True, blank=True, validators=[validate_cron],
                            help_text="Cron expression, e.g. '0 22 * * 1-5'")
    task = models.CharField(max_length=100, null=True, editable=False,
                            help_text="Id of the last task this schedule created")
    cluster = models.CharField(max_length=100, default=None, null=True, blank=True,
                               help_text="Run in this cluster (a key of ALT_CLUSTERS)")
    intended_date_kwarg = models.CharField(
        max_length=100, null=True, blank=True, validators=[validate_kwarg],
        verbose_name=_("Intended date kwarg"),
        help_text="Name of a keyword argument that receives the slot's date (ISO 8601)")

    class Meta:
        app_label = "qhive_django"
        db_table = "qhive_schedule"
        verbose_name = _("Scheduled task")
        verbose_name_plural = _("Scheduled tasks")
        ordering = ["next_run"]
        indexes = [models.Index(fields=["next_run", "repeats"], name="qhive_schedule_due_idx")]

    def __str__(self) -> str:
        return self.func

    @classmethod
    def from_db(cls, db: Any, field_names: Any, values: Any, *args: Any,
                **kwargs: Any) -> Schedule:  # Django 6.1 adds fetch_mode
        instance = super().from_db(db, field_names, values, *args, **kwargs)
        instance._loaded_next_run = instance.__dict__.get("next_run")
        return instance

    def refresh_from_db(self, *args: Any, **kwargs: Any) -> None:
        super().refresh_from_db(*args, **kwargs)
        self._loaded_next_run = self.__dict__.get("next_run")

    # -- the calendar

    def zone(self) -> dt.tzinfo:
        """The time zone of this schedule's calendar: ``time_zone`` of its cluster's
        ``Q_CLUSTER`` settings, else ``TIME_ZONE`` (the zone of naive datetimes too)."""
        try:
            name = get_config(self.cluster).time_zone
        except ConfigError:  # a cluster these settings do not know: the root's zone
            name = get_config().time_zone
        name = name or settings.TIME_ZONE
        return zoneinfo.ZoneInfo(name) if name else dt.UTC

    def slot_after(self, moment: dt.datetime, zone: dt.tzinfo | None = None) -> dt.datetime | None:
        """The first slot after ``moment`` (aware), or None (a ``ONCE`` schedule)."""
        zone = zone or self.zone()
        anchor = self.anchor or self.next_run
        if anchor is None:
            return None
        return _stored(recurrence.slot_after(
            self.schedule_type, _aware(anchor, zone), _aware(moment, zone), zone,
            minutes=self.minutes, seconds=self.seconds, cron=self.cron), zone)

    def calculate_next_run(self, next_run: dt.datetime | None = None) -> dt.datetime | None:
        """The slot after ``next_run`` (default: this schedule's ``next_run``); Django Q2's name."""
        base = next_run or self.next_run
        return None if base is None else self.slot_after(base)

    # -- validation and saving

    def clean(self) -> None:
        super().clean()
        if self.schedule_type == self.CRON and not self.cron:
            raise ValidationError({"cron": "a Cron schedule needs a cron expression"})
        if self.schedule_type == self.SECONDS and not self.seconds:
            raise ValidationError({"seconds": "a Seconds schedule needs a number of seconds"})
        if self.schedule_type == self.MINUTES and self.minutes == 0:
            raise ValidationError({"minutes": "a Minutes schedule needs at least 1 minute"})
        try:
            split_options(self.kwargs or {})
        except TypeError as exc:
            raise ValidationError({"kwargs": str(exc)}) from exc

    def save(self, *args: Any, **kwargs: Any) -> None:
        # A next_run set by hand (or a new schedule) restarts the calendar from it;
        # a cron schedule starts at the expression's first time from then on.
        if self.next_run is not None and (
                self.pk is None or self.next_run != getattr(self, "_loaded_next_run", None)
                or self.anchor is None):
            self.anchor = self.next_run
            if self.schedule_type == self.CRON and self.cron:
                self.next_run = self.slot_after(self.next_run - dt.timedelta(microseconds=1))
        super().save(*args, **kwargs)
        self._loaded_next_run = self.next_run
        schedules_changed(self._state.db)

    def delete(self, using: str | None = None, keep_parents: bool = False) -> tuple[int, dict]:
        using = using or router.db_for_write(type(self), instance=self)
        deleted = super().delete(using, keep_parents)
        schedules_changed(using)
        return deleted

    # -- the last run

    def success(self) -> bool | None:
        """Whether the last task this schedule created succeeded (None: not known)."""
        task = self._last_task()
        return None if task is None else task.success

    success.boolean = True  # type: ignore[attr-defined]

    def last_run(self) -> str | None:
        """An admin link to the last task this schedule created (ORM result store)."""
        found = self._last_task()
        return None if found is None else result_link(as_task(self.result_store(), found))

    def _last_task(self) -> Any:
        """The result of the last task, from its cluster's result store (or None)."""
        return self.result_store().get(self.task) if self.task else None

    def result_store(self) -> ResultStore:
        """The result store of the schedule's cluster (the root cluster's for a cluster
        these settings do not know)."""
        try:
            return get_pipeline(self.cluster).result_store
        except ConfigError:
            return get_pipeline().result_store


class RunningTask(models.Model):
    """No table: the admin's "Running tasks" page (and its view permission) hangs on
    it. What runs comes from the clusters' stats (:func:`qhive_django.monitor.running`)."""

    class Meta:
        app_label = "qhive_django"
        managed = False
        verbose_name = _("Running task")
        verbose_name_plural = _("Running tasks")
        default_permissions = ("view",)


def result_link(record: Any, current_app: str | None = None) -> str:
    """``[name]`` of a result's record (:mod:`qhive_django.results`), linked to its admin
    page when the record has one (``admin_url()``: the ORM result store's ``Task``)."""
    admin_url = getattr(record, "admin_url", None)
    url = admin_url(current_app) if callable(admin_url) else None
    return format_html('<a href="{}">[{}]</a>', url, record.name) if url else f"[{record.name}]"


def _aware(value: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    # USE_TZ = False stores naive wall-clock times of TIME_ZONE.
    return value if timezone.is_aware(value) else recurrence.localize(value, zone)


def _stored(value: dt.datetime | None, zone: dt.tzinfo) -> dt.datetime | None:
    """A datetime as the database field takes it: aware with USE_TZ, else naive local."""
    if value is None or settings.USE_TZ:
        return value
    return value.astimezone(zone).replace(tzinfo=None)

"""The ORM broker's tables.

The broker reads and writes these tables with raw SQL (one statement per
operation where the database allows it, see :mod:`qhive_broker_orm.broker`);
the models exist for migrations, the admin and ad-hoc queries.
"""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from qhive.contracts import PRIORITY_MAX, PRIORITY_MIN


class QueuedTaskQuerySet(models.QuerySet):
    def of_queue(self, queue: str) -> QueuedTaskQuerySet:
        """The messages of one queue (cluster name)."""
        return self.filter(queue=queue)

    def waiting(self) -> QueuedTaskQuerySet:
        """Messages a cluster may take now."""
        return self.filter(visible_at__lte=timezone.now())

    def in_flight(self) -> QueuedTaskQuerySet:
        """Messages taken by a cluster and not yet acknowledged (or released); as the
        broker's ``lock_size`` counts them, delayed ones never taken are not in flight."""
        return self.filter(visible_at__gt=timezone.now(), deliveries__gt=0)


class QueuedTask(models.Model):
    """One message of the ORM broker: Django Q2's ``OrmQ``.

    ``visible_at`` is Django Q2's ``lock``: the message may be taken once it is
    in the past. Enqueue sets it to now (+ its delay); taking the message sets it
    to now + ``retry``, so a message that is never acknowledged comes back after
    ``retry`` seconds; acknowledging deletes the row. Of the messages that may be
    taken, those of a higher ``priority`` go first.
    """

    id = models.BigAutoField(primary_key=True)
    queue = models.CharField(
        max_length=100, help_text="The queue (cluster name) the task waits in."
    )
    payload = models.BinaryField(help_text="The signed task package, as the cluster enqueued it.")
    visible_at = models.DateTimeField(
        "visible at",
        help_text="When the task may be taken; a taken task is hidden until now + retry.",
    )
    deliveries = models.PositiveIntegerField(
        default=0, help_text="How many times the task has been handed to a cluster."
    )
    created = models.DateTimeField(default=timezone.now, help_text="When the task was enqueued.")
    # db_default: the broker's plain INSERTs leave the column out (and so can a broker
    # of the previous release, during a rolling upgrade).
    priority = models.SmallIntegerField(
        default=0, db_default=0,
        validators=[MinValueValidator(PRIORITY_MIN), MaxValueValidator(PRIORITY_MAX)],
        help_text=f"Of the tasks that may be taken, higher priorities go first "
                  f"({PRIORITY_MIN} to {PRIORITY_MAX}; default 0).",
    )

    objects = QueuedTaskQuerySet.as_manager()

    class Meta:
        db_table = "qhive_queued_task"
        verbose_name = "Queued task"
        verbose_name_plural = "Queued tasks"
        indexes = [
            # The claim: WHERE queue = %s AND visible_at <= now
            # ORDER BY priority DESC, visible_at, id LIMIT n, read in index order; also
            # queue_size / lock_size and the next due time of an idle consumer.
            models.Index(fields=["queue", "-priority", "visible_at", "id"],
                         name="qhive_queued_task_claim_prio"),
        ]

    def __str__(self) -> str:
        return f"{self.queue} #{self.pk}"

    @property
    def in_flight(self) -> bool:
        """Taken by a cluster and not yet acknowledged (hidden until ``visible_at``)."""
        return self.deliveries > 0 and self.visible_at > timezone.now()

    @property
    def payload_size(self) -> int:
        """Size of the signed package in bytes."""
        return len(self.payload or b"")


class BrokerStat(models.Model):
    """A cluster statistic kept by the ORM broker (``set_stat`` / ``get_stats``),
    so that ``qmonitor`` sees every cluster without a shared cache."""

    key = models.CharField(max_length=255, primary_key=True)
    value = models.BinaryField()
    expires = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "qhive_broker_stat"
        verbose_name = "Broker statistic"
        verbose_name_plural = "Broker statistics"

    def __str__(self) -> str:
        return self.key

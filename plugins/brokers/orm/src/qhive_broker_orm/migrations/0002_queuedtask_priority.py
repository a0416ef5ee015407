# Priorities (``Capabilities.priority``): the column, and a claim index that reads
# the highest priority first. The new index is built before the old one is dropped,
# so that claims keep an index while the migration runs.

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('qhive_broker_orm', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='queuedtask',
            name='priority',
            field=models.SmallIntegerField(db_default=0, default=0, help_text='Of the tasks that may be taken, higher priorities go first (-10 to 10; default 0).', validators=[django.core.validators.MinValueValidator(-10), django.core.validators.MaxValueValidator(10)]),
        ),
        migrations.AddIndex(
            model_name='queuedtask',
            index=models.Index(fields=['queue', '-priority', 'visible_at', 'id'], name='qhive_queued_task_claim_prio'),
        ),
        migrations.RemoveIndex(
            model_name='queuedtask',
            name='qhive_queued_task_claim',
        ),
    ]

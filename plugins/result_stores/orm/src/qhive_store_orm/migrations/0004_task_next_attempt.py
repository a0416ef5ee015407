# Written by hand (as makemigrations would) for qhive_store_orm.models.Task.next_attempt.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('qhive_store_orm', '0003_result_stat'),
    ]

    operations = [
        migrations.AddField(
            model_name='task',
            name='next_attempt',
            field=models.DateTimeField(
                blank=True, editable=False, null=True,
                help_text='For a failure that will be tried again: about when the next '
                          'attempt starts. Empty when no attempt follows.'),
        ),
    ]

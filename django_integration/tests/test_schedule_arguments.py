"""A schedule's ``args`` and ``kwargs`` in the text forms Django Q2 users write and
Django Q2 stores, down to the arguments the scheduled task gets."""

import datetime as dt

import pytest
from django.utils import timezone
from qhive_django.conf import get_config, get_pipeline
from qhive_django.tasks import result

T = "qhive_testkit.tasks"


@pytest.fixture(autouse=True)
def no_schedules_left(django_project):
    """The test database lives for the whole session: leave no schedule behind."""
    from qhive_django.models import Schedule

    yield
    for alias in django_project.aliases:
        Schedule.objects.using(alias).all().delete()


@pytest.mark.parametrize(("text", "args"), [
    ("2", (2,)),  # Django Q2: one value is the one argument
    ("'a'", ("a",)),
    ('"a"', ("a",)),
    ("None", (None,)),
    ("(1.5,)", (1.5,)),  # what Django Q2's schedule() stores: str(tuple)
    ("(1, 'two')", (1, "two")),
    ("1, 'two'", (1, "two")),
    ("2,-2", (2, -2)),
    ('[1, "two"]', (1, "two")),  # JSON, as qhive stores and the admin shows them
    ("[]", ()),
])
def test_args_text_means_what_it_means_to_django_q2(text, args):
    from qhive_django.models import Schedule

    item = Schedule(func="math.floor", args=text)
    item.full_clean()
    assert item.args == args
    item.save()
    assert Schedule.objects.get(pk=item.pk).args == args


def test_a_single_value_is_passed_to_the_scheduled_task(q_cluster):
    from qhive_django import scheduler
    from qhive_django.models import Schedule

    q_cluster()
    item = Schedule.objects.create(func=f"{T}.echo", args="2", kwargs='word="django"',
                                   next_run=timezone.now() - dt.timedelta(seconds=1), repeats=1)
    assert scheduler.run_due(get_config()) == (1, set())
    get_pipeline().drain()
    item.refresh_from_db()
    assert result(item.task) == [[2], {"word": "django"}]

"""The "Scheduled tasks" admin page, through Django's test client: every page, the form
(JSON and Django Q2 notation, clear errors), and the last run of each schedule without
a query per row, with the results on the schedules' database or on another one."""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import re
import uuid

import pytest

T = "qhive_testkit.tasks"


@pytest.fixture
def prefix(django_project):
    """A unique prefix for the names of the test's schedules, deleted afterwards."""
    from qhive_django.models import Schedule

    prefix = f"s-{uuid.uuid4().hex[:10]}"
    yield prefix
    Schedule.objects.filter(name__startswith=prefix).delete()


def url(page, *args, model="schedule", app="qhive_django"):
    from django.urls import reverse

    return reverse(f"admin:{app}_{model}_{page}", args=args)


def text_of(response):
    return html.unescape(response.content.decode())


def form_data(name, **changes):
    """What the add form posts for an hourly schedule of ``qhive_testkit.tasks.add``."""
    from django.utils import timezone

    next_run = timezone.localtime(timezone.now() + dt.timedelta(hours=1))
    data = {
        "name": name, "func": f"{T}.add", "hook": "", "args": "", "kwargs": "",
        "schedule_type": "H", "minutes": "", "seconds": "", "repeats": "-1",
        "next_run_0": next_run.strftime("%Y-%m-%d"), "next_run_1": next_run.strftime("%H:%M:%S"),
        "cron": "", "cluster": "", "intended_date_kwarg": "", "_save": "Save",
    }
    data.update(changes)
    return data


# --------------------------------------------------------------------------- pages and form


def test_every_page_answers_and_a_schedule_goes_through_add_change_delete(
        admin_client, q_cluster, prefix):
    from django.utils import timezone
    from qhive_django.models import Schedule

    q = q_cluster(memory=False, ALT_CLUSTERS={"long": {}})
    add = admin_client.get(url("add"))
    assert add.status_code == 200
    assert 'name="args"' in text_of(add) and "Last run" not in text_of(add)

    name = f"{prefix}-hourly"
    # Django Q2's notation for args and kwargs, as pasted from an old project.
    response = admin_client.post(url("add"), form_data(name, args="1, 'two'", kwargs="x=1",
                                                       cluster="long"))
    assert response.status_code == 302, text_of(response)
    schedule = Schedule.objects.get(name=name)
    assert (schedule.args, schedule.kwargs, schedule.cluster) == ((1, "two"), {"x": 1}, "long")

    listing = admin_client.get(url("changelist"), {"q": prefix})
    assert listing.status_code == 200
    text = text_of(listing)
    assert re.search(rf'<a href="{url("change", schedule.pk)}[^"]*">{name}</a>', text)
    assert f"{T}.add" in text and "Hourly" in text
    # "Today" as the date filter's own link gives it, plus a day: next_run is an hour ahead.
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    for filters in ({"schedule_type": "H"}, {"cluster": "long"},
                    {"next_run__gte": str(today), "next_run__lt": str(today + dt.timedelta(2))}):
        filtered = admin_client.get(url("changelist"), {"q": prefix, **filters})
        assert filtered.status_code == 200 and name in text_of(filtered), filters
    other = admin_client.get(url("changelist"), {"q": prefix, "schedule_type": "D"})
    assert other.status_code == 200 and name not in text_of(other)

    change = admin_client.get(url("change", schedule.pk))
    assert change.status_code == 200
    text = text_of(change)
    assert '[1, "two"]</textarea>' in text and '{"x": 1}</textarea>' in text  # shown as JSON

    response = admin_client.post(url("change", schedule.pk),
                                 form_data(name, args='[1, "two"]', kwargs='{"x": 1}',
                                           repeats="5", cluster=q["name"]))
    assert response.status_code == 302, text_of(response)
    schedule.refresh_from_db()
    assert (schedule.repeats, schedule.args, schedule.cluster) == (5, (1, "two"), q["name"])

    delete = admin_client.get(url("delete", schedule.pk))
    assert delete.status_code == 200
    # (Django 6 quotes the name with “ ”, Django 5.2 with " ")
    assert re.search(rf'Are you sure you want to delete the Scheduled task .{T}\.add.\?',
                     text_of(delete))
    assert admin_client.post(url("delete", schedule.pk), {"post": "yes"}).status_code == 302
    assert not Schedule.objects.filter(pk=schedule.pk).exists()


@pytest.mark.parametrize(("changes", "error"), [
    ({"schedule_type": "C", "cron": "every tuesday"},
     "'every tuesday' is not a cron expression croniter accepts"),
    ({"args": "1, ("}, 'args must be JSON (e.g. [1, "two"]) or Django Q notation'),
    ({"kwargs": "x=1, y"}, 'kwargs must be JSON (e.g. {"x": 1}) or Django Q notation'),
    ({"kwargs": '{"q_options": {"timout": 3}}'},
     "unknown q_options key 'timout' — did you mean 'timeout'?"),
    ({"cluster": "nowhere"}, "No cluster of these settings is named 'nowhere'"),
    ({"func": "not a path"}, "'not a path' is not a dotted path"),
])
def test_what_would_fail_at_run_time_is_a_form_error(admin_client, q_cluster, prefix, changes,
                                                     error):
    from qhive_django.models import Schedule

    q_cluster(memory=False)
    response = admin_client.post(url("add"), form_data(f"{prefix}-bad", **changes))
    assert response.status_code == 200
    text = text_of(response)
    assert "Please correct the error below." in text
    assert error in text
    assert not Schedule.objects.filter(name__startswith=prefix).exists()


# --------------------------------------------------------------------------- last run


def test_last_run_links_to_the_result_without_a_query_per_row(admin_client, q_cluster, prefix,
                                                              database):
    """Results on the schedules' database (``default``) or on another one (``postgres``,
    ``mysql``): one query on the results for the whole page, through the store's
    ``get_many``."""
    from django.db import connections
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone
    from qhive_django.models import Schedule
    from qhive_store_orm.models import Task

    q_cluster(memory=False, result_store_options={"database": database})
    made = []

    def schedules(count):
        for _ in range(count):
            index = len(made)
            task_id = uuid.uuid4().hex
            if index % 3 != 2:  # every third schedule's task is not stored (any more)
                now = timezone.now()
                Task.objects.using(database).create(
                    id=task_id, name=f"run-{task_id[:10]}", func=f"{T}.add", args=(1, 2),
                    kwargs={}, result=3 if index % 3 == 0 else "Traceback ...", group=prefix,
                    started=now, stopped=now, success=index % 3 == 0)
            made.append(Schedule.objects.create(
                name=f"{prefix}-{index:02d}", func=f"{T}.add", schedule_type=Schedule.HOURLY,
                task=task_id))

    def queries():
        with contextlib.ExitStack() as stack:
            captured = [stack.enter_context(CaptureQueriesContext(connections[alias]))
                        for alias in {"default", database}]
            response = admin_client.get(url("changelist"), {"q": prefix})
        assert response.status_code == 200
        sql = [q["sql"] for c in captured for q in c.captured_queries]
        return len(sql), sql, text_of(response)

    try:
        schedules(3)
        queries()  # warm up
        few, _, _ = queries()
        schedules(18)
        many, sql, text = queries()
        assert many == few
        on_tasks = [q for q in sql if "qhive_task" in q]
        assert len(on_tasks) == 1 and "qhive_schedule" not in on_tasks[0]

        for index, schedule in enumerate(made):
            row = re.search(rf'<tr>.*?>{schedule.name}</a>.*?</tr>', text, re.S).group(0)
            if index % 3 == 2:
                assert '<td class="field-last_run">-</td>' in row
                assert "icon-unknown.svg" in row
                continue
            page = "success" if index % 3 == 0 else "failure"
            link = url("change", schedule.task, model=page, app="qhive_store_orm")
            assert f'<a href="{link}">[run-{schedule.task[:10]}]</a>' in row
            assert ("icon-yes.svg" if index % 3 == 0 else "icon-no.svg") in row

        # The link leads to the result, on the result store's database.
        first, second = made[0], made[1]
        result = admin_client.get(url("change", first.task, model="success", app="qhive_store_orm"))
        assert result.status_code == 200 and f"run-{first.task[:10]}" in text_of(result)
        # The schedule's own page shows its last run too.
        change = text_of(admin_client.get(url("change", second.pk)))
        link = url("change", second.task, model="failure", app="qhive_store_orm")
        assert f'<a href="{link}">[run-{second.task[:10]}]</a>' in change
    finally:
        Task.objects.using(database).filter(group=prefix).delete()

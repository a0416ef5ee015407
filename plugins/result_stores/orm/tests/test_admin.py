"""The "Successful tasks" and "Failed tasks" admin pages, through Django's test client,
with the ORM broker and result store on each database (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import re
import uuid

import pytest

T = "qhive_testkit.tasks"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def cluster(database):
    """Q_CLUSTER with the ORM broker and store on ``database`` under a unique name, an
    ALT cluster ``<name>-alt`` and an ALT cluster ``<name>-down`` whose broker (Redis on
    a port nobody listens on) is down."""
    from django.test import override_settings
    from qhive_django.conf import get_pipeline

    name = f"t{uuid.uuid4().hex[:12]}"
    q = {
        "name": name, "orm": database, "result_store_options": {"database": database},
        "ALT_CLUSTERS": {
            f"{name}-alt": {},
            f"{name}-down": {"broker": "redis",
                             "broker_options": {"redis": "redis://127.0.0.1:1/0"}},
        },
    }
    with override_settings(Q_CLUSTER=q):
        yield q
        for queue in (None, f"{name}-alt"):
            get_pipeline(queue).broker.purge_queue()


@pytest.fixture
def group(database):
    """A unique group name; its tasks are deleted afterwards."""
    from qhive_store_orm.models import Task

    name = f"g-{uuid.uuid4().hex[:12]}"
    yield name
    Task.objects.using(database).filter(group=name).delete()


def make_task(database, group, *, success=True, func="builtins.dict", args=(), kwargs=None,
              result=None, cluster=None, name=None):
    """A stored task, as the result store would have saved it."""
    from django.utils import timezone
    from qhive_store_orm.models import Task

    task_id = uuid.uuid4().hex
    now = timezone.now()
    return Task.objects.using(database).create(
        id=task_id, name=name or f"task-{task_id[:12]}", func=func, args=args,
        kwargs=kwargs or {}, result=result, group=group, cluster=cluster,
        started=now - dt.timedelta(seconds=2), stopped=now, success=success)


def traceback_of(message):
    return ("Traceback (most recent call last):\n"
            '  File "/app/tasks.py", line 3, in boom\n'
            "    raise ValueError(message)\n"
            f"ValueError: {message}")


def url(page, *args):
    from django.urls import reverse

    return reverse(f"admin:qhive_store_orm_{page}", args=args)


def text_of(response):
    return html.unescape(response.content.decode())


def resubmit(client, page, *tasks):
    return client.post(url(f"{page}_changelist"),
                       {"action": "resubmit_tasks", "_selected_action": [t.pk for t in tasks]},
                       follow=True)


# --------------------------------------------------------------------------- pages


def test_every_page_answers_and_shows_the_tasks(admin_client, cluster, group, database):
    ok = make_task(database, group, args=(1, "two"), kwargs={"x": [3]}, result={"a": 1},
                   cluster=cluster["name"])
    other = make_task(database, group, result=2)
    failed = make_task(database, group, success=False, func=f"{T}.boom",
                       result=traceback_of("it broke " + "x" * 200), cluster=cluster["name"])

    page = admin_client.get(url("success_changelist"), {"group": group})
    assert page.status_code == 200
    text = text_of(page)
    assert ok.name in text and other.name in text and failed.name not in text
    assert "Resubmit selected tasks to queue" in text

    page = admin_client.get(url("failure_changelist"), {"group": group})
    assert page.status_code == 200
    text = text_of(page)
    assert failed.name in text and ok.name not in text
    # The short result is the error, cut to 100 characters, not the traceback's first line.
    assert f"ValueError: it broke {'x' * 60}" in text
    assert "x" * 100 not in text and "Traceback" not in text

    search = admin_client.get(url("success_changelist"), {"q": ok.name})
    assert search.status_code == 200
    assert ok.name in text_of(search) and other.name not in text_of(search)

    by_cluster = admin_client.get(url("success_changelist"),
                                  {"group": group, "cluster": cluster["name"]})
    assert by_cluster.status_code == 200
    assert ok.name in text_of(by_cluster) and other.name not in text_of(by_cluster)

    change = admin_client.get(url("success_change", ok.pk))
    assert change.status_code == 200
    text = text_of(change)
    assert "(1, 'two')" in text and "{'x': [3]}" in text and "{'a': 1}" in text
    assert 'name="_save"' not in text  # a view: results are not edited

    change = admin_client.get(url("failure_change", failed.pk))
    assert change.status_code == 200
    # The traceback as it was printed, in a <pre>.
    assert re.search(r"<pre[^>]*>Traceback \(most recent call last\):\n  File", text_of(change))

    delete = admin_client.get(url("failure_delete", failed.pk))
    assert delete.status_code == 200 and failed.name in text_of(delete)
    assert admin_client.post(url("failure_delete", failed.pk), {"post": "yes"}).status_code == 302
    from qhive_store_orm.models import Task

    assert not Task.objects.using(database).filter(pk=failed.pk).exists()

    assert admin_client.get(url("success_add")).status_code == 403
    assert admin_client.get(url("failure_change", ok.pk)).status_code == 302  # not a failure


def test_a_failure_shows_when_it_is_tried_again(admin_client, cluster, group, database):
    from qhive_store_orm.models import Task

    failed = make_task(database, group, success=False, result=traceback_of("again soon"))
    Task.objects.using(database).filter(pk=failed.pk).update(
        next_attempt=dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    page = admin_client.get(url("failure_changelist"), {"group": group})
    assert page.status_code == 200
    text = text_of(page)
    assert "Next attempt" in text and "2030" in text
    change = admin_client.get(url("failure_change", failed.pk))
    assert change.status_code == 200 and "Next attempt" in text_of(change)
    assert "2030" in text_of(change)


def test_the_lists_cost_the_same_queries_for_2_rows_and_20(admin_client, cluster, group,
                                                          database):
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    def queries(page):
        """Queries of one request, on the sessions' database and the results' one."""
        with contextlib.ExitStack() as stack:
            captured = [stack.enter_context(CaptureQueriesContext(connections[alias]))
                        for alias in {"default", database}]
            response = admin_client.get(url(page), {"group": group})
        assert response.status_code == 200
        return sum(len(c) for c in captured), response

    for page, success in (("success_changelist", True), ("failure_changelist", False)):
        for _ in range(2):
            make_task(database, group, success=success, result=traceback_of("x"),
                      args=(1,), kwargs={"k": 2})
        queries(page)  # warm up (content types, sessions)
        two, _ = queries(page)
        for _ in range(18):
            make_task(database, group, success=success, result=traceback_of("x"))
        twenty, response = queries(page)
        assert text_of(response).count(f"{group}</td>") == 20
        assert twenty == two


def test_unreadable_values_show_why_and_such_tasks_are_not_resubmitted(
        admin_client, cluster, group, database):
    from qhive_store_orm.fields import Encoded
    from qhive_store_orm.models import Task

    tampered = make_task(database, group, success=False, args=Encoded(b"\x01not signed"),
                         result=Encoded(b"\x01not signed either"))
    lost = make_task(database, group, success=False, func="<function parzen at 0x7f>",
                     result=traceback_of("x"))

    page = admin_client.get(url("failure_change", tampered.pk))
    assert page.status_code == 200
    assert "failed signature verification" in text_of(page)
    listing = admin_client.get(url("failure_changelist"), {"group": group})
    assert "failed signature verification" in text_of(listing)

    text = text_of(resubmit(admin_client, "failure", tampered, lost))
    assert f"Task {tampered.name} ({tampered.id}) was not resubmitted: its args cannot be read" \
        in text
    assert f"Task {lost.name} ({lost.id}) was not resubmitted: its function " \
           f"'<function parzen at 0x7f>' is not a dotted path" in text
    assert Task.objects.using(database).filter(pk__in=[tampered.pk, lost.pk]).count() == 2


# --------------------------------------------------------------------------- resubmitting


def test_resubmitting_a_failure_queues_it_again_and_deletes_it(admin_client, cluster, group,
                                                               database):
    from qhive_django.conf import get_pipeline
    from qhive_django.tasks import async_task, queue_size
    from qhive_store_orm.models import Failure

    async_task(f"{T}.boom", "first run", group=group)
    get_pipeline().drain()
    [failure] = Failure.objects.using(database).filter(group=group)
    assert failure.cluster == cluster["name"]

    text = text_of(resubmit(admin_client, "failure", failure))
    assert "1 task was resubmitted to the queue." in text
    assert not Failure.objects.using(database).filter(pk=failure.pk).exists()
    assert queue_size() == 1

    get_pipeline().drain()
    [again] = Failure.objects.using(database).filter(group=group)
    assert again.pk != failure.pk and again.func == f"{T}.boom"
    assert again.args == ("first run",) and again.result.endswith("ValueError: first run")


def test_resubmitting_a_success_keeps_it_and_passes_keywords_named_like_options(
        admin_client, cluster, group, database):
    from qhive_django.conf import get_pipeline
    from qhive_django.tasks import queue_size
    from qhive_store_orm.models import Success

    alt = f"{cluster['name']}-alt"
    # builtins.dict returns its keywords: each must reach the function, none taken as an option.
    keywords = {"group": "the function's", "timeout": 7, "hook": "not.a.hook",
                "task_name": "not-a-name", "save": False}
    done = make_task(database, group, kwargs=keywords, result=keywords, cluster=alt)
    plain = make_task(database, group, func=f"{T}.add", args=(2, 3), result=5)

    text = text_of(resubmit(admin_client, "success", done, plain))
    assert "2 tasks were resubmitted to the queue." in text
    assert Success.objects.using(database).filter(pk__in=[done.pk, plain.pk]).count() == 2
    assert (queue_size(), queue_size(alt)) == (1, 1)  # each to the cluster that ran it

    get_pipeline().drain()
    get_pipeline(alt).drain()
    new = {t.func: t for t in Success.objects.using(database).filter(group=group)
           .exclude(pk__in=[done.pk, plain.pk])}
    assert new["builtins.dict"].result == keywords
    assert new["builtins.dict"].cluster == alt and new["builtins.dict"].name != "not-a-name"
    assert new[f"{T}.add"].result == 5


def test_a_task_of_an_unknown_cluster_goes_to_the_default_one_with_a_warning(
        admin_client, cluster, group, database):
    from qhive_django.tasks import queue_size
    from qhive_store_orm.models import Failure

    failure = make_task(database, group, success=False, func=f"{T}.add", args=(1, 1),
                        result=traceback_of("x"), cluster="a-cluster-long-gone")
    text = text_of(resubmit(admin_client, "failure", failure))
    assert (f"Task {failure.name} ran in cluster 'a-cluster-long-gone', which is neither "
            f"Q_CLUSTER['name'] nor a key of Q_CLUSTER['ALT_CLUSTERS']") in text
    assert "it was resubmitted to the default cluster" in text
    assert "1 task was resubmitted to the queue." in text
    assert queue_size() == 1
    assert not Failure.objects.using(database).filter(pk=failure.pk).exists()


def test_a_task_that_cannot_be_queued_is_reported_and_kept(admin_client, cluster, group,
                                                          database):
    from qhive_django.tasks import queue_size
    from qhive_store_orm.models import Failure

    down = make_task(database, group, success=False, func=f"{T}.add", args=(1, 1),
                     result=traceback_of("x"), cluster=f"{cluster['name']}-down")
    up = make_task(database, group, success=False, func=f"{T}.add", args=(1, 2),
                   result=traceback_of("x"), cluster=cluster["name"])

    text = text_of(resubmit(admin_client, "failure", down, up))
    assert f"Task {down.name} ({down.id}) was not resubmitted: BrokerConnectionError" in text
    assert "1 task was resubmitted to the queue." in text
    assert list(Failure.objects.using(database).filter(group=group)
                .values_list("pk", flat=True)) == [down.pk]
    assert queue_size() == 1


def test_error_line_is_what_follows_the_last_frame():
    from qhive_store_orm.admin import error_line

    assert error_line(traceback_of("boom")) == "ValueError: boom"
    chained = (traceback_of("first") + "\n\nThe above exception was the direct cause of the "
               "following exception:\n\n" + traceback_of("second\nline two"))
    assert error_line(chained) == "ValueError: second line two"
    assert error_line("the worker running this task died (exit code 13)") == \
        "the worker running this task died (exit code 13)"

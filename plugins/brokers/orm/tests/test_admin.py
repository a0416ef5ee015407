"""The "Queued tasks" admin page of the ORM broker, through Django's test client, on each
database (SQLite, PostgreSQL, MariaDB): decoded packages, bad packages, editing."""

from __future__ import annotations

import contextlib
import dataclasses
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
    ALT cluster ``<name>-alt`` and one ``<name>-json`` with the json serializer."""
    from django.test import override_settings
    from qhive_broker_orm.models import QueuedTask
    from qhive_django.conf import get_pipeline

    name = f"t{uuid.uuid4().hex[:12]}"
    alt, json_alt = f"{name}-alt", f"{name}-json"
    q = {"name": name, "orm": database, "result_store_options": {"database": database},
         "ALT_CLUSTERS": {alt: {}, json_alt: {"serializer": "json"}}}
    with override_settings(Q_CLUSTER=q):
        yield q
        get_pipeline().result_store.delete_group(name)
    QueuedTask.objects.using(database).filter(queue__in=[name, alt, json_alt]).delete()


def url(page, *args):
    from django.urls import reverse

    return reverse(f"admin:qhive_broker_orm_queuedtask_{page}", args=args)


def text_of(response):
    return html.unescape(response.content.decode())


def queued(database, task_id):
    """The row of the queued task ``task_id`` (decoded to find it)."""
    from qhive_broker_orm.admin import decode_payload
    from qhive_broker_orm.models import QueuedTask

    [row] = [r for r in QueuedTask.objects.using(database).all()
             if isinstance(decode_payload(r), dict) and decode_payload(r)["id"] == task_id]
    return row


def bad_rows(cluster, database):
    """Three rows no cluster can run: not signed, signed with another secret key, and
    signed but not a task package."""
    from django.utils import timezone
    from qhive.codec import build_codec
    from qhive_broker_orm.models import QueuedTask
    from qhive_django.conf import get_config, get_pipeline

    foreign = build_codec(dataclasses.replace(get_config(), secret_key="another-secret-key"))
    payloads = {
        "not signed": b"pickled bytes",
        "another key": foreign.encode({"id": uuid.uuid4().hex, "func": f"{T}.add"}),
        "not a package": get_pipeline().codec.signer.sign(b"just bytes"),
    }
    return {what: QueuedTask.objects.using(database).create(
        queue=cluster["name"], payload=payload, visible_at=timezone.now())
        for what, payload in payloads.items()}


def edit(client, row, queue, visible_at):
    from django.utils import timezone

    local = timezone.localtime(visible_at)
    return client.post(url("change", row.pk), {
        "queue": queue, "visible_at_0": local.strftime("%Y-%m-%d"),
        "visible_at_1": local.strftime("%H:%M:%S"), "_save": "Save"})


# --------------------------------------------------------------------------- pages


def test_the_pages_show_decoded_tasks_and_why_others_cannot_be_decoded(
        admin_client, cluster, database, monkeypatch):
    from qhive.codec import TaskCodec
    from qhive_django.tasks import async_task

    name = f"answer-{uuid.uuid4().hex[:8]}"
    task_id = async_task(f"{T}.add", 40, 2, task_name=name, group=cluster["name"], timeout=30)
    good = queued(database, task_id)
    bad = bad_rows(cluster, database)

    decodes = []
    original = TaskCodec.decode
    monkeypatch.setattr(TaskCodec, "decode",
                        lambda codec, data: decodes.append(1) or original(codec, data))
    page = admin_client.get(url("changelist"), {"queue": cluster["name"]})
    monkeypatch.undo()
    assert page.status_code == 200
    assert len(decodes) == 4  # one per row, though four columns come from each package
    text = text_of(page)
    assert name in text and f"{T}.add" in text and task_id in text
    assert f'<td class="field-group">{cluster["name"]}</td>' in text
    assert "cannot decode: not a signed qhive package (too short or unknown format)" in text
    assert "cannot decode: signature does not match" in text
    assert "cannot decode: SerializationError: signed data is not a qhive task package" in text

    change = admin_client.get(url("change", good.pk))
    assert change.status_code == 200
    text = text_of(change)
    assert "(40, 2)" in text and "'timeout': 30" in text and 'name="queue"' in text
    for row in bad.values():
        change = admin_client.get(url("change", row.pk))
        assert change.status_code == 200 and "cannot decode: " in text_of(change)

    delete = admin_client.get(url("delete", good.pk))
    assert delete.status_code == 200 and "Are you sure" in text_of(delete)
    assert admin_client.get(url("add")).status_code == 403


def test_the_list_costs_the_same_queries_for_2_rows_and_20(admin_client, cluster, database):
    from django.db import connections
    from django.test.utils import CaptureQueriesContext
    from qhive_django.tasks import async_task

    def queries():
        with contextlib.ExitStack() as stack:
            captured = [stack.enter_context(CaptureQueriesContext(connections[alias]))
                        for alias in {"default", database}]
            response = admin_client.get(url("changelist"), {"queue": cluster["name"]})
        assert response.status_code == 200
        return sum(len(c) for c in captured), response

    for _ in range(2):
        async_task(f"{T}.add", 1, 1)
    queries()  # warm up
    two, _ = queries()
    for _ in range(18):
        async_task(f"{T}.add", 1, 1)
    twenty, response = queries()
    assert text_of(response).count(f'<td class="field-func">{T}.add</td>') == 20
    assert twenty == two


# --------------------------------------------------------------------------- editing


def test_editing_a_queued_task_moves_it_and_makes_it_visible_now(admin_client, cluster,
                                                                 database):
    from django.utils import timezone
    from qhive_django.conf import get_pipeline
    from qhive_django.tasks import async_task, queue_size, result

    alt = f"{cluster['name']}-alt"
    task_id = async_task(f"{T}.add", 40, 2)
    assert len(get_pipeline().broker.dequeue()) == 1  # taken: hidden until now + retry
    row = queued(database, task_id)
    assert row.in_flight and row.deliveries == 1
    listing = text_of(admin_client.get(url("changelist"), {"queue": cluster["name"]}))
    assert re.search(r'<td class="field-in_flight"><img src="[^"]*icon-yes.svg" alt="True">',
                     listing)

    response = edit(admin_client, row, alt, timezone.now() - dt.timedelta(minutes=1))
    assert response.status_code == 302, text_of(response)
    row.refresh_from_db()
    assert (row.queue, row.deliveries, row.in_flight) == (alt, 1, False)
    assert row.visible_at <= timezone.now()

    assert queue_size() == 0 and queue_size(alt) == 1
    assert get_pipeline().drain() == []
    [done] = get_pipeline(alt).drain()
    assert done.id == task_id and result(task_id) == 42


def test_a_task_can_be_hidden_until_later_and_made_visible_again(admin_client, cluster,
                                                                 database):
    from django.utils import timezone
    from qhive_django.conf import get_pipeline
    from qhive_django.tasks import async_task

    task_id = async_task(f"{T}.add", 1, 2)
    row = queued(database, task_id)
    assert edit(admin_client, row, cluster["name"],
                timezone.now() + dt.timedelta(hours=1)).status_code == 302
    assert get_pipeline().broker.dequeue() == []
    assert edit(admin_client, row, cluster["name"], timezone.now()).status_code == 302
    [message] = get_pipeline().broker.dequeue()
    assert message.ack_id == str(row.pk)


def test_a_move_no_cluster_can_run_is_refused(admin_client, cluster, database):
    from qhive_django.tasks import async_task

    row = queued(database, async_task(f"{T}.add", 1, 2))
    before = (row.queue, row.visible_at)

    response = edit(admin_client, row, "nobody-consumes-this", row.visible_at)
    assert response.status_code == 200
    assert ("No cluster of these settings consumes queue 'nobody-consumes-this', so the task "
            "would never run.") in text_of(response)
    name = cluster["name"]
    assert f"Queues: '{name}', '{name}-alt', '{name}-json'" in text_of(response)
    response = edit(admin_client, row, f"{cluster['name']}-json", row.visible_at)
    assert response.status_code == 200
    assert (f"Cluster '{cluster['name']}-json' cannot read this task's package (package was "
            f"serialized with 'pickle'") in text_of(response)
    row.refresh_from_db()
    assert (row.queue, row.visible_at) == before


def test_saving_a_task_acknowledged_meanwhile_does_not_bring_it_back(admin_client, cluster,
                                                                     database):
    from django.utils import timezone
    from qhive_broker_orm.models import QueuedTask
    from qhive_django.conf import get_pipeline
    from qhive_django.tasks import async_task

    row = queued(database, async_task(f"{T}.add", 1, 2))
    assert admin_client.get(url("change", row.pk)).status_code == 200
    get_pipeline().drain()  # a cluster runs and acknowledges it while the form is open

    response = edit(admin_client, row, cluster["name"], timezone.now())
    assert response.status_code == 302
    assert "doesn\u2019t exist. Perhaps it was deleted?" in text_of(admin_client.get(response.url))
    assert not QueuedTask.objects.using(database).filter(pk=row.pk).exists()

    # Acknowledged between the form's read of the row and its write: a plain save()
    # would insert the row again; the admin's UPDATE changes nothing.
    from django.contrib import admin
    from qhive_broker_orm.admin import QueuedTaskForm

    row = queued(database, async_task(f"{T}.add", 1, 2))
    form = QueuedTaskForm({"queue": f"{cluster['name']}-alt", "visible_at": timezone.now()},
                          instance=row)
    assert form.is_valid(), form.errors
    get_pipeline().drain()
    admin.site._registry[QueuedTask].save_model(None, form.instance, form, True)
    assert not QueuedTask.objects.using(database).filter(pk=row.pk).exists()

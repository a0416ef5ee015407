"""manage.py qplugins and qcluster, in subprocesses of the test project where it matters."""

import importlib.util
import io
import json
import os
import signal
import subprocess

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from qhive_django.conf import get_pipeline
from qhive_django.tasks import async_task, queue_size, result

T = "qhive_testkit.tasks"


def test_qplugins_list_json_in_the_project(django_project):
    env = django_project.env({"name": "plugins", "broker": "memory", "result_store": "memory"})
    done = subprocess.run(django_project.manage("qplugins", "list", "--json"), env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(done.stdout)}
    assert rows["broker", "memory"]["selected"] is True
    assert rows["result_store", "memory"]["distribution"] == "qhive"
    assert rows["serializer", "pickle"]["selected"] is True


def test_qplugins_check_uses_the_project_config(q_cluster):
    q_cluster()
    out, err = io.StringIO(), io.StringIO()
    call_command("qplugins", "check", "--kind", "signer", stdout=out, stderr=err)
    assert "hmac" in out.getvalue() and "ok" in out.getvalue()

    q_cluster(broker="memroy")
    with pytest.raises(CommandError) as raised:
        call_command("qplugins", "check", "--kind", "signer", stdout=out, stderr=err)
    assert raised.value.returncode == 1
    assert "unknown broker 'memroy'" in err.getvalue()


def test_qcluster_refuses_an_unknown_cluster_name(q_cluster):
    q_cluster(ALT_CLUSTERS={"long": {}})
    with pytest.raises(CommandError, match=r"unknown cluster 'lnog'.*did you mean 'long'"):
        call_command("qcluster", name="lnog")


needs_cluster = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("qhive.cluster", "qhive_broker_orm",
                                                  "qhive_store_orm")),
    reason="needs the cluster (qhive.cluster) and the ORM broker and result store",
)


@needs_cluster
@pytest.mark.slow
@pytest.mark.parametrize("how", ["--name", "Q_CLUSTER_NAME"])
def test_qcluster_runs_the_named_cluster_only(django_project, q_cluster, how):
    q = q_cluster(memory=False, workers=1, ALT_CLUSTERS={"long": {"workers": 2}})
    root_id = async_task(f"{T}.add", 1, 1)
    # print() as the hook: the saved Task row prints as its name (a TaskResult would not).
    long_id = async_task(f"{T}.add", 2, 2, cluster="long", hook="builtins.print",
                         task_name="hooked-on-long")
    args, extra = (["--name", "long"], {}) if how == "--name" else ([], {"Q_CLUSTER_NAME": "long"})
    cluster = subprocess.Popen(django_project.manage("qcluster", *args),
                               env=django_project.env(q, **extra), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        assert result(long_id, wait=60_000) == 4, "the cluster never ran the task"
        assert (result(root_id), queue_size()) == (None, 1)  # not its queue
    finally:
        os.kill(cluster.pid, signal.SIGTERM)
        output = cluster.communicate(timeout=60)[0]
        get_pipeline().broker.purge_queue()
    assert cluster.returncode == 0, output
    # print() writes the name and its newline apart: another thread's log line may come
    # between the two (seen under load), so the name starts a line rather than fills one.
    assert any(line.startswith("hooked-on-long") for line in output.splitlines()), output


def test_qcluster_refuses_to_start_on_a_failing_check(django_project):
    env = django_project.env({"name": "broken", "broker": "memroy", "result_store": "memory"})
    done = subprocess.run(django_project.manage("qcluster"), env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "qhive.E002" in done.stderr and "did you mean 'memory'" in done.stderr


@needs_cluster
@pytest.mark.slow
def test_qcluster_run_once_starts_and_stops(django_project):
    env = django_project.env({"name": "once", "workers": 1})
    done = subprocess.run(django_project.manage("qcluster", "--run-once"), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

"""``manage.py qplugins`` as an operator runs it (issue 11, item 16): every ``--kind``
it offers, ``--config``, and piped into ``head``."""

import io
import json
import os
import subprocess

from django.core.management import call_command


def test_kind_plugin(q_cluster):
    q_cluster()
    out, err = io.StringIO(), io.StringIO()
    call_command("qplugins", "list", "--kind", "plugin", stdout=out, stderr=err)
    assert out.getvalue().split()[:7] == ["KIND", "NAME", "DISTRIBUTION", "VERSION", "TARGET",
                                          "STATUS", "SELECTED"]


def test_config_option_is_honoured(q_cluster, tmp_path):
    q_cluster()  # the memory broker
    config = tmp_path / "q.json"
    config.write_text(json.dumps({"redis": "redis://127.0.0.1:6379/0"}))
    out = io.StringIO()
    call_command("qplugins", "list", "--json", "--config", str(config), stdout=out)
    rows = {(r["kind"], r["name"]): r["selected"] for r in json.loads(out.getvalue())}
    assert rows["broker", "redis"] is True and rows["broker", "memory"] is False


def test_a_closed_pipe_ends_it_quietly(django_project):
    env = django_project.env({"name": "plugins", "broker": "memory", "result_store": "memory"})
    read, write = os.pipe()
    os.close(read)  # `| head` that has already gone
    try:
        done = subprocess.run(django_project.manage("qplugins", "list", "--json"), env=env,
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == 1

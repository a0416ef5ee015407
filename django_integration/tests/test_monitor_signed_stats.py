"""The monitoring screens show only stats signed with this project's key (issue 11,
item 14): one saved with another ``SECRET_KEY`` or altered after saving is left out
of ``Stat.get``/``Stat.get_all``, ``qinfo``, ``qinfo --ids``, ``qmonitor`` and
``qmemory``, as Django Q2 drops a stat on ``BadSignature``."""

import dataclasses
import io
import os
import re
import socket
import uuid

from django.core.management import call_command
from qhive.cluster.stat import Stat as CoreStat
from qhive.cluster.stat import StatStore
from qhive.codec import build_codec
from qhive_django.conf import get_pipeline
from qhive_django.monitor import Stat


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def saved(q, *, secret_key=None, **fields):
    """A stat saved through the configured broker, signed with the project's key or
    with ``secret_key``."""
    pipeline = get_pipeline()
    config = pipeline.config
    if secret_key is not None:
        config = dataclasses.replace(config, secret_key=secret_key, secret_key_fallbacks=())
    stat = CoreStat(uuid.uuid4().hex, q["name"], socket.gethostname(), os.getpid(), **fields)
    StatStore(pipeline.broker, build_codec(config).signer, q["name"]).save(stat, ttl=60)
    return stat


def test_only_stats_signed_with_the_projects_key_are_shown(q_cluster):
    q = q_cluster()
    good = saved(q, workers=[os.getpid()])
    stranger = saved(q, secret_key="not-the-projects-secret-key")
    forged = saved(q, workers=[1])
    key = CoreStat.key_prefix(q["name"]) + forged.cluster_id
    broker = get_pipeline().broker
    broker.set_stat(key, broker.get_stat(key).replace(b'"workers": [1]', b'"workers": [9]'), 60)

    assert [s.cluster_id for s in Stat.get_all()] == [good.cluster_id]
    assert Stat.get(good.cluster_id).workers == [os.getpid()]
    assert Stat.get(stranger.cluster_id).status == "Stopped"  # Django Q's placeholder
    assert Stat.get(forged.cluster_id).status == "Stopped"
    assert run("qinfo", "--ids").split() == [good.cluster_id]
    assert re.search(r"^Clusters\s+1\s", run("qinfo"), re.M)
    for output in (run("qmonitor", "--run-once"), run("qmemory", "--run-once")):
        assert good.short_id in output
        assert stranger.short_id not in output and forged.short_id not in output

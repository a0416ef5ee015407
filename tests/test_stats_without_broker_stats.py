"""A broker with no place for statistics (a third party's, SQS, IronMQ) does not
hide the running clusters (issue 11, item 18): they keep their statistics in the
result store when it can, and when nothing can, ``qinfo`` says so and why instead
of "Clusters 0".

The broker is ``qhive-broker-sqlitefile`` from tests/fixtures, installed with pip
into a folder that the test's processes put on their path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from qhive import drivers
from qhive_testkit.qcluster import wait_until

FIXTURE = Path(__file__).parent / "fixtures" / "qhive-broker-sqlitefile"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / FIXTURE.name
    shutil.copytree(FIXTURE, source)  # pip builds in the source tree
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True)
    return target


@pytest.fixture
def sqlitefile(site, monkeypatch, fresh_plugins, tmp_path):
    """Q_CLUSTER keys selecting the sqlitefile broker, here and in the processes the
    test starts (they read $PYTHONPATH)."""
    monkeypatch.syspath_prepend(str(site))
    path = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    monkeypatch.setenv("PYTHONPATH", path)
    drivers.reset_caches()
    return {"broker": "sqlitefile", "broker_options": {"path": str(tmp_path / "queue.db")}}


def manage(django_project, q: dict, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(django_project.manage(*args), env=django_project.env(q),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_a_cluster_on_a_broker_without_stats_shows_up(sqlitefile, cluster_settings, qcluster,
                                                      django_project):
    from qhive_django.monitor import Stat

    q = cluster_settings(**sqlitefile, result_store="orm")
    cluster = qcluster(q)

    stats = wait_until(Stat.get_all, within=60, what="the cluster's statistics")
    assert [s.pid for s in stats] == [cluster.pid]
    summary = manage(django_project, q, "qinfo").stdout
    assert re.search(r"^Clusters\s+1\s+Workers\s+2\s", summary, re.M), summary
    assert "keeps its statistics in the result store (OrmResultStore" in cluster.log()
    assert cluster.stop() == 0


@pytest.mark.slow
def test_when_no_statistics_can_be_kept_qinfo_says_why(sqlitefile, cluster_settings,
                                                      django_project):
    # Django's default cache is a LocMem cache: each process has its own.
    q = cluster_settings(**sqlitefile, result_store="cache", result_store_options={})
    done = manage(django_project, q, "qinfo")
    assert re.search(r"^Clusters\s+-\s", done.stdout, re.M), done.stdout
    said = " ".join(done.stdout.split())
    assert "No cluster statistics can be kept: the broker (SqliteFileBroker)" in said, said
    assert "the result store (CacheResultStore) cannot keep them" in said, said
    screen = " ".join(manage(django_project, q, "qmonitor", "--run-once").stdout.split())
    assert "No cluster statistics can be kept" in screen, screen
    ids = manage(django_project, q, "qinfo", "--ids")
    assert ids.stdout == "No clusters appear to be running.\n"
    assert "no cluster statistics can be kept" in ids.stderr

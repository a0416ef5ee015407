"""Fixtures of the plugin's tests: ``/metrics`` read over HTTP and parsed with
prometheus_client's own parser. ``cluster_settings`` and ``qcluster`` (real ``manage.py
qcluster`` processes, the ORM broker and result store on the test project's SQLite
database) are the testkit's."""

from __future__ import annotations

import os
import re
import socket
import urllib.request
from pathlib import Path

import psutil
import pytest
from qhive_testkit.qcluster import QCluster

HERE = Path(__file__).resolve().parent
SERVING = re.compile(r"serving Prometheus metrics on (http://\S+/metrics)")


@pytest.fixture(autouse=True)
def gate_importable(monkeypatch):
    """Clusters started by the testkit's ``qcluster`` fixture can import
    :mod:`prometheus_gate` (they inherit this process's PYTHONPATH)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))


@pytest.fixture
def busy_port():
    """A port something else listens on (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _metrics_url(cluster: QCluster) -> str:
    found = SERVING.findall(cluster.log())
    assert len(found) == 1, cluster.log()
    return found[0]


class Scrape(dict):
    """One read of ``/metrics``: ``(sample name, labels) -> value``."""

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(v for (n, ls), v in self.items()
                   if n == name and labels.items() <= dict(ls).items())

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self)


def _scrape(url: str) -> Scrape:
    # the test extra's parser of the exposition format, as a Prometheus server reads it
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        text = response.read().decode()
    out = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _listening_ports(pid: int) -> set[int]:
    return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN}


# Helpers as fixtures: test modules are imported by path, they cannot import this one.


@pytest.fixture
def metrics_url():
    """``metrics_url(cluster)``: the URL the cluster logged (its port 0 chosen by the
    system); fails unless it logged exactly one."""
    return _metrics_url


@pytest.fixture
def scrape():
    """``scrape(url)``: one read of ``/metrics`` over HTTP, parsed (a :class:`Scrape`)."""
    return _scrape


@pytest.fixture
def listening_ports():
    """``listening_ports(pid)``: the TCP ports process ``pid`` listens on."""
    return _listening_ports

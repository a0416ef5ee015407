"""Real ``manage.py qcluster`` processes for end-to-end tests.

:class:`QCluster` starts one in a :class:`~qhive_testkit.django_project.DjangoProject`
with the ``Q_CLUSTER`` a test chooses, keeps its log and stops it by pid::

    cluster = QCluster(django_project, {"name": "e2e-1", "workers": 2}, tmp_path / "q.log")
    cluster.wait_for_log("running (pid")
    ...
    assert cluster.stop() == 0

As a pytest plugin (``-p qhive_testkit.qcluster``) it gives the fixtures
``cluster_settings`` (a ``Q_CLUSTER`` of the test's own, applied on the test's side too)
and ``qcluster`` (running clusters, killed at the end of the test).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from qhive.cluster import Stat
from qhive.config import LEGACY_BROKER_KEYS

T = TypeVar("T")

#: Q_CLUSTER keys that choose a broker.
BROKER_KEYS = {"broker", *LEGACY_BROKER_KEYS}


class QCluster:
    """A ``manage.py qcluster`` subprocess and its log.

    :param project: the test project (its settings read ``Q_CLUSTER`` from the env).
    :param q_cluster: the cluster's ``Q_CLUSTER``.
    :param log: file that receives the cluster's stdout and stderr.
    :param args: more arguments of ``qcluster`` (``"--name", "long"``).
    :param env: more environment variables (``QHIVE_TEST_CACHES``).
    :param manage: the argv that runs a management command (default:
        ``python -m django``); ``qcluster`` and ``args`` follow it.

    The cluster runs in a process group of its own, as under a service manager:
    :meth:`signal_group` signals all of it, as systemd or Kubernetes do.
    """

    def __init__(self, project: Any, q_cluster: dict, log: Path, *args: str,
                 env: dict[str, str] | None = None, manage: list[str] | None = None) -> None:
        self.log_path = log
        self.q_cluster = q_cluster
        argv = [*manage, "qcluster", *args] if manage else project.manage("qcluster", *args)
        with log.open("w") as out:
            self.process = subprocess.Popen(
                argv, env=project.env(q_cluster, **(env or {})),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, text: str, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while text not in self.log():
            if self.process.poll() is not None:
                pytest.fail(f"qcluster exited ({self.process.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} not in the qcluster log after {within} s:\n{self.log()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, within: float = 60.0) -> int:
        """Send ``sig`` and wait for the exit code (SIGKILL after ``within`` s, failing)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait(within)

    def wait(self, within: float = 60.0) -> int:
        """The exit code, once the cluster exits (SIGKILL after ``within`` s, failing)."""
        try:
            return self.process.wait(within)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"qcluster did not stop within {within} s:\n{self.log()}")

    def signal_group(self, sig: int = signal.SIGTERM, within: float = 60.0) -> int:
        """Send ``sig`` to the cluster's whole process group; wait for the exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        return self.wait(within)

    def kill(self) -> None:
        """``kill -9`` the sentinel and every worker of this cluster, as a crash would."""
        workers = []
        stat = self.stat()
        if stat is not None:
            workers = stat.workers
        self.process.kill()
        self.process.wait()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stat(self, cluster: str | None = None):
        """This cluster's :class:`qhive.cluster.Stat` (the newest of its project), or None."""
        # qhive-django is the testkit's [django] extra: only Django tests need it
        from qhive_django.conf import get_pipeline

        stats = Stat.store_for(get_pipeline(cluster)).get_all()
        mine = [s for s in stats if s.pid == self.process.pid]
        return mine[0] if mine else None


def wait_until(condition: Callable[[], T], within: float = 120.0,
               what: str = "condition") -> T:
    """``condition()`` once it is truthy; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {within} s")
        time.sleep(0.1)
    return value


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def cluster_settings(django_project):
    """``cluster_settings(database="default", caches=None, **settings)``: apply
    ``Q_CLUSTER`` (and ``CACHES``) for this test on the test's side and return the
    ``Q_CLUSTER`` dict for :func:`qcluster`. Each call gets its own ``name``: its
    own queue and results. Results go to ``database``, and so does the queue
    unless ``settings`` choose another broker. Short cycles (``guard_cycle`` 0.2 s,
    ``poll`` 50 ms), two workers and no pruning unless ``settings`` say otherwise."""
    # Django on use: the fixture's project set it up
    from django.test import override_settings

    overrides = []

    def apply(database: str = "default", caches: dict | None = None, **settings) -> dict:
        q = {"name": f"e2e{uuid.uuid4().hex[:10]}",
             "result_store_options": {"database": database}, "workers": 2, "save_limit": 0,
             "guard_cycle": 0.2, "poll": 0.05, **settings}
        if not BROKER_KEYS & set(settings):  # the ORM broker, on the same database
            q["orm"] = database
        override = override_settings(Q_CLUSTER=q, **({"CACHES": caches} if caches else {}))
        override.enable()
        overrides.append(override)
        return q

    yield apply
    for override in reversed(overrides):
        override.disable()


@pytest.fixture
def qcluster(django_project, tmp_path):
    """``qcluster(q_cluster, *args, caches=None, env=None, wait=True)``: a running
    ``manage.py qcluster`` (``args`` such as ``"--name", "long"``) that has saved its first
    stat (unless not ``wait``); every one still running at the end of the test is killed."""
    started = []

    def start(q_cluster: dict, *args: str, caches: dict | None = None,
              env: dict[str, str] | None = None, wait: bool = True) -> QCluster:
        env = {**(env or {}), **({"QHIVE_TEST_CACHES": json.dumps(caches)} if caches else {})}
        cluster = QCluster(django_project, q_cluster,
                           tmp_path / f"qcluster{len(started)}.log", *args, env=env)
        started.append(cluster)
        if wait:
            cluster.wait_for_log("running (pid")  # logged once the first stat is saved
        return cluster

    yield start
    for cluster in started:
        if cluster.process.poll() is None:
            cluster.signal_group(signal.SIGKILL)  # its workers too

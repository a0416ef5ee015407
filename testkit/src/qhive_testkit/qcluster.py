"""Real ``manage.py qcluster`` processes for end-to-end tests.

:class:`QCluster` starts one in a :class:`~qhive_testkit.django_project.DjangoProject`
with the ``Q_CLUSTER`` a test chooses, keeps its log and stops it by pid::

    cluster = QCluster(django_project, {"name": "e2e-1", "workers": 2}, tmp_path / "q.log")
    cluster.wait_for_log("running (pid")
    ...
    assert cluster.stop() == 0
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from qhive.cluster import Stat

T = TypeVar("T")


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

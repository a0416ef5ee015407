"""``qmonitor``, ``qinfo`` and ``qmemory`` against a real ``manage.py qcluster``.

``qmonitor`` runs full-screen in a terminal of its own: a detached tmux session on
a tmux server of the test's own (``tmux -L``), read with ``capture-pane`` and
driven with ``send-keys``. Once with the ORM broker on SQLite and no shared
Django cache (Django Q's monitor shows nothing then; qhive keeps stats in the
broker), once with Redis.
"""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
import time
import uuid

import pytest
from qhive_testkit.qcluster import wait_until
from qhive_testkit.services import redis_url, require

#: What the shell prints in the pane once qmonitor has exited.
EXITED = "[qmonitor exited with "
#: Settings of the test project the commands must not print.
SECRET_KEY = "qhive-test-secret-key"


class Tmux:
    """A tmux server of this test only (its own socket), holding one session."""

    def __init__(self) -> None:
        self.socket = f"qhive-test-{uuid.uuid4().hex[:10]}"
        self.session = f"qmonitor-{uuid.uuid4().hex[:10]}"

    def run(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], env=env, capture_output=True,
                              text=True, timeout=30)
        if done.returncode:
            raise AssertionError(f"tmux {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def start(self, argv: list[str], env: dict[str, str], *, width: int = 150,
              height: int = 40) -> None:
        """Run ``argv`` in a new ``width`` x ``height`` terminal. The shell then prints
        the exit code and waits, so that the pane outlives the command; it survives
        Ctrl-C (a trap with a command, which the command itself does not inherit)."""
        env = {k: v for k, v in env.items() if k != "TMUX"}  # not nested in the caller's
        wanted = ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "QHIVE_TEST_Q_CLUSTER")
        # The server inherits env when it starts; named again in case it did not.
        command = shlex.join(["env", *(f"{k}={env[k]}" for k in wanted if k in env), *argv])
        shell = f'trap true INT; {command}; echo "{EXITED}$?]"; sleep 300'
        self.run("new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height),
                 shell, env=env)

    def close(self) -> None:
        """End the session (its shell and whatever still runs in it)."""
        self.run("kill-session", "-t", self.session)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session)

    def send(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=30)


@pytest.fixture
def tmux():
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    terminal = Tmux()
    try:
        yield terminal
    finally:
        terminal.kill()  # whatever happened, no qmonitor is left behind


def wait_for_screen(tmux: Tmux, found, within: float, what: str):
    """``found(screen)`` once truthy; fail with the last screen after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        screen = tmux.screen()
        value = found(screen)
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not on the screen within {within} s; the screen:\n{screen}")
        time.sleep(0.2)


def row(screen: str, short_id: str) -> list[str] | None:
    """The cells of the line that shows the cluster ``short_id``, or None."""
    for line in screen.splitlines():
        cells = line.split()
        if len(cells) > 1 and cells[1] == short_id:
            return cells
    return None


def run_command(django_project, q: dict, *args: str) -> str:
    done = subprocess.run(django_project.manage(*args), env=django_project.env(q),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["orm-sqlite", "redis"])
def test_monitoring_commands_see_a_running_cluster(broker, cluster_settings, qcluster,
                                                    django_project, tmux):
    if broker == "redis":
        require("redis")
        q = cluster_settings(redis=redis_url(), workers=3)
    else:  # the ORM broker on SQLite; CACHES is Django's default, a per-process LocMem
        q = cluster_settings(workers=3)
    cluster = qcluster(q)
    stat = wait_until(cluster.stat, within=60, what="the cluster's statistics")

    tmux.start(django_project.manage("qmonitor"), django_project.env(q))
    cells = wait_for_screen(tmux, lambda screen: row(screen, stat.short_id), within=90,
                            what="the cluster's row")
    screen = tmux.screen()
    assert cells[0] == socket.gethostname() == stat.host
    assert (cells[2], cells[3], cells[4]) == (q["name"], "Idle", "3"), screen
    assert re.fullmatch(r"\d+:\d\d:\d\d", cells[-1]), screen
    assert "[Press q to quit]" in screen and "Queued" in screen, screen
    tmux.send("q")
    wait_for_screen(tmux, lambda screen: EXITED in screen, within=30, what="qmonitor's exit")
    assert f"{EXITED}0]" in tmux.screen()

    tmux.close()  # again, and quit with Ctrl-C this time
    tmux.start(django_project.manage("qmonitor"), django_project.env(q))
    wait_for_screen(tmux, lambda screen: row(screen, stat.short_id), within=90,
                    what="the cluster's row")
    tmux.send("C-c")
    wait_for_screen(tmux, lambda screen: EXITED in screen, within=30, what="qmonitor's exit")
    assert f"{EXITED}0]" in tmux.screen()
    assert "Traceback" not in tmux.screen()

    summary = run_command(django_project, q, "qinfo")
    assert re.search(r"^Clusters\s+1\s+Workers\s+3\s+Restarts\s+0\s*$", summary, re.M), summary
    assert summary.startswith(f"-- {q['name']} qhive "), summary
    ids = run_command(django_project, q, "qinfo", "--ids")
    assert ids.split() == [stat.cluster_id]
    config = run_command(django_project, q, "qinfo", "--config")
    assert f"name: {q['name']}" in config.splitlines() and "workers: 3" in config.splitlines()
    assert SECRET_KEY not in config and SECRET_KEY not in summary

    memory = run_command(django_project, q, "qmemory", "--run-once", "--workers")
    cells = row(memory, stat.short_id)
    assert cells is not None, memory
    # Available %, MB, total, sentinel, zygote, workers, then each of the 3 workers:
    # every process of the cluster is on this host, so all are measured.
    assert all(re.fullmatch(r"\d+\.\d\d", c) for c in cells[2:]), memory
    assert len(cells) == 2 + 6 + 3, memory

    assert cluster.stop() == 0

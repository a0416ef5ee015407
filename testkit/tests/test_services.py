"""The helpers every test server of the kit starts and stops with
(``qhive_testkit.services``), on real processes: what a test sees when a server does
not come up, that a stop ends even a process deaf to SIGTERM, and skip-or-fail."""

from __future__ import annotations

import subprocess
import sys

import pytest
from qhive_testkit.services import free_port, stop_process, unavailable, wait_until_up


def test_a_server_that_exits_at_start_fails_the_test_with_its_log(tmp_path):
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys; print('bad option --frobnicate'); sys.exit(3)"],
            stdout=out, stderr=subprocess.STDOUT)
    port = free_port()
    with pytest.raises(pytest.fail.Exception) as failed:
        wait_until_up(process, port, what="the frobnicator", log=log, within=30)
    assert f"the frobnicator on port {port} did not start" in str(failed.value)
    assert "bad option --frobnicate" in str(failed.value)
    assert process.returncode == 3


def test_a_server_that_never_listens_is_stopped_when_the_wait_runs_out(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(pytest.fail.Exception, match=r"\(no log\)"):
            wait_until_up(process, free_port(), what="a sleeper", log=tmp_path / "none.log",
                          within=0.3)
        assert process.poll() is not None  # stopped, not left running
    finally:
        process.kill()
        process.wait()


def test_stop_process_kills_what_ignores_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
         "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "ready\n"  # SIGTERM is ignored from here on
        stop_process(process, within=0.5)
        assert process.returncode == -9
        stop_process(process)  # stopped already: nothing
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


def test_unavailable_skips_or_fails_when_services_are_required(monkeypatch):
    monkeypatch.delenv("QHIVE_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^the thing is gone$"):
        unavailable("the thing is gone")
    monkeypatch.setenv("QHIVE_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception,
                       match=r"^QHIVE_REQUIRE_SERVICES is set but the thing is gone$"):
        unavailable("the thing is gone")

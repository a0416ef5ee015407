"""``qmonitor`` and ``qmemory`` without a terminal (stdin from /dev/null, stdout a
pipe: ssh without -t, CI) print one plain screen per refresh, not as many as the
CPU can draw, and stop cleanly on SIGTERM (issue 11, item 15)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest

#: Screens printed over the ~2 s the command runs: about 3 at one a second. Without
#: a pause between screens it printed thousands.
MOST_SCREENS = 10


def screens_in_a_pipe(django_project, q: dict, *args: str) -> tuple[int, str]:
    """Run ``manage.py <args>`` with stdin from /dev/null and stdout to a pipe, for
    about 2 s once its first screen is out; then SIGTERM. Returns the exit code and
    what it printed."""
    process = subprocess.Popen(django_project.manage(*args), env=django_project.env(q),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    first = threading.Event()

    def read() -> None:  # drain the pipe, so a flood cannot block the command
        for line in process.stdout:
            lines.append(line)
            first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not first.wait(120):
            pytest.fail(f"{args[0]} printed nothing within 120 s")
        time.sleep(2)
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(30)
    return code, "".join(lines)


@pytest.mark.parametrize("command", ["qmonitor", "qmemory"])
def test_without_a_terminal_it_prints_a_screen_per_refresh(command, cluster_settings,
                                                             django_project):
    q = cluster_settings()  # the ORM broker on SQLite; no cluster needs to run
    code, output = screens_in_a_pipe(django_project, q, command)
    screens = sum(1 for line in output.splitlines() if line.startswith("Host "))
    assert 1 <= screens <= MOST_SCREENS, f"{screens} screens:\n{output[:2000]}"
    assert "\x1b[" not in output, "a pipe gets plain text, no terminal sequences"
    assert code == 0, f"SIGTERM did not stop {command} cleanly ({code}):\n{output[-2000:]}"
    assert "Traceback" not in output

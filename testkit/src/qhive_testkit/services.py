"""Which local services are up, and what a test does when one is not.

On a fresh laptop a test needing PostgreSQL, MariaDB or Redis skips with the
reason; with ``QHIVE_REQUIRE_SERVICES=1`` (CI) it fails instead.
"""

from __future__ import annotations

import os
import socket

import pytest

#: service -> (host, port, how to start it here)
SERVICES = {
    "postgres": ("127.0.0.1", 5432, "pg_ctlcluster <version> main start"),
    "mysql": ("127.0.0.1", 3306, "start-stop-daemon --start --background --exec "
              "/usr/sbin/mariadbd"),
    "redis": ("127.0.0.1", 6379, "redis-server --daemonize yes --bind 127.0.0.1 --port 6379"),
}


def is_up(service: str, timeout: float = 0.5) -> bool:
    host, port, _ = SERVICES[service]
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def services_required() -> bool:
    return os.environ.get("QHIVE_REQUIRE_SERVICES", "").strip() not in ("", "0")


def require(service: str) -> None:
    """Skip the calling test (fail it under QHIVE_REQUIRE_SERVICES=1) unless ``service`` is up."""
    if is_up(service):
        return
    host, port, start = SERVICES[service]
    reason = f"{service} is not running on {host}:{port} (start it with: {start})"
    if services_required():
        pytest.fail(f"QHIVE_REQUIRE_SERVICES is set but {reason}", pytrace=False)
    pytest.skip(reason)


class RedisServer:
    """A ``redis-server`` of the test's own, on a free port, that the test may stop and
    start again (the shared server on 6379 must never be stopped).

    With ``persist=True`` (the default) it keeps an append-only file in ``folder``,
    fsynced on every write, so a restart finds every key again — as a production
    Redis that must not lose queued tasks is configured.
    """

    def __init__(self, folder, *, persist: bool = True) -> None:
        import shutil

        if shutil.which("redis-server") is None:
            reason = "redis-server is not installed (needed to stop and restart a Redis)"
            if services_required():
                pytest.fail(f"QHIVE_REQUIRE_SERVICES is set but {reason}", pytrace=False)
            pytest.skip(reason)
        self.folder = folder
        self.persist = persist
        self.port = _free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, within: float = 30.0) -> RedisServer:
        import subprocess
        import time

        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", str(self.folder), "--save", "", "--daemonize", "no",
                "--logfile", str(self.folder / "redis.log")]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + within
        while not _answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.folder / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else "(no log)"
                pytest.fail(f"redis-server on port {self.port} did not start: {tail}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """SIGTERM, as an administrator's stop: Redis flushes its AOF and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        self.process = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis_server(tmp_path):
    """A started :class:`RedisServer` of this test's own; stopped at the end."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()

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

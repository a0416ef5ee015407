"""Which local services are up, where they are, and what a test does when one is not.

On a fresh laptop a test needing PostgreSQL, MariaDB or Redis skips with the
reason; with ``QHIVE_REQUIRE_SERVICES=1`` (CI) it fails instead.

Where the shared servers are, and which Redis databases and PostgreSQL/MariaDB
database names the suite uses, come from the environment (defaults in brackets),
so that two test runs, or a test run and anything else, can share a machine:

* ``QHIVE_TEST_REDIS_HOST`` [127.0.0.1], ``QHIVE_TEST_REDIS_PORT`` [6379],
  ``QHIVE_TEST_REDIS_DB`` [0] and ``QHIVE_TEST_REDIS_OTHER_DB`` [3] (the database the
  tests that select a database use besides the first);
* ``QHIVE_TEST_PG_HOST`` [127.0.0.1], ``QHIVE_TEST_PG_PORT`` [5432] (user ``postgres``);
* ``QHIVE_TEST_MYSQL_HOST`` [127.0.0.1], ``QHIVE_TEST_MYSQL_PORT`` [3306] (user ``root``);
* ``QHIVE_TEST_DB_PREFIX`` [qhive_test_]: the start of the name of every database
  the suite creates (one per session and vendor; dropped at the end).

Tests read them through this module: :func:`redis_url`, :func:`redis_options`,
:func:`postgres_params`, :func:`mysql_params`, :data:`DB_PREFIX`; :func:`delete_redis_keys`
removes what a test leaves in Redis.

Servers a test starts for itself: :class:`RedisServer` (fixture ``redis_server``) and
:class:`MotoServer`, moto's AWS emulator over real HTTP (session fixture ``moto_server``).
What every such server needs is here too, for the test servers of the other modules:
:func:`free_port`, :func:`accepts` and :func:`answers_ping` (is it up?),
:func:`wait_until_up` (after a start), :func:`stop_process` and :func:`unavailable` (skip,
or fail under ``QHIVE_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def _env_int(name: str, default: int) -> int:
    value = _env(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name} must be a whole number, got {value!r}") from None


REDIS_HOST = _env("QHIVE_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = _env_int("QHIVE_TEST_REDIS_PORT", 6379)
REDIS_DB = _env_int("QHIVE_TEST_REDIS_DB", 0)
REDIS_OTHER_DB = _env_int("QHIVE_TEST_REDIS_OTHER_DB", 3)
PG_HOST = _env("QHIVE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = _env_int("QHIVE_TEST_PG_PORT", 5432)
MYSQL_HOST = _env("QHIVE_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = _env_int("QHIVE_TEST_MYSQL_PORT", 3306)
DB_PREFIX = _env("QHIVE_TEST_DB_PREFIX", "qhive_test_")

#: service -> (host, port, how to start it here)
SERVICES = {
    "postgres": (PG_HOST, PG_PORT, "pg_ctlcluster <version> main start"),
    "mysql": (MYSQL_HOST, MYSQL_PORT, "start-stop-daemon --start --background --exec "
              "/usr/sbin/mariadbd"),
    "redis": (REDIS_HOST, REDIS_PORT,
              f"redis-server --daemonize yes --bind {REDIS_HOST} --port {REDIS_PORT}"),
}


def redis_url(db: int | None = None) -> str:
    """The shared Redis as a URL, on database ``QHIVE_TEST_REDIS_DB`` unless ``db`` says."""
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB if db is None else db}"


def redis_options(db: int | None = None) -> dict[str, Any]:
    """The shared Redis as ``redis.Redis`` keyword arguments (``host``, ``port``, ``db``)."""
    return {"host": REDIS_HOST, "port": REDIS_PORT, "db": REDIS_DB if db is None else db}


def redis_address(db: int | None = None) -> str:
    """``host:port/db`` of the shared Redis, as brokers and stores show their address."""
    return f"{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB if db is None else db}"


def delete_redis_keys(match: str) -> None:
    """Delete the keys of the shared Redis that match ``match`` (a ``SCAN`` pattern such
    as ``"<key prefix>:*"``): what a test leaves there. The database is never flushed."""
    # redis-py is no dependency of the testkit: only Redis tests need it
    import redis

    client = redis.Redis(**redis_options())
    try:
        keys = list(client.scan_iter(match=match, count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


def postgres_params(dbname: str = "postgres") -> dict[str, Any]:
    """``psycopg.connect`` keyword arguments for the shared PostgreSQL."""
    return {"host": PG_HOST, "port": PG_PORT, "user": "postgres", "dbname": dbname}


def mysql_params() -> dict[str, Any]:
    """``pymysql.connect`` keyword arguments for the shared MariaDB."""
    # the local server speaks no TLS; PyMySQL >= 1.2 would try it (50 ms per connection)
    return {"host": MYSQL_HOST, "port": MYSQL_PORT, "user": "root", "password": "",
            "ssl_disabled": True}


def is_up(service: str, timeout: float = 0.5) -> bool:
    host, port, _ = SERVICES[service]
    return accepts(port, host, timeout)


def services_required() -> bool:
    return os.environ.get("QHIVE_REQUIRE_SERVICES", "").strip() not in ("", "0")


def unavailable(reason: str) -> NoReturn:
    """Skip the calling test because ``reason``; fail it instead under
    ``QHIVE_REQUIRE_SERVICES=1``, where every service must be there."""
    if services_required():
        pytest.fail(f"QHIVE_REQUIRE_SERVICES is set but {reason}", pytrace=False)
    pytest.skip(reason)


def require(service: str) -> None:
    """Skip the calling test (fail it under QHIVE_REQUIRE_SERVICES=1) unless ``service`` is up."""
    if is_up(service):
        return
    host, port, start = SERVICES[service]
    unavailable(f"{service} is not running on {host}:{port} (start it with: {start})")


def require_package_index() -> None:
    """Skip the calling test (fail it under QHIVE_REQUIRE_SERVICES=1) unless the package
    index that pip uses (``$PIP_INDEX_URL``, else PyPI) answers: tests that build virtual
    environments get Django and friends from it (or from pip's cache)."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/")
    try:
        urllib.request.urlopen(urllib.request.Request(f"{index}/django/", method="HEAD"),
                               timeout=20).close()
    except OSError as exc:
        unavailable(f"the package index {index} is unreachable ({exc})")


class RedisServer:
    """A ``redis-server`` of the test's own, on a free port, that the test may stop and
    start again (the shared server must never be stopped).

    With ``persist=True`` (the default) it keeps an append-only file in ``folder``,
    fsynced on every write, so a restart finds every key again — as a production
    Redis that must not lose queued tasks is configured.
    """

    def __init__(self, folder, *, persist: bool = True) -> None:
        if shutil.which("redis-server") is None:
            unavailable("redis-server is not installed (needed to stop and restart a Redis)")
        self.folder = folder
        self.persist = persist
        self.port = free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, within: float = 30.0) -> RedisServer:
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", str(self.folder), "--save", "", "--daemonize", "no",
                "--logfile", str(self.folder / "redis.log")]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_until_up(self.process, self.port, what="redis-server",
                      log=self.folder / "redis.log", within=within, ready=answers_ping)
        return self

    def stop(self) -> None:
        """SIGTERM, as an administrator's stop: Redis flushes its AOF and exits."""
        stop_process(self.process)
        self.process = None


def free_port() -> int:
    """A port on 127.0.0.1 that no one listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts a connection on ``host:port`` (a bare connection: no
    request that a server would count)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def answers_ping(port: int) -> bool:
    """Whether a Redis-protocol server (Redis, Disque) on ``port`` of 127.0.0.1 answers
    ``PING``; one that asks for a password first (``-NOAUTH``) is up too."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def wait_until_up(process: subprocess.Popen, port: int, *, what: str, log: Path,
                  within: float, ready: Callable[[int], bool] = accepts) -> None:
    """Wait until ``ready(port)``, after ``process`` was started. If the process exits
    first, or ``within`` seconds pass, stop it and fail the test with the end of ``log``."""
    deadline = time.monotonic() + within
    while not ready(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            tail = log.read_text()[-2000:] if log.exists() else "(no log)"
            pytest.fail(f"{what} on port {port} did not start: {tail}", pytrace=False)
        time.sleep(0.05)


def stop_process(process: subprocess.Popen | None, within: float = 30.0) -> None:
    """SIGTERM, as an administrator's stop; SIGKILL if it is still there after ``within``
    seconds. Nothing when it is not running."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(within)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def redis_server(tmp_path):
    """A started :class:`RedisServer` of this test's own; stopped at the end."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


class MotoServer:
    """moto's server mode on a free port of 127.0.0.1: AWS APIs (SQS, IAM, ...) over real
    HTTP, for the real boto3 client — only its race on concurrent receives fixed
    (:mod:`qhive_testkit.moto_serialized`).

    Kept honest where moto can be: one PurgeQueue per queue per 60 s, as on AWS.
    Signatures are not checked until :meth:`enforce_auth` turns that on.
    """

    REGION = "us-east-1"
    #: Any credentials do until :meth:`enforce_auth`.
    KEY_ID = SECRET = "testing"

    def __init__(self, folder) -> None:
        if importlib.util.find_spec("moto") is None:
            unavailable("moto is not installed (pip install 'moto[server]')")
        self.folder = folder
        self.port = free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sqs_options(self, **more: Any) -> dict[str, Any]:
        """``Q_CLUSTER['sqs']`` for this server."""
        return {"aws_region": self.REGION, "aws_access_key_id": self.KEY_ID,
                "aws_secret_access_key": self.SECRET, "endpoint_url": self.url, **more}

    def start(self, within: float = 60.0) -> MotoServer:
        log = self.folder / "moto.log"
        env = {**os.environ, "MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR": "true"}
        env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "qhive_testkit.moto_serialized", "-H", "127.0.0.1",
                 "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        # accepts(): a bare connection, no request moto would count
        wait_until_up(self.process, self.port, what="moto server", log=log, within=within)
        return self

    def enforce_auth(self) -> tuple[str, str]:
        """Create an IAM user allowed everything, then make the server check every
        request's signature: another access key id fails with InvalidClientTokenId,
        another secret with SignatureDoesNotMatch. Returns the user's (key id, secret)."""
        # boto3 is no dependency of the testkit: only AWS tests need it
        import boto3

        iam = boto3.client("iam", endpoint_url=self.url, region_name=self.REGION,
                           aws_access_key_id=self.KEY_ID, aws_secret_access_key=self.SECRET)
        iam.create_user(UserName="qhive-test")
        iam.put_user_policy(UserName="qhive-test", PolicyName="everything",
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                                {"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="qhive-test")["AccessKey"]
        # text/plain: werkzeug would parse a form body away (moto reads the raw "0")
        request = urllib.request.Request(f"{self.url}/moto-api/reset-auth", data=b"0",
                                         headers={"Content-Type": "text/plain"},
                                         method="POST")
        with urllib.request.urlopen(request, timeout=30) as reply:
            reply.read()
        return key["AccessKeyId"], key["SecretAccessKey"]

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """A started :class:`MotoServer` for the session (each xdist worker has its own);
    tests keep apart by queue names. Stopped at the end."""
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()

"""``disque-server`` processes of a test's own, for the Disque broker's tests.

Disque is archived upstream: no release and no distribution package provides it. The
repository vendors its source (``testkit/vendor/disque-0192ba7.tar.gz``) and
``scripts/disque.sh`` builds it once per machine into ``~/.cache/qhive-services``
(``$QHIVE_SERVICES_CACHE``), one build at a time however many test workers ask at once.
:func:`disque_server_binary` runs that script on first use (``$QHIVE_DISQUE_SERVER``, the
path of a ``disque-server`` built elsewhere, skips it). Without make or a C compiler, or
outside a clone of the repository, a test that needs a server skips, saying why; under
``QHIVE_REQUIRE_SERVICES=1`` it fails instead.

:class:`DisqueServer` is one server on free ports of 127.0.0.1 (Disque listens on
``port`` for clients and on ``port + 10000`` for the other nodes), in a folder of its own,
stopped by its pid; :meth:`DisqueServer.meet` joins two into one Disque cluster. Fixtures:
``disque_server`` (one per test session, i.e. per xdist worker; tests keep apart by queue
names) and ``disque_servers`` (a factory of servers a test may stop, kill or freeze;
all stopped at its end).
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from qhive_testkit.services import answers_ping, stop_process, unavailable

#: The repository's build script (present in a clone, not in an installed testkit).
BUILD_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "disque.sh"
#: Upper bound for one build (about 20 s on two idle cores; others may wait for it).
BUILD_TIMEOUT = 900.0
#: Disque talks to the other nodes on the client port plus this.
BUS_OFFSET = 10000
#: Client ports are chosen here, so that the bus port stays below 65536.
PORTS = (20000, 55000)


@functools.cache
def _find_binary() -> tuple[str | None, str | None]:
    """(path, None) or (None, why not); built at most once per process."""
    given = os.environ.get("QHIVE_DISQUE_SERVER", "").strip()
    if given:
        if os.access(given, os.X_OK):
            return given, None
        return None, f"$QHIVE_DISQUE_SERVER names {given!r}, which is not an executable"
    if not BUILD_SCRIPT.is_file():
        return None, ("disque-server is not available: set $QHIVE_DISQUE_SERVER to the path "
                      "of one, or run the tests from a clone of the qhive repository "
                      "(its scripts/disque.sh builds one)")
    if shutil.which("bash") is None:
        return None, "building disque-server needs bash (scripts/disque.sh)"
    try:
        done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, f"scripts/disque.sh did not finish within {BUILD_TIMEOUT:.0f} s"
    if done.returncode == 2:  # no make or no C compiler: a machine that cannot build it
        return None, done.stderr.strip()
    if done.returncode != 0:
        pytest.fail(f"scripts/disque.sh failed ({done.returncode}): {done.stderr.strip()}",
                    pytrace=False)
    return done.stdout.strip().splitlines()[-1], None


def disque_server_binary() -> str:
    """The path of ``disque-server``, built on first use; skips the calling test (fails it
    under ``QHIVE_REQUIRE_SERVICES=1``) where it cannot be had."""
    path, reason = _find_binary()
    if path is None:
        unavailable(reason or "disque-server is not available")
    return path


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair() -> int:
    """A client port whose bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randrange(*PORTS)
        if _bindable(port) and _bindable(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free pair of ports for a disque-server")


class DisqueServer:
    """A ``disque-server`` of the test's own on 127.0.0.1.

    :param folder: where its files go (a folder per server is made inside).
    :param password: started with ``--requirepass`` when given.
    :param node_timeout: milliseconds after which the other nodes of its Disque cluster
        count it as failed (Disque's ``cluster-node-timeout``; its default is 15 s).
    """

    def __init__(self, folder: Path, *, password: str | None = None,
                 node_timeout: int = 2000) -> None:
        self.binary = disque_server_binary()
        self.folder = Path(folder)
        self.password = password
        self.node_timeout = node_timeout
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, as ``Q_CLUSTER["disque_nodes"]`` lists it."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / f"disque-{self.port}" / "disque.log"

    def start(self, within: float = 30.0) -> DisqueServer:
        """Start it (again on the same port after :meth:`stop`; jobs are not kept)."""
        for _ in range(5):  # another process may take a port between the look and the start
            if not self.port:
                self.port = free_port_pair()
            home = self.folder / f"disque-{self.port}"
            home.mkdir(parents=True, exist_ok=True)
            args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--daemonize", "no", "--dir", str(home), "--logfile", str(self.log_path),
                    "--cluster-node-timeout", str(self.node_timeout), "--appendonly", "no"]
            if self.password:
                args += ["--requirepass", self.password]
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, cwd=home)
            deadline = time.monotonic() + within
            while not answers_ping(self.port):
                if self.process.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    self.kill()
                    pytest.fail(f"disque-server on port {self.port} did not start within "
                                f"{within:.0f} s: {self._log_tail()}")
                time.sleep(0.02)
            else:
                return self
            if "in use" not in self._log_tail():
                pytest.fail(f"disque-server on port {self.port} exited at start "
                            f"({self.process.returncode}): {self._log_tail()}")
            self.port = 0  # the port was taken: try another
        pytest.fail("disque-server found no free port in 5 attempts")

    def _log_tail(self) -> str:
        return self.log_path.read_text()[-2000:] if self.log_path.exists() else "(no log)"

    def stop(self, within: float = 30.0) -> None:
        """SIGTERM, as an administrator's stop (SIGKILL if it lingers)."""
        if self.process is not None and self.process.poll() is None:
            self.resume()  # a frozen node would never act on the SIGTERM
        stop_process(self.process, within)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the node dies with everything it holds in memory."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: the node keeps its connections open but answers nothing."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)

    def client(self, **options: Any):
        """A ``redis.Redis`` on this server (RESP2: Disque predates RESP3's ``HELLO 3``)."""
        # redis-py is no dependency of the testkit: only the Disque tests need it
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           protocol=2, socket_timeout=10, **options)

    def meet(self, other: DisqueServer, within: float = 30.0) -> None:
        """Join ``other`` into this server's Disque cluster (``CLUSTER MEET``) and wait
        until a job added on either node is replicated to both."""
        # as in client(): redis-py only for Disque tests
        import redis

        mine, theirs = self.client(), other.client()
        try:
            mine.execute_command("CLUSTER", "MEET", "127.0.0.1", other.port)
            deadline = time.monotonic() + within
            for client in (mine, theirs):
                while True:
                    try:
                        job = client.execute_command("ADDJOB", "qhive-meet-probe", b"probe",
                                                     1000, "REPLICATE", 2)
                        client.execute_command("FASTACK", job)
                        break
                    except redis.ResponseError as exc:  # NOREPL until they know each other
                        if time.monotonic() > deadline:
                            pytest.fail(f"disque-servers on ports {self.port} and {other.port} "
                                        f"did not join within {within:.0f} s: {exc}")
                        time.sleep(0.05)
        finally:
            mine.close()
            theirs.close()


@pytest.fixture(scope="session")
def disque_server(tmp_path_factory):
    """A started :class:`DisqueServer` for the test session (each xdist worker has its
    own); tests keep apart by queue names. Stopped at the end."""
    server = DisqueServer(tmp_path_factory.mktemp("disque")).start()
    yield server
    server.stop()


@pytest.fixture
def disque_servers(tmp_path):
    """``disque_servers(password=None, node_timeout=2000) -> DisqueServer``: started
    servers of the test's own, which it may stop, kill or freeze; stopped at its end."""
    started: list[DisqueServer] = []

    def start(**options: Any) -> DisqueServer:
        server = DisqueServer(tmp_path, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()

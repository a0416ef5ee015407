"""Redis and PostgreSQL for the benchmark: the harness's own, or the running ones.

Own instances (the default) live in ``bench/.services/`` (gitignored) and listen on
127.0.0.1 only: Redis on port 6390 (no persistence), PostgreSQL 15 on port 55432
(``initdb`` on first use, trust authentication, default settings otherwise: fsync on).
PostgreSQL refuses to run as root, so as root it is run as the ``postgres`` user through
``runuser``. Both are stopped by pid when the harness ends, whatever the reason.

``--use-running-services`` uses Redis on 6379 (database 0 in the URL; adapters pick their
own databases or key prefixes) and PostgreSQL on 5432 (user ``postgres``) instead, and
starts or stops nothing of those.

Brokers whose service cannot run here get a *test server*, always the harness's own, on a
free port (``Services.test_servers``): moto's SQS server (``python -m moto.server``), the
IronMQ emulator and the MongoDB test server of qhive-testkit (wire protocol over mongomock),
and ``disque-server`` built from the repo's source archive by ``scripts/disque.sh``. They
stand in for Amazon SQS, IronMQ and MongoDB: a figure on them is the queue's overhead plus
the test server's, not what the real service would give.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from qhive_testkit.disque_server import free_port_pair as disque_port_pair
from qhive_testkit.services import free_port
from systems.base import REPO_DIR, Services

SERVICES_DIR = Path(__file__).resolve().parent / ".services"
REDIS_PORT, PG_PORT = 6390, 55432
RUNNING_REDIS_URL = "redis://127.0.0.1:6379/0"
RUNNING_PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "password": ""}
START_TIMEOUT = 60.0


class ServiceError(Exception):
    pass


def _pg_bin(name: str) -> str:
    for candidate in (shutil.which(name), *sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                                                 reverse=True)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise ServiceError(f"PostgreSQL's {name} not found (on PATH or in /usr/lib/postgresql/*/bin)")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


class ServiceManager:
    """Starts what the selected systems need; :meth:`stop` stops what it started."""

    def __init__(self, use_running: bool, log=print) -> None:
        self.use_running = use_running
        self.log = log
        self.procs: dict[str, subprocess.Popen] = {}
        self.pids: dict[str, int] = {}  # the server processes themselves (postmaster, redis)

    def start(self, needs: set[str]) -> Services:
        SERVICES_DIR.mkdir(exist_ok=True)
        if self.use_running:
            services = Services(RUNNING_REDIS_URL if "redis" in needs else None,
                                dict(RUNNING_PG) if "postgres" in needs else None)
        else:
            services = Services(self._start_redis() if "redis" in needs else None,
                                self._start_postgres() if "postgres" in needs else None)
        services.test_servers = {name: self._start_test_server(name)
                                 for name in sorted(needs & set(TEST_SERVERS))}
        self._check(services)
        return services

    # ------------------------------------------------------------------ test servers
    def _start_test_server(self, name: str) -> int:
        # Disque also listens on port + 10000 (its cluster bus)
        port = disque_port_pair() if name == "disque" else free_port()
        folder = SERVICES_DIR / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        argv = TEST_SERVERS[name](port, folder)
        log = (folder / "server.log").open("ab")
        proc = subprocess.Popen(argv, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.procs[name], self.pids[name] = proc, proc.pid
        self._wait(name, lambda: _connect(port))
        self.log(f"services: {name} test server on port {port} (pid {proc.pid})")
        return port

    # ------------------------------------------------------------------ Redis
    def _start_redis(self) -> str:
        if not _port_free(REDIS_PORT):
            raise ServiceError(f"port {REDIS_PORT} is taken (a Redis left by an earlier run?); "
                               "stop it, or use --use-running-services")
        exe = shutil.which("redis-server")
        if not exe:
            raise ServiceError("redis-server not found on PATH (apt-get install redis-server)")
        folder = SERVICES_DIR / "redis"
        folder.mkdir(exist_ok=True)
        proc = subprocess.Popen(
            [exe, "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(folder), "--logfile", str(folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs["redis"], self.pids["redis"] = proc, proc.pid
        url = f"redis://127.0.0.1:{REDIS_PORT}/0"
        self._wait("redis", lambda: _redis_client(url).ping())
        self.log(f"services: Redis on port {REDIS_PORT} (pid {proc.pid})")
        return url

    # ------------------------------------------------------------------ PostgreSQL
    def _start_postgres(self) -> dict:
        if not _port_free(PG_PORT):
            raise ServiceError(f"port {PG_PORT} is taken (a PostgreSQL left by an earlier run? "
                               f"see {SERVICES_DIR / 'postgres'}); stop it, or use "
                               "--use-running-services")
        data = SERVICES_DIR / "postgres"
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if not (data / "PG_VERSION").exists():
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(parents=True)
            if as_postgres:
                shutil.chown(SERVICES_DIR, "postgres")
                shutil.chown(data, "postgres")
            self.log(f"services: initdb {data}")
            subprocess.run([*as_postgres, _pg_bin("initdb"), "-D", str(data), "-U", "postgres",
                            "--auth=trust", "-E", "UTF8", "--locale=C"],
                           check=True, stdout=subprocess.DEVNULL)
        (data / "postmaster.log").touch()
        log = (data / "postmaster.log").open("ab")
        proc = subprocess.Popen(
            [*as_postgres, _pg_bin("postgres"), "-D", str(data), "-p", str(PG_PORT),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data}",
             "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs["postgres"] = proc
        params = {"host": "127.0.0.1", "port": PG_PORT, "user": "postgres", "password": ""}
        self._wait("postgres", lambda: _pg_connect(params).close())
        with contextlib.suppress(OSError, ValueError):
            self.pids["postgres"] = int((data / "postmaster.pid").read_text().split()[0])
        self.log(f"services: PostgreSQL on port {PG_PORT} (pid {self.pids.get('postgres')})")
        return params

    def _wait(self, name: str, probe) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.procs[name].poll() is not None:
                raise ServiceError(f"{name} exited at start (code {self.procs[name].returncode}); "
                                   f"see its log in {SERVICES_DIR}")
            try:
                probe()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise ServiceError(f"{name} not reachable after {START_TIMEOUT:.0f} s: "
                                       f"{exc}") from exc
                time.sleep(0.2)

    def _check(self, services: Services) -> None:
        if services.redis_url:
            _redis_client(services.redis_url).ping()
        if services.postgres:
            _pg_connect(services.postgres).close()

    # ------------------------------------------------------------------ facts, stop
    def versions(self, services: Services) -> dict[str, str]:
        found = {}
        if services.redis_url:
            info = _redis_client(services.redis_url).info("server")
            where = "running, port 6379" if self.use_running else f"own, port {REDIS_PORT}"
            found["Redis"] = f"{info['redis_version']} ({where}, no persistence)" \
                if not self.use_running else f"{info['redis_version']} ({where})"
        if services.postgres:
            with _pg_connect(services.postgres) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]
                fsync = conn.execute("SHOW fsync").fetchone()[0]
                sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
            where = f"own, port {PG_PORT}" if not self.use_running else "running, port 5432"
            found["PostgreSQL"] = f"{version} ({where}; fsync={fsync}, synchronous_commit={sync})"
        for name, port in services.test_servers.items():
            what = TEST_SERVER_WHAT[name]
            found[TEST_SERVER_TITLES[name]] = f"test server on port {port}: {what}"
        return found

    def stop(self) -> None:
        for name in list(self.procs):  # test servers: SIGTERM, as Redis
            proc = self.procs.pop(name)
            pid = self.pids.pop(name, proc.pid)
            # Redis: SIGTERM. PostgreSQL: SIGINT is its "fast" shutdown.
            sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                proc.kill()
                proc.wait(5)
            self.log(f"services: {name} stopped")


def _disque_argv(port: int, folder: Path) -> list[str]:
    built = subprocess.run(["bash", str(REPO_DIR / "scripts" / "disque.sh")],
                           capture_output=True, text=True)
    if built.returncode:
        raise ServiceError(f"scripts/disque.sh could not build disque-server: {built.stderr}")
    return [built.stdout.strip(), "--port", str(port), "--bind", "127.0.0.1",
            "--daemonize", "no", "--dir", str(folder)]


#: name -> (port, folder) -> argv of the test server (run with the harness's python).
TEST_SERVERS = {
    "sqs": lambda port, folder: [sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)],
    "ironmq": lambda port, folder: [sys.executable, "-m", "qhive_testkit.ironmq_emulator",
                                    "--port", str(port)],
    "mongo": lambda port, folder: [sys.executable, "-m", "qhive_testkit.mongo_server",
                                   "--port", str(port)],
    "disque": _disque_argv,
}


TEST_SERVER_TITLES = {"sqs": "Amazon SQS", "ironmq": "IronMQ", "mongo": "MongoDB",
                      "disque": "Disque"}
TEST_SERVER_WHAT = {
    "sqs": "moto's server mode (the SQS API over HTTP, in Python)",
    "ironmq": "qhive-testkit's IronMQ v3 emulator (HTTP, in Python)",
    "mongo": "qhive-testkit's wire-protocol server (mockupdb over mongomock, in Python)",
    "disque": "disque-server 0192ba7, built from source (the real server)",
}


def _connect(port: int) -> None:
    import socket

    socket.create_connection(("127.0.0.1", port), timeout=1).close()


def _redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2)


def _pg_connect(params: dict, dbname: str = "postgres"):
    import psycopg

    return psycopg.connect(host=params["host"], port=params["port"], user=params["user"],
                           password=params.get("password") or None, dbname=dbname,
                           autocommit=True, connect_timeout=5)

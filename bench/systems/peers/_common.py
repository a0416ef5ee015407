"""What the four peer adapters (Celery, RQ, Huey, Dramatiq on Redis) share.

Runs under the harness's own Python: standard library only. Each peer gets Redis
database numbers of its own (:data:`REDIS_DBS`), so flushing one never touches another
or the databases of qhive and Django Q2.

A peer's work directory is a small self-contained project, written by ``prepare``:
``<peer>_bench_tasks.py`` (the ``add`` task and the queue's configuration, Redis URLs
baked in), ``<peer>_client.py`` (copied from ``clients/``) and ``workloads.py`` (the
harness's shared loops). Worker and client run with ``cwd`` and ``PYTHONPATH`` set to it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from ..base import WORKLOADS_FILE, Services, System

# Not a module of systems: the harness takes this empty list instead of instantiating
# PeerSystem (discovery builds every System subclass of a module without SYSTEMS).
SYSTEMS: list[System] = []

CLIENTS_DIR = Path(__file__).resolve().parent / "clients"

#: Redis database numbers, one set per peer: (broker, results). Celery and Dramatiq keep
#: results in a database of their own so that counting them is one DBSIZE.
REDIS_DBS = {
    "celery": (1, 11),
    "rq": (2, 2),
    "huey": (3, 3),
    "dramatiq": (4, 14),
}


def redis_url_with_db(url: str, db: int) -> str:
    """``url`` pointing at database ``db`` (path ``/db``; a ``db=`` query is dropped)."""
    parts = urlsplit(url)
    query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("db="))
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", query, ""))


def flush_redis_db(url: str, db: int, timeout: float = 10.0) -> None:
    """``SELECT db`` + ``FLUSHDB`` over a raw socket (the harness may lack redis-py)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", ""):
        raise ValueError(f"only redis:// URLs are supported here, not {url!r}")
    commands: list[list[str]] = []
    if parts.password:
        auth = [unquote(parts.password)]
        if parts.username:
            auth.insert(0, unquote(parts.username))
        commands.append(["AUTH", *auth])
    commands += [["SELECT", str(db)], ["FLUSHDB"]]
    def encode(cmd: list[str]) -> bytes:
        args = [a.encode() for a in cmd]
        return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)

    payload = b"".join(encode(cmd) for cmd in commands)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379),
                                  timeout=timeout) as sock:
        sock.sendall(payload)
        replies = sock.makefile("rb")
        for cmd in commands:
            line = replies.readline()
            if not line.startswith((b"+", b":")):
                raise RuntimeError(f"redis {cmd[0]} on db {db} failed: {line!r}")


class PeerSystem(System):
    """A peer on Redis: a tasks module written from :meth:`tasks_module`, a client copied
    from ``clients/<name>_client.py``, and its two Redis databases flushed by ``prepare``."""

    broker = "redis"
    #: distributions whose versions go into ``settings_text``
    key_packages: list[str] = []
    #: what the report says about the configuration (versions are appended at run time)
    settings: str = ""

    def __init__(self) -> None:
        self.venv_name = f"peer-{self.name}"
        self._versions: str | None = None

    # -- helpers ---------------------------------------------------------------------

    @property
    def tasks_module_name(self) -> str:
        return f"{self.name}_bench_tasks"

    def urls(self, services: Services) -> tuple[str, str]:
        """(broker URL, results URL) of this peer."""
        if not services.redis_url:
            raise RuntimeError(f"{self.name} needs Redis, and the harness gave no redis_url")
        broker_db, results_db = REDIS_DBS[self.name]
        return (redis_url_with_db(services.redis_url, broker_db),
                redis_url_with_db(services.redis_url, results_db))

    def tasks_module(self, broker_url: str, results_url: str) -> str:
        """Source of ``<name>_bench_tasks.py``: the ``add`` task and the configuration."""
        raise NotImplementedError

    def env(self, workdir: Path) -> dict[str, str]:
        return {"PYTHONPATH": str(workdir), "PYTHONUNBUFFERED": "1"}

    # -- System ----------------------------------------------------------------------

    def prepare(self, workdir: Path, services: Services) -> None:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        broker_url, results_url = self.urls(services)
        (workdir / f"{self.tasks_module_name}.py").write_text(
            self.tasks_module(broker_url, results_url))
        shutil.copyfile(CLIENTS_DIR / f"{self.name}_client.py", workdir / f"{self.name}_client.py")
        shutil.copyfile(WORKLOADS_FILE, workdir / "workloads.py")
        for db in sorted(set(REDIS_DBS[self.name])):
            flush_redis_db(services.redis_url, db)

    def client_command(self, workdir: Path, services: Services, workload: str,
                       n: int) -> tuple[list[str], dict[str, str]]:
        workdir = Path(workdir)
        return ([str(self.python), str(workdir / f"{self.name}_client.py"), workload, str(n)],
                self.env(workdir))

    @property
    def settings_text(self) -> str:
        versions = self.versions()
        return f"{self.settings} Versions: {versions}." if versions else self.settings

    def versions(self) -> str:
        """``"celery 5.7.0, kombu 5.7.0, redis 8.1.0"`` from the venv, once it exists."""
        if self._versions is None:
            python = getattr(self, "python", None)
            if not python or not Path(python).exists():
                return ""
            code = ("import importlib.metadata as m, sys\n"
                    "print(', '.join(f'{d} {m.version(d)}' for d in sys.argv[1:]))")
            try:
                out = subprocess.run([str(python), "-c", code, *self.key_packages],
                                     capture_output=True, text=True, timeout=30, check=True)
            except (OSError, subprocess.SubprocessError):
                return ""
            self._versions = out.stdout.strip()
        return self._versions

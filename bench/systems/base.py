"""The interface between the benchmark harness (``bench/run.py``) and the systems it measures.

A *system* is one task queue on one broker: ``System("qhive", "orm-postgres")``,
``System("celery", "redis")``. An adapter is a subclass of :class:`System` that knows
how to set that queue up in a work directory, start its cluster of 2 workers (or as many
as the harness asks: the scaling curves), and run a client that performs one workload
and prints the outcome as JSON.

Discovery: the harness imports every module of ``bench/systems/`` and
``bench/systems/peers/`` (not ``base``/``workloads``) and takes the module-level list
``SYSTEMS`` (instances of :class:`System`). A module without ``SYSTEMS`` contributes one
instance of each :class:`System` subclass defined in it, built with no arguments.

Life of a measurement, as the harness runs it::

    system.python = <venv python>               # bench/.envs/<venv_name>, made from requirements
    system.prepare(workdir, services)           # before every run: empty queue, empty results
    argv, env = system.worker_command(..., workers=2)   # Popen(cwd=workdir), own session;
                                                # whole process tree sampled (CPU, RSS, PSS)
    argv, env = system.client_command(..., workload, n)   # Popen(cwd=workdir); last stdout
                                                # line must be one JSON object
    SIGTERM to the worker process, SIGKILL to its tree 30 s later if still there

``env`` is *added* to the harness's environment (``os.environ`` minus ``PYTHONPATH``,
``DJANGO_SETTINGS_MODULE`` and ``VIRTUAL_ENV``), so return only what the process needs.

Workloads a client implements (the task is a trivial ``def add(a, b): return a + b``
defined in the system's project; results are stored; ``n`` comes from the harness). The
project also defines ``sleep_ms(ms)`` (sleeps, returns ``ms``) and ``size(data)`` (returns
``len(data)``): the scaling curves set ``BENCH_TASK`` in the client's environment to one of
them, and the client enqueues what :func:`workloads.task_call` says (see there):

``enqueue`` / ``fill``
    enqueue ``n`` tasks from one process, return ``{"seconds": t}``. The harness runs it
    with no workers running, and then uses the filled queue for ``results`` (so ``fill``
    is the same as ``enqueue``).
``drain``
    enqueue ``n`` tasks, then wait until all ``n`` results are visible to the caller;
    ``{"seconds": first enqueue -> last result, "enqueue_seconds": te}``. Results already
    in the store when the client starts (a warm-up task) must not be counted: count the
    results at start and wait for that count + ``n``. Count in one query every 50 ms.
``results``
    the queue holds ``n`` tasks and no worker runs. Print a line ``ready`` (flushed) once
    set up; the harness starts the workers after that line (it waits at most 20 s for it).
    Then poll the result count every 50 ms until ``n`` results exist; return
    ``{"seconds": ready -> n results, "steady_seconds": first result seen -> n results,
    "first_count": results already there when the first result was seen}``. Worker rate =
    ``(n - first_count) / steady_seconds`` (startup of the cluster excluded).
``latency``
    ``n`` sequential round trips (enqueue one, wait for its result, repeat), polling the
    result every 5 ms; ``{"latencies_ms": [...]}``. The harness also runs it with
    ``n=1`` to check that a cluster is up, and to measure ``first_result``.
``idle_latency``
    sleep 5 s plus a random 0-1 s (so that the phase against a polling broker's timer is
    random), then one round trip; 3 times; ``{"latencies_ms": [...]}``.

:mod:`workloads` (``bench/systems/workloads.py``, standard library only) implements all
of them given four small functions; an adapter may copy it into its work directory and
use it from its client, so that every system is measured with the same loops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BENCH_DIR", "REPO_DIR", "WORKLOADS_FILE", "Services", "System"]

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
#: The shared workload loops; copy it into a work directory to import it from a client.
WORKLOADS_FILE = Path(__file__).resolve().parent / "workloads.py"


@dataclass
class Services:
    """What the harness started, or was told to use (``--use-running-services``).

    :param redis_url: e.g. ``"redis://127.0.0.1:6390/0"``; ``None`` when Redis is not
        running for this run (no selected system needs it).
    :param postgres: ``{"host", "port", "user", "password"}``; ``None`` when PostgreSQL is
        not running. Which database a system uses is the adapter's business: create it with
        psycopg (``CREATE DATABASE``), named ``qhive_bench_<something>``.
    """

    redis_url: str | None
    postgres: dict | None
    #: Test servers started for this run (``"sqs"``, ``"ironmq"``, ``"mongo"``,
    #: ``"disque"``) by name: their port on 127.0.0.1. They stand in for the real
    #: services (see bench/services.py): a figure on them is the queue's overhead.
    test_servers: dict[str, int] = field(default_factory=dict)


class System:
    """One queue on one broker, as the harness sees it. Subclass and fill in.

    Required attributes:

    :ivar name: ``"qhive"``, ``"django-q2"``, ``"celery"``, ``"rq"``, ``"huey"``, ``"dramatiq"``.
    :ivar broker: ``"orm-sqlite"``, ``"orm-postgres"``, ``"redis"``, ... — where the tasks
        wait; a variant of a broker says how it differs after a ``+``:
        ``"redis+redis-store"`` is qhive's Redis broker with results in its Redis store.
    :ivar requirements: pip requirement lines for this system's own venv (e.g.
        ``["django-q2", "django>=5.2,<6", "psycopg[binary]"]``); editable installs of this
        repository as ``"-e <repo>/core"``. The venv is rebuilt when they change.
    :ivar venv_name: venvs are shared by systems with the same ``venv_name`` (their
        requirements must then be identical).
    :ivar settings_text: human-readable settings for the report (workers, concurrency,
        result backend, polling...), Markdown allowed, one line or a few.
    :ivar python: set by the harness before ``prepare``: the venv's python.

    Optional attributes (defaults below):

    :ivar needs: services the system needs; by default ``{"redis"}`` for the ``redis``
        broker and ``{"postgres"}`` for ``orm-postgres``.
    :ivar skip: a reason not to run this system (yet); the report lists it as such.
    :ivar key_packages: distribution names to show in the report's version table.
    """

    name: str
    broker: str
    requirements: list[str]
    venv_name: str
    settings_text: str
    python: Path
    skip: str | None = None
    key_packages: list[str] = []

    @property
    def needs(self) -> set[str]:
        return ({"redis"} if self.broker == "redis" else set()) | (
            {"postgres"} if "postgres" in self.broker else set())

    @property
    def label(self) -> str:
        """``"qhive / orm-postgres"``: how the report names the system."""
        return f"{self.name} / {self.broker}"

    def prepare(self, workdir: Path, services: Services) -> None:
        """Write the project files into ``workdir`` (created by the harness), create or
        flush the databases and purge the queues: the next run starts from an empty queue
        and an empty result store. Called before every run (each workload, each
        repetition), so keep it fast. Raise to mark the run as failed."""
        raise NotImplementedError

    def worker_command(self, workdir: Path, services: Services,
                       workers: int = 2) -> tuple[list[str], dict[str, str]]:
        """``(argv, env)`` of the process that starts the cluster or pool of ``workers``
        worker processes (2 except in the scaling curves), using ``self.python``. The
        harness starts it (cwd=workdir, stdout/stderr to a log file), measures its whole
        process tree, and stops it with SIGTERM (SIGKILL after 30 s)."""
        raise NotImplementedError

    def client_command(self, workdir: Path, services: Services, workload: str,
                       n: int) -> tuple[list[str], dict[str, str]]:
        """``(argv, env)`` of a client that runs ``workload`` with ``n`` tasks (see the
        module docstring) and prints one JSON object on its last stdout line."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"

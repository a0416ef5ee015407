"""``manage.py qhealth``: is a cluster of this project alive, and do its broker and
result store answer? A container's liveness or readiness probe, in one exit code.

Healthy (exit 0) when all three hold, within ``timeout`` seconds in all:

* **the cluster is alive**: a cluster of the chosen name (``--cluster``; default
  ``$Q_CLUSTER_NAME``, else the root cluster) on this host (``--any-host``: on any)
  saved a stat at most ``max_age`` seconds ago, and it is not ``Stopping`` or
  ``Stopped``. A cluster saves its stat every ``guard_cycle`` with an expiry of
  ``max(3, 6 * guard_cycle)`` s (:mod:`qhive.cluster.stat`); ``max_age`` defaults to
  :func:`default_max_age`, so one slow guard round is no failure but a stuck or
  killed cluster is one within seconds. This host only by default, because a probe
  runs beside the cluster it watches: another pod's cluster must not keep a dead
  one alive. The age is read on this host's clock against the cluster's: with
  ``--any-host`` clocks must agree to within ``max_age``;
* **its broker answers** ``ping()``;
* **its result store answers** ``ping()`` (only as well as the store can tell: the
  cache store's cannot fail on a cache backend that hides its errors, Memcached's).

The three are asked in parallel, each in a daemon thread that is left behind when
it does not answer in time, so a server that accepts connections and never
replies cannot hang the probe past ``timeout`` (redis-py alone waits 5 s for a
connection, then retries once). Each problem is one line naming what to do.

When no statistics can be kept (:attr:`~qhive.cluster.stat.StatStore.reason`) a
cluster cannot be seen, and that is a failure: a probe that always passed would
hide a dead cluster. ``backends_only`` checks the broker and the result store
alone: for such a project, or for a web process that only needs to enqueue.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from django.db import connections
from qhive.cluster.stat import STOPPED, STOPPING, Stat
from qhive.errors import QhiveError, SetupError

from qhive_django.conf import get_config, get_pipeline
from qhive_django.monitor import broker_name, check_broker

if TYPE_CHECKING:
    from qhive.cluster.stat import StatStore
    from qhive.config import Config
    from qhive.contracts import ResultStore

__all__ = ["DEFAULT_TIMEOUT", "Health", "check", "default_max_age"]

#: Seconds the whole check may take (the probe's own ``timeoutSeconds`` must leave
#: room for Django's start-up on top of it).
DEFAULT_TIMEOUT = 5.0
#: A stat older than this many guard cycles is stale...
STALE_CYCLES = 3
#: ... or older than this many seconds, whichever is longer.
MIN_MAX_AGE = 5.0


def default_max_age(config: Config) -> float:
    """``max(3 * guard_cycle, 5)`` seconds: three missed saves, and never less than
    5 s, so a busy host or a slow broker round is not taken for a dead cluster."""
    return max(STALE_CYCLES * config.guard_cycle, MIN_MAX_AGE)


@dataclasses.dataclass
class Health:
    """The outcome of :func:`check`: healthy when ``problems`` is empty."""

    #: one line a problem, each naming what to do
    problems: list[str]
    #: what was found, for people: ``ok: cluster mysite (1a2b3c4d) on web-1, ...``
    summary: str = ""
    #: the stat of the cluster found alive, if one was
    stat: Stat | None = None

    @property
    def healthy(self) -> bool:
        return not self.problems


def check(cluster: str | None = None, *, max_age: float | None = None,
          timeout: float = DEFAULT_TIMEOUT, any_host: bool = False,
          backends_only: bool = False) -> Health:
    """Check the cluster ``cluster`` (a key of ``ALT_CLUSTERS`` or ``Q_CLUSTER['name']``;
    None: ``$Q_CLUSTER_NAME``, else the root cluster), its broker and result store.

    :param max_age: seconds a cluster's last stat may be old; None: :func:`default_max_age`.
    :param timeout: seconds the whole check may take; what has not answered by then fails.
    :param any_host: a cluster on any host counts, not only one on this host.
    :param backends_only: check the broker and the result store only, not the cluster.
    """
    try:
        config = get_config(cluster)
    except QhiveError as exc:  # an unknown cluster names the known ones
        return Health([str(exc)])
    deadline = time.monotonic() + timeout
    # Building a driver opens no connection by contract; a third party's might.
    built = _bounded({"drivers": lambda: _drivers(config, backends_only)}, deadline)["drivers"]
    if not built.done:
        return Health([f"building the broker and result store of cluster "
                       f"{config.cluster_name!r} took more than {timeout:g} s; raise --timeout "
                       f"if the host is only slow"])
    if built.error is not None:
        return Health([f"cannot build the broker or result store of cluster "
                       f"{config.cluster_name!r}: {built.error}"])
    broker, store, stats = built.value
    calls: dict[str, Callable[[], Any]] = {
        "broker": lambda: check_broker(broker), "store": lambda: _check_store(store)}
    if stats is not None and stats.keeper is not None:
        calls["stats"] = lambda: stats.get_all()
    answers = _bounded(calls, deadline)
    problems = [problem for problem in (
        _problem(answers["broker"], f"the broker ({broker_name(broker)})", timeout),
        _problem(answers["store"], f"the result store ({type(store).__name__})", timeout),
    ) if problem]
    if backends_only:
        return Health(problems, "" if problems else "ok: broker OK; result store OK")
    # The stats are in the broker or the store: when that failed, it is the cause.
    keeper = answers["broker"] if stats is not None and stats.keeper is broker else answers["store"]
    found, problem = _cluster(config, stats, answers.get("stats"), keeper,
                              max_age if max_age is not None else default_max_age(config),
                              timeout, any_host)
    if problem:
        problems.append(problem)
    if problems or found is None:  # no stat found always comes with a problem
        return Health(problems, stat=found)
    age = max(time.time() - found.timestamp, 0.0)
    return Health([], f"ok: cluster {found.name} ({found.short_id}) on {found.host}, "
                      f"{found.status}, {len(found.workers)} workers, stat {age:.1f} s old; "
                      f"broker OK; result store OK", found)


def _problem(answer: _Outcome, what: str, timeout: float) -> str:
    """The line for a check that failed or did not answer in time; "" if it passed."""
    if not answer.done:
        return (f"{what} did not answer within {timeout:g} s: is its server overloaded, or "
                f"unreachable from this host? (raise --timeout if it is only slow)")
    return "" if answer.error is None else str(answer.error)


def _drivers(config: Config,
             backends_only: bool) -> tuple[Any, ResultStore, StatStore | None]:
    pipeline = get_pipeline(config.cluster_name)
    stats = None if backends_only else Stat.store_for(pipeline)
    return pipeline.broker, pipeline.result_store, stats


def _check_store(store: ResultStore) -> None:
    """Ask the result store once; raise with a line that names the fix."""
    name = type(store).__name__
    try:
        alive = store.ping()
    except SetupError as exc:  # a missing table: the message names the migration
        raise QhiveError(f"the result store ({name}) is not set up: {exc}") from exc
    except Exception as exc:
        raise QhiveError(f"cannot reach the result store ({name}): {exc}. Is its database "
                         f"or server up, and are the result store settings in Q_CLUSTER "
                         f"right?") from exc
    if alive is False:
        raise QhiveError(f"the result store ({name}) did not answer its ping. Is its "
                         f"database or server up, and are its settings in Q_CLUSTER right?")


def _cluster(config: Config, stats: StatStore | None, read: _Outcome | None, keeper: _Outcome,
             max_age: float, timeout: float, any_host: bool) -> tuple[Stat | None, str]:
    """The freshest live stat of the cluster, or the problem that there is none."""
    name, host = config.cluster_name, socket.gethostname()
    if stats is None or stats.keeper is None or read is None:
        reason = stats.reason if stats is not None else "no cluster statistics can be kept"
        return None, (f"{reason[:1].upper()}{reason[1:]}: qhealth cannot see a running "
                      f"cluster. To probe only the broker and the result store, run "
                      f"qhealth --backends-only")
    if not read.done or read.error is not None:
        if not keeper.done or keeper.error is not None:
            return None, (f"cluster {name!r}: state unknown, its statistics are kept in "
                          f"{stats.where}, which does not answer (see above)")
        if not read.done:
            return None, (f"reading the cluster statistics from {stats.where} took more than "
                          f"{timeout:g} s (raise --timeout if it is only slow)")
        return None, (f"cannot read the cluster statistics from {stats.where}: "
                      f"{type(read.error).__name__}: {read.error}; is it up and set up "
                      f"(manage.py migrate)?")
    everywhere: list[Stat] = read.value
    mine = [s for s in everywhere if s.name == name and (any_host or s.host == host)]
    where = "on any host" if any_host else f"on this host ({host})"
    if not mine:
        others = ", ".join(f"{s.name!r} on {s.host}" for s in everywhere)
        seen = (f" (running: {others}; choose one with --cluster NAME"
                f"{'' if any_host else ', or accept any host with --any-host'})"
                if others else "")
        return None, (f"no cluster {name!r} is running {where}: start one with "
                      f"`manage.py qcluster --name {name}` (if one runs, its log says why it "
                      f"cannot save its statistics in {stats.where}){seen}")
    now = time.time()
    alive = [s for s in mine if s.status not in (STOPPED, STOPPING)]
    fresh = [s for s in alive if now - s.timestamp <= max_age]
    if fresh:
        return max(fresh, key=lambda s: s.timestamp), ""
    if alive:
        stat = max(alive, key=lambda s: s.timestamp)
        return stat, (f"cluster {name!r} ({stat.short_id}) on {stat.host} last saved its "
                      f"statistics {now - stat.timestamp:.1f} s ago, more than --max-age "
                      f"{max_age:g} s (it saves them every guard_cycle, "
                      f"{config.guard_cycle:g} s): it is stuck or was killed. Restart it, "
                      f"or raise --max-age if its host is only slow")
    stat = max(mine, key=lambda s: s.timestamp)
    return stat, (f"cluster {name!r} ({stat.short_id}) on {stat.host} is {stat.status}: "
                  f"not ready, it is shutting down or has stopped. Start it again with "
                  f"`manage.py qcluster --name {name}` (a service manager restarts it)")


# --------------------------------------------------------------------------- time-bounded calls


@dataclasses.dataclass
class _Outcome:
    """What one bounded call gave: ``done`` is set last, after ``value`` or ``error``."""

    value: Any = None
    error: BaseException | None = None
    done: bool = False


def _bounded(calls: Mapping[str, Callable[[], Any]], deadline: float) -> dict[str, _Outcome]:
    """Run the calls in parallel, each in a daemon thread, until ``deadline``
    (``time.monotonic()``). One that has not returned by then is left running with
    ``done`` False: a daemon thread, unlike a ThreadPoolExecutor's, does not hold up
    the exit of the process."""
    outcomes = {name: _Outcome() for name in calls}
    threads = [threading.Thread(target=_run, args=(call, outcomes[name]), daemon=True,
                                name=f"qhealth-{name}") for name, call in calls.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
    return outcomes


def _run(call: Callable[[], Any], outcome: _Outcome) -> None:
    try:
        outcome.value = call()
    except Exception as exc:
        outcome.error = exc
    finally:
        # Django's connections are per thread: close the ones this thread opened (the ORM
        # broker's or store's), which nothing else would.
        connections.close_all()
        outcome.done = True

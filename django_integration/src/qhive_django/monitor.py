"""Django Q's monitoring API: :class:`Stat`, and the screens of ``qmonitor``,
``qinfo`` and ``qmemory`` (:func:`monitor`, :func:`info`, :func:`memory`).

Statistics come from where the clusters keep them (:func:`stat_store`): the
broker's statistics store (the ORM broker keeps them in a table of its own, the
Redis broker in Redis), else the result store's, so monitoring works without the
shared Django cache Django Q needs. When neither can keep them the screens say
so, and why, instead of "no clusters". Stats are signed: one saved with another
``SECRET_KEY`` (or altered) is not shown. They are keyed by ``Q_CLUSTER['name']``:
every cluster of the project, ALT clusters included, shows together — as long
as they save their stats in the same place as the root cluster.

The functions take ``stream`` (default ``sys.stdout``) so that the commands can
print where Django's ``call_command(..., stdout=...)`` wants; with a stream that
is not a terminal they print plain text, without colours or cursor movement.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import signal
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, TypeVar

import psutil
import qhive
from blessed import Terminal
from django.conf import settings
from django.db import DatabaseError, connections
from django.utils import timezone
from qhive.cluster.stat import STARTING, STOPPED, STOPPING, WORKING, StatStore, choose_store
from qhive.cluster.stat import Stat as CoreStat
from qhive.errors import BrokerConnectionError
from qhive.running import TaskState, running_tasks

from qhive_django.conf import get_config, get_pipeline

if TYPE_CHECKING:
    from qhive.contracts import Broker, ResultStore

__all__ = ["Stat", "broker_name", "check_broker", "cluster_ids", "config_lines", "info",
           "memory", "monitor", "running", "stat_store", "summary"]

T = TypeVar("T")

#: How often the live screens refresh, in seconds.
REFRESH = 1.0
#: qmonitor's columns: Django Q's, plus the cluster (queue) name for ALT clusters.
MONITOR_COLUMNS = ("Host", "Id", "Cluster", "State", "Pool", "TQ", "RQ", "RC", "Up")
#: qmemory's columns. The monitor is a thread of the sentinel, so its memory is part
#: of "Sentinel"; the slot of Django Q's monitor process shows the zygote, the
#: cluster's one other process (the fork of the sentinel that workers are forked from).
MEMORY_COLUMNS = ("Host", "Id", "Available (%)", "Available (MB)", "Total (MB)",
                  "Sentinel (MB)", "Zygote (MB)", "Workers (MB)")
MEMORY_LEGEND = ("Sentinel (MB) includes the monitor thread; workers are forked from the "
                 "zygote. RSS counts memory they share once per process.")
#: The running tasks' table, below the clusters in qmonitor and qinfo.
RUNNING_COLUMNS = ("Running task", "Func", "Cluster", "Host", "Worker", "For", "Progress")
NO_CLUSTERS = "No clusters appear to be running."
PRESS_Q = "[Press q to quit]"
OTHER_HOST = "other host"
_MB = 1000**2


# --------------------------------------------------------------------------- Stat


class Stat(CoreStat):
    """A cluster's status, with Django Q's class methods.

    Fields and methods are those of :class:`qhive.cluster.Stat` (``cluster_id``,
    ``tob``, ``uptime()``, ``reincarnations``, ``status``, ``task_q_size``,
    ``done_q_size``, ``pusher``, ``monitor``, ``sentinel``, ``workers``,
    ``empty_queues()``, ...). The pusher and monitor are threads of the sentinel
    in qhive, so ``pusher`` and ``monitor`` hold the sentinel's pid.
    """

    @classmethod
    def get(cls, cluster_id: str, broker: Broker | None = None) -> Stat:  # type: ignore[override]
        """The stat of the cluster ``cluster_id`` of this project. Like Django Q, a
        cluster that is not running gets a placeholder with status ``Stopped`` and no
        workers, so ``Stat.get(cluster_id).status`` always works.

        :param broker: a qhive broker; default: the configured one.
        """
        stat = stat_store(broker).get(cluster_id, cls)
        if stat is None:
            stat = cls(cluster_id=cluster_id, name="", host="", pid=0, status=STOPPED,
                       tob=0.0, timestamp=0.0)
        return stat  # type: ignore[return-value]

    @classmethod
    def get_all(cls, broker: Broker | None = None) -> list[Stat]:  # type: ignore[override]
        """The stats of every running cluster of this project (``Q_CLUSTER['name']``),
        ALT clusters included.

        :param broker: a qhive broker; default: the configured one.
        """
        return stat_store(broker).get_all(cls)


def stat_store(broker: Broker | None = None) -> StatStore:
    """Where the clusters of this project keep their stats, as the cluster chose it
    (:func:`qhive.cluster.stat.choose_store`): ``broker`` (default: the configured
    one) if it keeps statistics, else the configured result store if it can.
    Stats are verified with the configured cluster's signer."""
    pipeline = get_pipeline()
    if broker is None:
        return CoreStat.store_for(pipeline)
    return choose_store(broker, lambda: pipeline.result_store, pipeline.codec.signer,
                        pipeline.config.name)


def running(broker: Broker | None = None) -> list[TaskState]:
    """The tasks the project's clusters run now, longest running first: where
    (cluster, host, worker pid), since when, and the progress each reported."""
    return running_tasks(stat_store(broker).get_all(Stat))


def _running_table(term: Terminal, stats: Sequence[CoreStat]) -> list[str]:
    """The running tasks of ``stats`` as a table under a blank line; none: nothing."""
    tasks = running_tasks(list(stats))
    if not tasks:
        return []
    now = time.time()
    rows = [[t.name or t.id, t.func or "?", t.cluster or "?", t.host or "?", str(t.worker),
             _uptime(now - t.started.timestamp()) if t.started else "?",
             t.progress_text or "-"] for t in tasks]
    return ["", *_table(term, RUNNING_COLUMNS, rows)]


def project_name() -> str:
    """The project's name: the prefix every cluster of it saves its stats under."""
    return get_config().name


def default_broker() -> Broker:
    """The broker of the configured cluster (``$Q_CLUSTER_NAME``, else the root one)."""
    return get_pipeline().broker


def check_broker(broker: Broker) -> None:
    """Talk to the broker once, so that a dead server is one clear error, not a
    screen of failures.

    :raises BrokerConnectionError: the broker cannot be reached, saying what to check.
    """
    try:
        alive = broker.ping()
    except Exception as exc:
        raise BrokerConnectionError(
            f"cannot reach the broker ({broker_name(broker)}): {exc}. Is its server "
            f"running, and are the broker settings in Q_CLUSTER right?") from exc
    if alive is False:  # Django Q-style brokers answer False instead of raising
        raise BrokerConnectionError(
            f"the broker ({broker_name(broker)}) did not answer its ping. Is its server "
            f"running, and are the broker settings in Q_CLUSTER right?")


def broker_name(broker: Broker) -> str:
    """The broker's class and queue, for messages: ``RedisBroker, queue 'mysite'``."""
    queue = getattr(broker, "queue", None)
    return f"{type(broker).__name__}, queue {queue!r}" if queue else type(broker).__name__


# --------------------------------------------------------------------------- what the screens show


def result_counts(store: ResultStore) -> tuple[int, int] | None:
    """``(successes, failures)`` kept by the result store, without loading them; None
    when the store cannot count them (:meth:`~qhive.contracts.ResultStore.summary`)."""
    counted = store.summary(timezone.now() - dt.timedelta(days=1))
    return None if counted is None else (counted.successes, counted.failures)


@dataclasses.dataclass
class Summary:
    """What ``qinfo`` shows: sums over every running cluster of the project and
    counts from the result store (None: the store cannot tell; for the clusters:
    no statistics can be kept)."""

    clusters: int | None
    workers: int | None
    restarts: int | None
    queued: int
    successes: int | None
    failures: int | None
    schedules: int | None
    #: successes over the last 24 hours, per :attr:`per` (second, minute, hour or day)
    rate: float | None
    per: str
    #: mean seconds from enqueue to end of the successes of the last 24 hours
    avg_time: float | None


def summary(broker: Broker, store: ResultStore, stats: Sequence[CoreStat] | None) -> Summary:
    """The numbers of ``qinfo``, computed with aggregate queries (no rows are loaded);
    ``stats`` None: no statistics can be kept, the cluster numbers are unknown."""
    successes = failures = rate = avg_time = None
    per = "day"
    counted = store.summary(timezone.now() - dt.timedelta(days=1))
    if counted is not None:
        successes, failures = counted.successes, counted.failures
        rate, per = _rate(counted.recent_successes)
        avg_time = counted.recent_mean_seconds
    known = stats is not None
    return Summary(
        clusters=len(stats) if known else None,
        workers=sum(len(s.workers) for s in stats) if known else None,
        restarts=sum(s.reincarnations for s in stats) if known else None,
        queued=broker.queue_size(),
        successes=successes, failures=failures, schedules=_schedules(), rate=rate, per=per,
        avg_time=avg_time,
    )


def _rate(per_day: int) -> tuple[float, str]:
    """Tasks per second, minute, hour or day, whichever shows more than one.
    (Django Q2 multiplies instead of dividing for the per-second rate.)"""
    for seconds, per in ((1, "second"), (60, "minute"), (3600, "hour")):
        if per_day > 86400 / seconds:
            return per_day * seconds / 86400, per
    return float(per_day), "day"


def _schedules() -> int | None:
    """Schedules that will still run (``repeats`` not 0); None without the table."""
    # Models need the app registry: this module is imported before Django is set up.
    from qhive_django.models import Schedule

    try:
        return Schedule.objects.exclude(repeats=0).count()
    except DatabaseError:  # not migrated yet: qinfo still shows the rest
        return None


def cluster_ids(broker: Broker | None = None) -> list[str]:
    """The ids of the running clusters of this project (``qinfo --ids``)."""
    return [stat.cluster_id for stat in Stat.get_all(broker)]


def config_lines() -> list[str]:
    """``qinfo --config``: every setting of the configured cluster, one ``key: value``
    a line, with secrets masked (``SECRET_KEY`` never shows; nor do passwords,
    tokens or the password of a URL)."""
    lines = [f"VERSION: qhive {qhive.__version__}"]
    for key, value in get_config().redacted().items():
        lines.append(f"{key}: {value if isinstance(value, str) else repr(value)}")
    return lines


# --------------------------------------------------------------------------- terminal


def _terminal(stream: IO[str] | None) -> Terminal:
    return Terminal(stream=stream if stream is not None else sys.stdout)


def _cells(term: Terminal, values: Iterable[str], width: int) -> str:
    """One line of cells ``width`` wide (a value is cut to leave one space)."""
    return "".join(term.ljust(term.truncate(str(v), width - 1), width) for v in values)


def _column_width(term: Terminal, rows: Iterable[Sequence[str]], columns: int) -> int:
    """On a terminal the columns share its width, as in Django Q; elsewhere (a pipe,
    a file) each is as wide as the longest value."""
    if term.does_styling:
        return max(term.width // columns, 10)
    return max((term.length(str(cell)) for row in rows for cell in row), default=8) + 2


def _draw(term: Terminal, stream: IO[str], lines: Sequence[str]) -> None:
    """Write one screen: in place on a terminal, as plain lines elsewhere."""
    if term.does_styling:
        # A line longer than the terminal would wrap onto the next one: cut it.
        out = [term.move_yx(row, 0) + term.truncate(line, term.width) + term.clear_eol
               for row, line in enumerate(lines)]
        stream.write(term.home + "".join(out) + term.clear_eos)
        stream.flush()
    else:
        _draw_once(term, stream, lines)


def _draw_once(term: Terminal, stream: IO[str], lines: Sequence[str]) -> None:
    """Print ``lines`` where the cursor is (a one-off report, not a screen)."""
    if term.does_styling:
        stream.write("".join(line + "\n" for line in lines))
    else:
        stream.write("".join(line.rstrip() + "\n" for line in lines))
    stream.flush()


def _live(term: Terminal, stream: IO[str], frame: Callable[[], Sequence[str]]) -> None:
    """Redraw ``frame()`` every :data:`REFRESH` seconds until q, Q, Ctrl-C or SIGTERM.

    Without a keyboard (stdin not a terminal: ssh without -t, CI, ``</dev/null``)
    ``inkey`` returns at once; the rest of the interval is then slept, so a pipe
    gets one plain snapshot per interval instead of as many as the CPU can draw.
    """
    with term.fullscreen(), term.hidden_cursor(), term.cbreak(), _sigterm_quits():
        try:
            while True:
                _draw(term, stream, frame())
                deadline = time.monotonic() + REFRESH
                key = term.inkey(timeout=REFRESH)
                if key in ("q", "Q"):
                    return
                if not key:  # no key: the interval is over, or there is no keyboard
                    time.sleep(max(deadline - time.monotonic(), 0.0))
        except (KeyboardInterrupt, _Terminated):  # leave the terminal as it was
            return


class _Terminated(BaseException):
    """SIGTERM arrived while a live screen was shown. A BaseException, as
    KeyboardInterrupt: it may arrive inside a read that :func:`_attempt` guards, and
    must not be taken for a failed read."""


@contextlib.contextmanager
def _sigterm_quits() -> Iterator[None]:
    """Let SIGTERM end a live screen as Ctrl-C does (the terminal is restored, the
    exit code is 0), where Python's default would die at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return

    def terminated(signum: int, frame: Any) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _empty(term: Terminal, stats: StatStore, width: int) -> list[str]:
    """What a screen shows instead of cluster rows: that none runs, or why none can
    be seen (no statistics can be kept), wrapped to ``width``."""
    if stats.keeper is not None:
        return [NO_CLUSTERS]
    reason = stats.reason[:1].upper() + stats.reason[1:]
    if term.does_styling:
        width = min(width, term.width)
    return [term.yellow(line) for line in textwrap.wrap(reason, max(width, 40))]


def _uptime(seconds: float) -> str:
    """``h:mm:ss`` (hours go beyond 24)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}"


def _attempt(errors: list[str], what: str, call: Callable[[], T], fallback: T) -> T:
    """``call()``, or ``fallback`` with the error noted: a live screen must outlive a
    broker or database that fails for a moment."""
    try:
        return call()
    except Exception as exc:
        errors.append(f"{what}: {type(exc).__name__}: {exc}".replace("\n", " "))
        _reset_connections()
        return fallback


def _reset_connections() -> None:
    # A failed query can leave Django's connection unusable (PostgreSQL aborts the
    # transaction, a dropped server leaves a dead socket): close it so the next
    # refresh reconnects — unless a caller's transaction holds it.
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


# --------------------------------------------------------------------------- qmonitor


@dataclasses.dataclass
class _Sample:
    stats: list[Stat] = dataclasses.field(default_factory=list)
    broker_info: str = ""
    queued: str = "-"
    counts: tuple[int, int] | None = None
    errors: list[str] = dataclasses.field(default_factory=list)


class _Sampler:
    """Reads what ``qmonitor`` shows, keeping the last good values when a read fails."""

    def __init__(self, broker: Broker, stats: StatStore,
                 store: Callable[[], ResultStore]) -> None:
        self.broker = broker
        self.stats = stats
        self.store = store
        self.last = _Sample()

    def sample(self) -> _Sample:
        errors: list[str] = []
        last = self.last
        broker = self.broker
        stats = _attempt(errors, "stats", lambda: self.stats.get_all(Stat), last.stats)
        broker_info = last.broker_info or _attempt(errors, "broker", broker.info, "")
        queued = _attempt(errors, "queue", self._queued, last.queued)
        counts = _attempt(errors, "results", lambda: result_counts(self.store()), last.counts)
        self.last = _Sample(stats, broker_info, queued, counts, errors)
        return self.last

    def _queued(self) -> str:
        size, locked = self.broker.queue_size(), self.broker.lock_size()
        return f"{size}({locked})" if locked else str(size)


def _monitor_frame(term: Terminal, sample: _Sample, stats: StatStore, *,
                   live: bool) -> list[str]:
    rows = [_monitor_row(term, stat) for stat in sample.stats]
    successes, failures = sample.counts if sample.counts is not None else ("-", "-")
    bar = [term.cyan("Queued"), sample.queued, term.cyan("Success"), str(successes),
           term.cyan("Failures"), str(failures)]
    width = _column_width(term, [MONITOR_COLUMNS, *rows, bar], len(MONITOR_COLUMNS))
    lines = [term.black_on_green(_cells(term, MONITOR_COLUMNS, width))]
    lines += [_cells(term, row, width) for row in rows] or _empty(term, stats, width * 6)
    lines += _running_table(term, sample.stats)
    lines.append("")
    broker_info = sample.broker_info or "?"
    info_width = width * 3  # the broker's info line is long: three columns
    if not term.does_styling:
        info_width = max(info_width, term.length(broker_info) + 2)
    lines.append(term.black_on_cyan(term.ljust(term.truncate(broker_info, info_width - 1),
                                               info_width)) + _cells(term, bar, width))
    lines.append("")
    if sample.errors:
        lines.append(term.white_on_red("; ".join(sample.errors) + " (last values shown)"))
    if live:
        lines.append(PRESS_Q)
    return lines


def _monitor_row(term: Terminal, stat: CoreStat) -> list[str]:
    pool = str(len(stat.workers))
    if stat.configured_workers and len(stat.workers) < stat.configured_workers:
        pool = term.yellow(pool)  # workers missing: dying, or being replaced
    tq = str(stat.task_q_size)
    if stat.queue_limit and stat.task_q_size + stat.busy >= stat.queue_limit:
        tq = term.green(tq)  # at queue_limit: the cluster takes no more
    return [stat.host, stat.short_id, stat.name, _state(term, stat.status), pool, tq,
            str(stat.done_q_size), str(stat.reincarnations), _uptime(stat.uptime())]


def _state(term: Terminal, status: str) -> str:
    if status == WORKING:
        return term.green(status)
    if status in (STARTING, STOPPING):
        return term.yellow(status)
    if status == STOPPED:
        return term.red(status)
    return status


def monitor(run_once: bool = False, broker: Broker | None = None, *,
            stream: IO[str] | None = None) -> list[Stat]:
    """``qmonitor``: every running cluster of the project, refreshed every second
    until q, Q, Ctrl-C or SIGTERM; with ``run_once``, one screen as plain lines.
    Without a terminal (a pipe, ``</dev/null``) it prints one screen a second.

    :returns: the stats last shown (as Django Q's ``monitor()`` returns ``Stat.get_all()``).
    :raises BrokerConnectionError: the broker cannot be reached at start. Later
        failures are shown on the screen, which keeps refreshing.
    """
    stream = stream if stream is not None else sys.stdout
    term = _terminal(stream)
    broker = broker if broker is not None else default_broker()
    check_broker(broker)
    stats = stat_store(broker)
    sampler = _Sampler(broker, stats, lambda: get_pipeline().result_store)
    if run_once:
        _draw_once(term, stream, _monitor_frame(term, sampler.sample(), stats, live=False))
    else:
        _live(term, stream, lambda: _monitor_frame(term, sampler.sample(), stats, live=True))
    return sampler.last.stats


# --------------------------------------------------------------------------- qinfo


def info(broker: Broker | None = None, *, stream: IO[str] | None = None) -> bool:
    """``qinfo``: a one-off summary of the project's clusters and results.

    :returns: True (as Django Q's ``info()``).
    """
    stream = stream if stream is not None else sys.stdout
    term = _terminal(stream)
    broker = broker if broker is not None else default_broker()
    check_broker(broker)
    stats = stat_store(broker)
    clusters = stats.get_all(Stat) if stats.keeper is not None else None
    numbers = summary(broker, get_pipeline().result_store, clusters)

    def shown(value: Any, digits: int = 0) -> str:
        if value is None:
            return "-"
        return f"{value:.{digits}f}" if digits else str(value)

    rows = [
        ("Clusters", shown(numbers.clusters), "Workers", shown(numbers.workers),
         "Restarts", shown(numbers.restarts)),
        ("Queued", numbers.queued, "Successes", shown(numbers.successes),
         "Failures", shown(numbers.failures)),
        ("Schedules", shown(numbers.schedules), f"Tasks/{numbers.per}", shown(numbers.rate, 2),
         "Avg time", shown(numbers.avg_time, 4)),
    ]
    header = f"-- {project_name()} qhive {qhive.__version__} on {broker.info()} --"
    cells = [[term.cyan(str(v)) if i % 2 == 0 else str(v) for i, v in enumerate(row)]
             for row in rows]
    width = _column_width(term, cells, 6)
    lines = [term.black_on_green(term.ljust(header, width * 6))]
    lines += [_cells(term, row, width) for row in cells]
    if stats.keeper is None:
        lines += _empty(term, stats, width * 6)
    lines += _running_table(term, clusters or [])
    _draw_once(term, stream, lines)
    return True


# --------------------------------------------------------------------------- qmemory


class _MemoryWatch:
    """Measures the clusters of this host with psutil, remembering the lowest
    available memory seen since the screen started."""

    def __init__(self, psutil: Any) -> None:
        self.psutil = psutil
        self.host = socket.gethostname()
        self.lowest: tuple[float, float, dt.datetime] | None = None  # (%, MB, when)

    def host_memory(self) -> tuple[float, float, float]:
        """``(available %, available MB, total MB)`` of this host."""
        memory = self.psutil.virtual_memory()
        percent = round(memory.available * 100 / memory.total, 2)
        available = round(memory.available / _MB, 2)
        if self.lowest is None or percent < self.lowest[0]:
            self.lowest = (percent, available, _now())
        return percent, available, round(memory.total / _MB, 2)

    def rss(self, pid: int) -> float | None:
        """Resident memory of ``pid`` in MB; None if it is gone or not ours to read."""
        try:
            return round(self.psutil.Process(pid).memory_info().rss / _MB, 2)
        except (self.psutil.Error, ValueError):
            return None

    def zygote(self, stat: CoreStat) -> int | None:
        """The process the workers were forked from, when it is not the sentinel."""
        for pid in stat.workers:
            try:
                parent = self.psutil.Process(pid).ppid()
            except (self.psutil.Error, ValueError):
                continue
            return parent if parent != stat.pid else None
        return None

    def row(self, stat: CoreStat, workers: int, host: tuple[float, float, float]) -> list[str]:
        """The cells of one cluster; ``workers`` per-worker cells follow the sum."""
        measured = len(MEMORY_COLUMNS) - 2 + workers
        if stat.host != self.host:  # psutil sees this host's processes only
            return [stat.host, stat.short_id, OTHER_HOST, *["-"] * (measured - 1)]
        each = [self.rss(pid) for pid in stat.workers]
        known = [mb for mb in each if mb is not None]
        zygote = self.zygote(stat)
        cells = [*host, self.rss(stat.sentinel),
                 self.rss(zygote) if zygote else None,
                 round(sum(known), 2) if known else None, *each[:workers]]
        cells += [None] * (measured - len(cells))
        return [stat.host, stat.short_id, *("-" if c is None else f"{c:.2f}" for c in cells)]

    def footer(self) -> str:
        if self.lowest is None:
            return ""
        percent, available, when = self.lowest
        return (f"Lowest available memory: {percent:.2f} % ({available:.2f} MB) "
                f"at {when:%Y-%m-%d %H:%M:%S}")


def _table(term: Terminal, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """qmemory's header and rows, each column as wide as its widest cell, so that no
    header is cut (an equal share of the terminal cut ``Zygote (MB)``). On a
    terminal too narrow for that, headers take two lines — the name, then the unit —
    and the columns that still do not fit are left off, as a note says."""
    header = [list(columns)]
    widths = _widths(term, [*header, *rows])
    if term.does_styling and sum(widths) > term.width:
        header = [list(part) for part in zip(*map(_name_and_unit, columns), strict=True)]
        widths = _widths(term, [*header, *rows])
    fit = len(columns)
    if term.does_styling:
        while fit > 1 and sum(widths[:fit]) > term.width:
            fit -= 1
    lines = [term.black_on_green(_row(term, line[:fit], widths)) for line in header]
    lines += [_row(term, row[:fit], widths) for row in rows]
    if fit < len(columns):
        left_off = ", ".join(columns[fit:])
        lines.append(f"Not shown, the terminal is too narrow ({term.width} columns): {left_off}")
    return lines


def _name_and_unit(header: str) -> tuple[str, str]:
    """``"Available (MB)"`` -> ``("Available", "(MB)")``; ``"Host"`` -> ``("Host", "")``."""
    name, space, unit = header.rpartition(" (")
    return (name, "(" + unit) if space else (header, "")


def _widths(term: Terminal, rows: Iterable[Sequence[str]]) -> list[int]:
    """The width of each column: its widest cell and two spaces."""
    widths: list[int] = []
    for row in rows:
        for index, cell in enumerate(row):
            width = term.length(str(cell)) + 2
            if index == len(widths):
                widths.append(width)
            elif width > widths[index]:
                widths[index] = width
    return widths


def _row(term: Terminal, cells: Sequence[str], widths: Sequence[int]) -> str:
    # ``cells`` may be the first columns only (those that fit): zip stops with them.
    return "".join(term.ljust(str(cell), width)
                   for cell, width in zip(cells, widths, strict=False))


def _now() -> dt.datetime:
    return timezone.localtime() if settings.USE_TZ else dt.datetime.now()


def _memory_frame(term: Terminal, watch: _MemoryWatch, stats: Sequence[CoreStat],
                  errors: Sequence[str], *, workers: bool, live: bool,
                  store: StatStore | None = None) -> list[str]:
    per_worker = max((len(s.workers) for s in stats), default=0) if workers else 0
    columns = [*MEMORY_COLUMNS, *(f"Worker #{n + 1} (MB)" for n in range(per_worker))]
    host = watch.host_memory()
    rows = [watch.row(stat, per_worker, host) for stat in stats]
    lines = _table(term, columns, rows)
    if not rows:
        lines += _empty(term, store, 100) if store is not None else [NO_CLUSTERS]
    lines += ["", MEMORY_LEGEND, term.black_on_cyan(watch.footer()), ""]
    if errors:
        lines.append(term.white_on_red("; ".join(errors)))
    if live:
        lines.append(PRESS_Q)
    return lines


def memory(run_once: bool = False, workers: bool = False, broker: Broker | None = None, *,
           stream: IO[str] | None = None) -> list[Stat]:
    """``qmemory``: the memory of this host and of every cluster of the project on it,
    refreshed every second until q, Q, Ctrl-C or SIGTERM (without a terminal: one
    screen a second, as plain text); ``workers`` adds one column per worker.

    Clusters on other hosts show ``other host``: psutil measures local processes only.

    :returns: the stats last shown (as Django Q's ``memory()``).
    """
    stream = stream if stream is not None else sys.stdout
    term = _terminal(stream)
    broker = broker if broker is not None else default_broker()
    check_broker(broker)
    stats = stat_store(broker)
    watch = _MemoryWatch(psutil)
    shown: list[Stat] = []

    def frame(live: bool) -> list[str]:
        errors: list[str] = []
        shown[:] = _attempt(errors, "stats", lambda: stats.get_all(Stat), shown)
        return _memory_frame(term, watch, shown, errors, workers=workers, live=live,
                             store=stats)

    if run_once:
        _draw_once(term, stream, frame(live=False))
    else:
        _live(term, stream, lambda: frame(live=True))
    return list(shown)

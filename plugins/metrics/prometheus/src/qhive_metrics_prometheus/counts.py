"""The directory where a cluster's processes count task results, in
``prometheus_client``'s multiprocess mode, and its reading at each scrape.

Workers save their own results and run ``qhive_post_execute`` themselves, so the
counts are made in many processes. The sentinel makes a private temporary directory
(removed when its process exits) and sets ``PROMETHEUS_MULTIPROC_DIR`` to it before its
first worker starts; each worker gets the sentinel's environment as it starts (it is a
fork of the cluster's zygote, which applies the environment the sentinel sends with
each request), puts its ``prometheus_client`` in multiprocess mode
(:func:`~qhive_metrics_prometheus.taskmetrics.use_multiprocess_mode`) and writes its
values to files of its pid there (``counter_<pid>.db``, ``histogram_<pid>.db``).

The sentinel's own ``prometheus_client`` stays as it was (it was imported before the
variable was set): the results the sentinel saves itself (tasks whose worker died or
timed out) go to files of its own in the same format (:class:`SentinelFiles`).

A worker that is replaced leaves its files behind, and its counts must keep counting.
So that a cluster whose workers recycle does not pile up files (a pair per worker, each
read at every scrape), each scrape first folds the files of processes that have exited
into the sentinel's and removes them.

An environment that sets ``PROMETHEUS_MULTIPROC_DIR`` already (a project that uses
multiprocess mode itself) keeps it: the cluster counts in that directory, which is left
in place at exit, and only files holding nothing but this plugin's metrics are folded.
"""

from __future__ import annotations

import atexit
import bisect
import glob
import json
import logging
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import psutil
from prometheus_client.core import Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from qhive_metrics_prometheus.taskmetrics import (
    HELP,
    LABELS,
    NAMES,
    RUN_SECONDS,
    TASKS,
    WAIT_SECONDS,
    Observation,
)

if TYPE_CHECKING:
    from qhive_metrics_prometheus.options import Options

logger = logging.getLogger("qhive.metrics.prometheus")

#: prometheus_client's multiprocess directory, which the sentinel gives its workers.
DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: The cluster whose workers count (the plugin's workers do nothing without it).
CLUSTER_VARIABLE = "QHIVE_PROMETHEUS_CLUSTER"
#: The file types whose values add up across processes, and so fold.
ADDITIVE = ("counter", "histogram")


class CountDirectoryError(Exception):
    """The directory cannot be used (the message says why and what to do)."""


class CountDirectory(Collector):
    """One cluster's count directory, read at each scrape.

    :param cluster: the cluster's name: the ``cluster`` label of the samples served.
    """

    def __init__(self, cluster: str, options: Options) -> None:
        self.cluster = cluster
        self.options = options
        self.path = ""
        self.owned = False  # made by us: removed at exit, and every exited file folds
        self.files: SentinelFiles | None = None
        self._saved: dict[str, str | None] = {}
        self._kept: set[str] = set()  # files of exited processes holding others' metrics
        self._lock = threading.Lock()  # one scrape folds and reads at a time

    def open(self) -> None:
        """Make (or adopt) the directory and set the variables workers are given.

        :raises CountDirectoryError: ``PROMETHEUS_MULTIPROC_DIR`` names no directory.
        """
        given = os.environ.get(DIR_VARIABLE)
        if given and not os.path.isdir(given):
            raise CountDirectoryError(
                f"{DIR_VARIABLE}={given!r} in the environment is not a directory: create it, "
                f"or unset the variable for the cluster to count in a directory of its own")
        try:
            if given:
                self.path = given
            else:
                self.path = tempfile.mkdtemp(prefix=f"qhive-prometheus-{os.getpid()}-")
                self.owned = True
                # Not at the stop: workers still save and count then. A sentinel killed
                # with SIGKILL leaves it to the system's temporary files cleaner.
                atexit.register(shutil.rmtree, self.path, ignore_errors=True)
            self.files = SentinelFiles(self.path, self.cluster, self.options)
        except OSError as exc:
            where = given or tempfile.gettempdir()
            raise CountDirectoryError(
                f"cannot write the count files in {where} ({exc.strerror or exc}): give the "
                f"cluster's user a writable " + (DIR_VARIABLE if given else "TMPDIR")) from exc
        for name, value in ((DIR_VARIABLE, self.path), (CLUSTER_VARIABLE, self.cluster)):
            self._saved[name] = os.environ.get(name)
            os.environ[name] = value

    def close(self, remove: bool = False) -> None:
        """Restore the environment (no worker starts once the stop began); with
        ``remove``, remove the directory now (no worker ever started)."""
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()
        if self.files is not None:
            self.files.close()
        if remove and self.owned:
            shutil.rmtree(self.path, ignore_errors=True)

    def add(self, seen: Observation) -> None:
        """Count a result the sentinel saved itself."""
        assert self.files is not None
        self.files.add(seen)

    # -- the scrape
    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._fold_exited()
            families = self._merge()
        for family in families:
            if family.name not in NAMES:  # metrics of the project, in its workers
                continue
            family.samples = [s for s in family.samples
                              if s.labels.get("cluster") == self.cluster]
            if family.samples:
                yield family

    def _merge(self, attempts: int = 3) -> Iterable[Metric]:
        while True:
            files = [path for path in glob.glob(os.path.join(self.path, "*.db"))
                     if _size(path)]  # 0: being made by prometheus_client (no value yet)
            try:
                return MultiProcessCollector.merge(files, accumulate=True)
            except FileNotFoundError:  # folded by another cluster's sentinel meanwhile
                attempts -= 1
                if not attempts:
                    raise

    def _fold_exited(self) -> None:
        for path in glob.glob(os.path.join(self.path, "*.db")):
            if path in self._kept:
                continue
            kind, _, rest = os.path.basename(path)[:-3].partition("_")
            pid = rest.rpartition("_")[2]  # gauge files: gauge_<mode>_<pid>.db
            # A name without a pid is a sentinel's; a zombie still exists: not yet.
            if not pid.isdigit() or int(pid) == os.getpid() or psutil.pid_exists(int(pid)):
                continue
            try:
                self._fold(path, kind)
            except OSError as exc:  # read or removed by someone else: the next scrape
                logger.debug("Prometheus metrics: cannot fold %s: %s", path, exc)

    def _fold(self, path: str, kind: str) -> None:
        """Add an exited process's counts to the sentinel's files; remove its file."""
        assert self.files is not None
        entries = [(key, value) for key, value, _time, _at
                   in (MmapedDict.read_all_values_from_file(path) if _size(path) else ())]
        ours = [(key, value) for key, value in entries if _metric_of(key) in NAMES]
        if not self.owned and (kind not in ADDITIVE or len(ours) < len(entries)):
            self._kept.add(path)  # a shared directory: others' values are not ours to move
            return
        # Claimed first: two sentinels sharing a directory never both fold a file. (Its
        # pid exited; one reused by a new worker this very moment would lose that
        # worker's first counts: a window of microseconds.)
        claimed = f"{path}.folding"
        os.rename(path, claimed)
        try:
            if kind in ADDITIVE:
                self.files.fold(kind, ours)
        except OSError:
            os.rename(claimed, path)  # counted where it was, as before
            raise
        os.remove(claimed)


class SentinelFiles:
    """The sentinel's own files in the count directory, written as ``prometheus_client``
    writes a worker's values (same keys): the results the sentinel saved, and the counts
    of exited processes folded in. Named without a pid, so never folded themselves."""

    def __init__(self, path: str, cluster: str, options: Options) -> None:
        self.cluster = cluster
        name = f"qhive-sentinel-{os.getpid()}"
        self._files = {kind: MmapedDict(os.path.join(path, f"{kind}_{name}.db"))
                       for kind in ADDITIVE}
        # prometheus_client's Histogram adds +Inf to the bounds; so do we.
        self._bounds = {RUN_SECONDS: (*options.run_buckets, math.inf),
                        WAIT_SECONDS: (*options.wait_buckets, math.inf)}
        self._lock = threading.Lock()  # the hook thread adds, a scrape folds
        self._closed = False

    def add(self, seen: Observation) -> None:
        with self._lock:
            if self._closed:  # a result of a dead worker's task, saved as the cluster stops
                return
            self._inc("counter", mmap_key(TASKS, f"{TASKS}_total", LABELS[TASKS],
                                          [self.cluster, seen.func, seen.status], HELP[TASKS]),
                      1.0)
            if seen.run is not None:
                self._observe(RUN_SECONDS, [self.cluster, seen.func], seen.run)
            if seen.wait is not None:
                self._observe(WAIT_SECONDS, [self.cluster], seen.wait)

    def fold(self, kind: str, entries: list[tuple[str, float]]) -> None:
        """:raises OSError: closed (a scrape as the cluster stops): nothing was added."""
        with self._lock:
            if self._closed:
                raise OSError("the sentinel's count files are closed")
            for key, value in entries:
                self._inc(kind, key, value)

    def _observe(self, name: str, labels: list[str], amount: float) -> None:
        """Histogram.observe(): the sum, and one in the first bucket that holds ``amount``
        (every bucket written, so that each exists for these labels)."""
        names, doc = LABELS[name], HELP[name]
        self._inc("histogram", mmap_key(name, f"{name}_sum", names, labels, doc), amount)
        bounds = self._bounds[name]
        hit = bisect.bisect_left(bounds, amount)
        for index, bound in enumerate(bounds):
            key = mmap_key(name, f"{name}_bucket", [*names, "le"],
                           [*labels, floatToGoString(bound)], doc)
            self._inc("histogram", key, 1.0 if index == hit else 0.0)

    def _inc(self, kind: str, key: str, amount: float) -> None:
        file = self._files[kind]
        value, _time = file.read_value(key)
        file.write_value(key, value + amount, 0.0)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for file in self._files.values():
                file.close()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:  # folded meanwhile
        return 0


def _metric_of(key: str) -> str | None:
    try:
        return json.loads(key)[0]
    except (ValueError, IndexError, TypeError):
        return None

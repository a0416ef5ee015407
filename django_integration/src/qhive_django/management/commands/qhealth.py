"""``manage.py qhealth [--cluster NAME] [--max-age S] [--timeout S] [--any-host]
[--backends-only]``: exit 0 when a cluster is alive and its broker and result store
answer, else 1 with one line a problem on stderr — a container probe
(:mod:`qhive_django.health`)."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand

from qhive_django import health


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"a number of seconds above 0, got {text!r}")
    return value


class Command(BaseCommand):
    help = ("Exit 0 when a cluster of this project runs on this host and its broker and "
            "result store answer; else exit 1 with each problem on a line of stderr. For "
            "container liveness and readiness probes.")
    # A probe runs every few seconds and reports its own problems: no system checks.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--cluster", default=None, metavar="NAME",
            help="the cluster to check: Q_CLUSTER['name'] or a key of "
                 "Q_CLUSTER['ALT_CLUSTERS'] (default: $Q_CLUSTER_NAME, else the root cluster)")
        parser.add_argument(
            "--max-age", type=_seconds, default=None, metavar="S",
            help=f"the cluster is alive when its last statistics are at most S seconds old "
                 f"(default: {health.STALE_CYCLES} guard cycles, at least "
                 f"{health.MIN_MAX_AGE:g} s)")
        parser.add_argument(
            "--timeout", type=_seconds, default=health.DEFAULT_TIMEOUT, metavar="S",
            help="seconds the broker, the result store and the statistics have to answer "
                 "(default: %(default)s)")
        parser.add_argument("--any-host", action="store_true",
                            help="a cluster on any host counts, not only one on this host")
        parser.add_argument("--backends-only", action="store_true",
                            help="check only that the broker and the result store answer")

    def handle(self, *args: Any, cluster: str | None = None, max_age: float | None = None,
               timeout: float = health.DEFAULT_TIMEOUT, any_host: bool = False,
               backends_only: bool = False, **options: Any) -> None:
        found = health.check(cluster, max_age=max_age, timeout=timeout, any_host=any_host,
                             backends_only=backends_only)
        for problem in found.problems:
            self.stderr.write(problem)
        if not found.healthy:
            raise SystemExit(1)
        self.stdout.write(found.summary)

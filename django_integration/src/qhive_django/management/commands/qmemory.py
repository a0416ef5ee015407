"""``manage.py qmemory [--run-once] [--workers]``: memory of this host and of its
clusters, live (q quits)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from qhive.errors import QhiveError

from qhive_django.monitor import memory


class Command(BaseCommand):
    help = ("Show the available memory of this host and the resident memory of each "
            "cluster's sentinel, zygote and workers, refreshed every second until q, "
            "Ctrl-C or SIGTERM (without a terminal: one plain screen a second).")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--run-once", action="store_true",
                            help="print the screen once, as plain text, and exit")
        parser.add_argument("--workers", action="store_true",
                            help="add one column per worker")

    def handle(self, *args: Any, run_once: bool = False, workers: bool = False,
               **options: Any) -> None:

        try:
            memory(run_once=run_once, workers=workers, stream=self.stdout._out)
        except QhiveError as exc:
            raise CommandError(str(exc)) from exc

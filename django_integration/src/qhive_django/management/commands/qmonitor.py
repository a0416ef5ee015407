"""``manage.py qmonitor [--run-once]``: the project's clusters, live (q quits)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from qhive.errors import QhiveError

from qhive_django.monitor import monitor


class Command(BaseCommand):
    help = ("Show every running cluster of the project — host, id, state, pool, task and "
            "result queues, reincarnations, uptime — refreshed every second until q, "
            "Ctrl-C or SIGTERM (without a terminal: one plain screen a second).")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--run-once", action="store_true",
                            help="print the screen once, as plain text, and exit")

    def handle(self, *args: Any, run_once: bool = False, **options: Any) -> None:

        try:
            # The raw stream: the screen is drawn with cursor moves, and Django's
            # OutputWrapper would add a newline to every write.
            monitor(run_once=run_once, stream=self.stdout._out)
        except QhiveError as exc:
            raise CommandError(str(exc)) from exc

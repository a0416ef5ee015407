"""``manage.py qinfo [--config] [--ids]``: a one-off summary of the project's clusters."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from qhive.errors import QhiveError

from qhive_django import monitor


class Command(BaseCommand):
    help = ("Print a summary of the project's clusters and results; --config prints the "
            "settings (secrets masked), --ids the ids of the running clusters.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--config", action="store_true",
                            help="print every setting of the cluster, secrets masked")
        parser.add_argument("--ids", action="store_true",
                            help="print the id of each running cluster, one a line "
                                 "(wins over --config)")

    def handle(self, *args: Any, config: bool = False, ids: bool = False,
               **options: Any) -> None:
        try:
            if ids:
                broker = monitor.default_broker()
                monitor.check_broker(broker)
                stats = monitor.stat_store(broker)
                if stats.keeper is None:  # stdout stays one id a line, for scripts
                    self.stderr.write(stats.reason)
                for cluster_id in monitor.cluster_ids(broker) or [monitor.NO_CLUSTERS]:
                    self.stdout.write(cluster_id)
            elif config:  # needs no broker: it must work when the broker does not
                for line in monitor.config_lines():
                    self.stdout.write(line)
            else:
                monitor.info(stream=self.stdout._out)
        except QhiveError as exc:
            raise CommandError(str(exc)) from exc
        except DatabaseError as exc:
            raise CommandError(f"cannot read the task results: {exc}. Is the database up, "
                               f"and has `manage.py migrate` been run?") from exc

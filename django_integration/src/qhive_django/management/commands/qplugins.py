"""``manage.py qplugins list|check [--kind KIND] [--json]``: qhive's ``qplugins`` on
the project's ``Q_CLUSTER``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from qhive import cli
from qhive.errors import QhiveError

from qhive_django.conf import get_config


class Command(BaseCommand):
    help = ("List installed qhive drivers and plugins (list, imports nothing), or import and "
            "validate them with the project's Q_CLUSTER (check). "
            "`manage.py qplugins list --help` shows the options.")
    # The command exists to diagnose what the checks complain about: never blocked by them.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("qplugins_args", nargs=argparse.REMAINDER,
                            metavar="list|check [--kind KIND] [--json]")

    def handle(self, *args: Any, qplugins_args: list[str], **options: Any) -> None:
        parsed = cli.build_parser("manage.py qplugins").parse_args(qplugins_args)
        config = None
        if parsed.config is None:  # --config wins over the project's Q_CLUSTER
            try:
                config = get_config()
            except QhiveError as exc:
                raise CommandError(str(exc), returncode=2) from exc
        # qhive.cli prints; send it where Django's command output goes (call_command(stdout=)).
        try:
            with contextlib.redirect_stdout(self.stdout._out), \
                    contextlib.redirect_stderr(self.stderr._out):
                code = cli.run(parsed, config=config)
            self.stdout.flush()  # a closed pipe shows here, where it can be handled
        except BrokenPipeError:
            # `manage.py qplugins list | head`: the reader is gone; end quietly, with
            # stdout on devnull so that the flush at exit fails no more.
            if self.stdout._out is sys.stdout:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(1) from None
        if code:
            raise CommandError("qplugins found problems (listed above)", returncode=code)

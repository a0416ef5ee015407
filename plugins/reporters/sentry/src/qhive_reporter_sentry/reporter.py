"""``SentryReporter``: every task error to Sentry, with the task's tags and its own frames.

Django Q2's settings, ``Q_CLUSTER["error_reporter"] = {"sentry": {"dsn": "…", …}}``:
``dsn`` is required, every other key is an option of ``sentry_sdk.Client`` (``environment``,
``release``, ``sample_rate``, ``before_send``, …).

**A client of its own, not** ``sentry_sdk.init``. Django Q2 called ``sentry_sdk.init``,
which replaces whatever Sentry set-up the project has in the process (its DSN, its
integrations, its scopes). This reporter builds a ``sentry_sdk.Client`` and hands each
event straight to it (``Client.capture_event``) with everything on the event itself
(tags, contexts, transaction), with no scope: nothing of the process's global, isolation
or current scope — the project's tags, breadcrumbs, event processors — is mixed in, and
nothing of ours leaks into the project's events. The client sets up no integrations
unless asked (``default_integrations`` and ``auto_enabling_integrations`` default to
False): sentry-sdk integrations patch the whole process and report through the
process's global client, not this one.

Each event: the exception with its real traceback, chained causes included; frames
above the task's own first frame (qhive's pipeline and pluggy's hook calls: everything
up to the last frame of ``qhive.builtin.hooks``, as :func:`qhive.pipeline.task_traceback`
finds them) are marked not in-app, so that Sentry groups and titles the issue by the
task's code. Tags ``qhive.task_id``, ``qhive.task_name``, ``qhive.func``,
``qhive.group``, ``qhive.attempt``, ``qhive.cluster`` (those the task has), and the same
in the context ``qhive_task``; the transaction is the task's function; the mechanism says
unhandled (``qhive``). The task's arguments are the task frame's local variables, which
the SDK sends and scrubs as it does for any frame (``include_local_variables``).

``report`` hands the event to the SDK's background transport and returns; it never
raises. ``flush(timeout)`` waits for the transport at most ``timeout`` seconds. The
client is made in the process that uses it: a pickled copy (what a cluster hands
another process) makes its own.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sentry_sdk
from qhive.contracts import ProcessLocal, Reporter
from qhive.errors import ConfigError, did_you_mean
from qhive.reporting import TASK_CALLER, TASK_FIELDS, task_fields
from sentry_sdk.consts import DEFAULT_OPTIONS
from sentry_sdk.utils import event_from_exception

if TYPE_CHECKING:
    from qhive.config import Config

__all__ = ["SETTING", "TAGS", "SentryReporter"]

logger = logging.getLogger("qhive.reporters.sentry")

#: How the settings are named in messages.
SETTING = "Q_CLUSTER['error_reporter']['sentry']"
#: The Sentry tags of a task: ``qhive.task_id``, ``qhive.func``, ... (qhive.reporting).
TAGS = tuple(f"qhive.{name}" for name in TASK_FIELDS)
#: Client options set unless the settings say otherwise: integrations patch the whole
#: process and report through its global client (the project's), never through this one.
DEFAULTS = {"default_integrations": False, "auto_enabling_integrations": False}
#: Sentry keeps at most 200 characters of a tag value.
TAG_LENGTH = 200


class SentryReporter(ProcessLocal, Reporter):
    """Reports task errors to Sentry through a ``sentry_sdk.Client`` of its own.

    :param dsn: the Sentry project's DSN (required).
    :param options: every other ``sentry_sdk.Client`` option, as for ``sentry_sdk.init``.
    """

    local_state = ("_client",)

    def __init__(self, *, config: Config | None = None, dsn: str | None = None,
                 **options: Any) -> None:
        super().__init__(config=config)
        if not isinstance(dsn, str) or not dsn.strip():
            raise ConfigError(
                f"sentry reporter: {SETTING}['dsn'] is "
                f"{'missing' if dsn is None else f'not a DSN ({type(dsn).__name__})'}: set "
                f"it to the DSN of your Sentry project (Project Settings → Client Keys), e.g. "
                f"{{'sentry': {{'dsn': os.environ['SENTRY_DSN']}}}}",
                key="error_reporter.sentry.dsn")
        unknown = sorted(set(options) - set(DEFAULT_OPTIONS) - {"dsn"})
        if unknown:
            raise ConfigError(
                f"sentry reporter: unknown option {unknown[0]!r} in {SETTING}"
                + did_you_mean(unknown[0], DEFAULT_OPTIONS)
                + f"; every key but 'dsn' is an option of sentry_sdk.Client "
                  f"(sentry-sdk {sentry_sdk.VERSION})",
                key=f"error_reporter.sentry.{unknown[0]}")
        self.dsn = dsn.strip()
        self.options = {**DEFAULTS, **options}
        self._init_local_state()  # a bad DSN or option is an error now, not at a report

    def _init_local_state(self) -> None:
        try:
            self._client = sentry_sdk.Client(dsn=self.dsn, **self.options)
        except Exception as exc:  # BadDsn, and the SDK's own checks of option values
            raise ConfigError(
                f"sentry reporter: sentry_sdk.Client refused {SETTING} "
                f"(dsn {_dsn_host(self.dsn)}): {type(exc).__name__}: {exc}",
                key="error_reporter.sentry") from exc

    def __repr__(self) -> str:  # the DSN's key stays out of logs
        return f"<SentryReporter {_dsn_host(self.dsn)}>"

    # -- reporting
    def report(self, error: BaseException, task: Mapping[str, Any] | None = None) -> None:
        try:
            self._client.capture_event(*self.event(error, task))
        except Exception:
            with contextlib.suppress(Exception):
                logger.exception("sentry reporter could not report a task error")

    def event(self, error: BaseException, task: Mapping[str, Any] | None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The Sentry event of ``error`` in ``task``, and its hint."""
        event, hint = event_from_exception(error, client_options=self._client.options,
                                           mechanism={"type": "qhive", "handled": False})
        mark_caller_frames(event)
        data = {f"qhive.{name}": value for name, value in task_fields(task, self.config).items()}
        event["tags"] = {tag: value[:TAG_LENGTH].replace("\n", " ")
                         for tag, value in data.items()}
        # Not the arguments: the task frame's local variables show them, scrubbed by the
        # SDK's rules (a repr here would pass a password argument on unscrubbed).
        context = {tag.removeprefix("qhive."): value for tag, value in data.items()}
        event["contexts"] = {"qhive_task": context, "runtime": {
            "name": platform.python_implementation(), "version": platform.python_version(),
            "build": sys.version}}
        if "qhive.func" in data:
            event["transaction"] = data["qhive.func"]
            event["transaction_info"] = {"source": "task"}
        return event, hint

    def flush(self, timeout: float) -> bool | None:
        client = self.__dict__.get("_client")
        if client is None or timeout <= 0:
            return None
        deadline = time.monotonic() + timeout
        client.flush(timeout=timeout)
        # The transport returns early only once its queue is empty: what it could not
        # send by then is still queued.
        return time.monotonic() < deadline


def mark_caller_frames(event: dict[str, Any]) -> None:
    """Mark the frames above the task's first frame not in-app, in each exception of
    ``event`` whose traceback went through the task's caller."""
    for value in (event.get("exception") or {}).get("values") or ():
        frames = (value.get("stacktrace") or {}).get("frames") or []
        calls = [i for i, frame in enumerate(frames) if frame.get("module") == TASK_CALLER]
        if not calls:
            continue  # raised before the task was called, or not in a task
        # The call itself stays when the task was called wrongly (no frame after it).
        first = calls[-1] + 1 if calls[-1] + 1 < len(frames) else calls[-1]
        for frame in frames[:first]:
            frame["in_app"] = False


def _dsn_host(dsn: str) -> str:
    """The DSN without its key: ``http://127.0.0.1:9000/1``."""
    scheme, sep, rest = dsn.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else "?"

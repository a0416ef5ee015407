"""``RollbarReporter``: every task error to Rollbar, with the task's data and its own frames.

Django Q2's settings, ``Q_CLUSTER["error_reporter"] = {"rollbar": {"access_token": "…",
"environment": "…", …}}`` (Django Q 0.x's ``Q_CLUSTER["rollbar"]`` too): every other key
is a keyword of ``rollbar.init`` (``endpoint``, ``handler``, ``timeout``, ``code_version``,
``root``, ``scrub_fields``, …), checked against the installed pyrollbar's settings.

**Rollbar is one set-up per process.** pyrollbar keeps its settings in module state
(``rollbar.SETTINGS``) and ``rollbar.init`` takes effect once: there is no client object to
own. So this reporter calls ``rollbar.init`` at its first report in a process, and only if
nothing set Rollbar up before: when the project already did (its own ``rollbar.init``), the
task errors go to the project's set-up and the reporter says so once in the log, rather than
re-initialising it (a second ``rollbar.init`` would merge some settings and drop others,
and reset the project's ``rollbar.events`` hooks). The same holds for a second reporter with
other settings in one process: the first settings stay, with one warning. ``rollbar.init``
is called with ``allow_logging_basic_config=False`` unless the settings say otherwise: a
cluster's logging is the project's, not pyrollbar's ``logging.basicConfig()``.

Each item: the exception (chained causes in ``trace_chain``) with the traceback from the
task's own first frame — qhive's pipeline and pluggy's hook calls above it are left out, as
in the task's saved result (:func:`qhive.pipeline.task_traceback`): Rollbar has no "in-app"
mark, so they would group every task's errors alike —, the task's data under
``custom.qhive`` (``task_id``, ``task_name``, ``func``, ``group``, ``attempt``, ``cluster``),
shown in the item's Custom data, and the task's function as the item's ``context``. The
task's arguments are the task frame's locals, which pyrollbar sends and scrubs
(``locals``, ``scrub_fields``).

``report`` hands the item to pyrollbar's handler (``default``: a thread per item) and
returns; it never raises. ``flush(timeout)`` waits at most ``timeout`` seconds for the
items still being sent (``rollbar.wait()`` has no timeout: it runs on a helper thread).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import rollbar
from qhive.contracts import Reporter
from qhive.errors import ConfigError, did_you_mean
from qhive.reporting import TASK_FIELDS, first_task_frame, task_fields

if TYPE_CHECKING:
    from qhive.config import Config

__all__ = ["FIELDS", "SETTING", "RollbarReporter"]

logger = logging.getLogger("qhive.reporters.rollbar")

#: How the settings are named in messages.
SETTING = "Q_CLUSTER['error_reporter']['rollbar']"
#: What ``custom.qhive`` holds of a task: task_id, task_name, func, ... (qhive.reporting).
FIELDS = tuple(TASK_FIELDS)
#: ``rollbar.init`` keywords set unless the settings say otherwise.
DEFAULTS = {"allow_logging_basic_config": False}
#: pyrollbar's ``handler`` values.
HANDLERS = ("default", "blocking", "thread", "thread_pool", "async", "agent", "tornado", "gae",
            "twisted", "httpx")
#: The handlers whose items ``rollbar.wait()`` waits for (a thread per item).
WAITED = ("default", "thread")

# This process's Rollbar set-up, as far as this module made it (see the module docstring).
_setup_lock = threading.Lock()
_applied: dict[str, Any] | None = None  # the settings rollbar.init got from a reporter
_warned = False


class RollbarReporter(Reporter):
    """Reports task errors to Rollbar (pyrollbar's process-wide set-up).

    :param access_token: a project access token with the ``post_server_item`` scope.
    :param environment: the environment items are filed under (pyrollbar's default,
        ``"production"``, when not given).
    :param options: every other ``rollbar.init`` keyword.
    """

    def __init__(self, *, config: Config | None = None, access_token: str | None = None,
                 environment: str = "production", **options: Any) -> None:
        super().__init__(config=config)
        if not isinstance(access_token, str) or not access_token.strip():
            raise ConfigError(
                f"rollbar reporter: {SETTING}['access_token'] is "
                f"{'missing' if access_token is None else 'not a token'}: set it to a project "
                f"access token with the post_server_item scope (Rollbar → Project Settings → "
                f"Project Access Tokens), e.g. {{'rollbar': {{'access_token': "
                f"os.environ['ROLLBAR_ACCESS_TOKEN'], 'environment': 'production'}}}}",
                key="error_reporter.rollbar.access_token")
        if not isinstance(environment, str) or not environment.strip():
            raise ConfigError(f"rollbar reporter: {SETTING}['environment'] must be a name "
                              f"such as 'production', not {environment!r}",
                              key="error_reporter.rollbar.environment")
        known = set(rollbar.SETTINGS) - {"access_token", "environment"} | {"scrub_fields",
                                                                            "url_fields"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"rollbar reporter: unknown option {unknown[0]!r} in {SETTING}"
                + did_you_mean(unknown[0], sorted(known))
                + f"; every key but 'access_token' and 'environment' is a keyword of "
                  f"rollbar.init (pyrollbar {rollbar.__version__})",
                key=f"error_reporter.rollbar.{unknown[0]}")
        handler = options.get("handler", "default")
        if handler not in HANDLERS:
            raise ConfigError(f"rollbar reporter: {SETTING}['handler'] is {handler!r}; "
                              f"pyrollbar's handlers: {', '.join(HANDLERS)}",
                              key="error_reporter.rollbar.handler")
        self.access_token = access_token.strip()
        self.environment = environment
        self.options = {**DEFAULTS, **options}

    def __repr__(self) -> str:  # the token stays out of logs
        return f"<RollbarReporter environment={self.environment!r}>"

    # -- reporting
    def report(self, error: BaseException, task: Mapping[str, Any] | None = None) -> None:
        try:
            self._set_up()
            # The traceback from the task's own first frame: Rollbar has no in-app mark.
            exc_info = (type(error), printable(error), first_task_frame(error.__traceback__))
            # Not the arguments: the task frame's locals show them, scrubbed by pyrollbar's
            # rules (a repr here would pass a password argument on unscrubbed).
            custom = task_fields(task, self.config)
            payload = {"context": custom["func"]} if "func" in custom else None
            rollbar.report_exc_info(exc_info, extra_data={"qhive": custom} if custom else None,
                                    payload_data=payload)
        except Exception:
            with contextlib.suppress(Exception):
                logger.exception("rollbar reporter could not report a task error")

    def flush(self, timeout: float) -> bool | None:
        if timeout <= 0 or not rollbar.SETTINGS.get("access_token"):
            return None  # nothing asked, or never set up: nothing was sent
        handler = rollbar.SETTINGS.get("handler")
        if handler == "blocking":
            return True  # each item was sent within report()
        if handler not in WAITED:
            return None  # pyrollbar cannot say when that handler is done
        done = threading.Event()

        def wait() -> None:
            with contextlib.suppress(Exception):
                rollbar.wait()
            done.set()

        # rollbar.wait() has no timeout: a helper thread waits, this one at most `timeout`
        threading.Thread(target=wait, name="qhive-rollbar-flush", daemon=True).start()
        return done.wait(timeout)

    def _set_up(self) -> None:
        """``rollbar.init`` once per process, unless Rollbar was set up already."""
        global _applied, _warned
        wanted = {"access_token": self.access_token, "environment": self.environment,
                  **self.options}
        with _setup_lock:
            if _applied is None and not rollbar.SETTINGS.get("access_token"):
                rollbar.init(self.access_token, self.environment, **self.options)
                _applied = wanted
                return
            if _applied == wanted or _warned:
                return
            _warned = True
        if _applied is None:
            logger.warning(
                "rollbar reporter: Rollbar was already set up in this process (rollbar.init, "
                "environment %r): task errors go there; the settings of %s are not applied "
                "(pyrollbar has one set-up per process)", rollbar.SETTINGS.get("environment"),
                SETTING)
        else:
            logger.warning(
                "rollbar reporter: a second Rollbar reporter with other settings in this "
                "process; pyrollbar has one set-up per process, so the first one's settings "
                "(environment %r) stay", _applied.get("environment"))


def printable(error: BaseException) -> BaseException:
    """``error``, or a stand-in with its traceback and causes when ``str(error)`` raises:
    pyrollbar calls ``str()`` on it and would drop the item."""
    try:
        str(error)
        return error
    except Exception:
        stand_in = Exception(f"<str() of the {type(error).__name__} raised>")
        stand_in.__traceback__ = error.__traceback__
        stand_in.__cause__, stand_in.__context__ = error.__cause__, error.__context__
        stand_in.__suppress_context__ = error.__suppress_context__
        return stand_in

"""The ``log`` error reporter: task errors, with their traceback, to a logger."""

from __future__ import annotations

import contextlib
import logging
import reprlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from qhive.contracts import Reporter
from qhive.errors import ConfigError

if TYPE_CHECKING:
    from qhive.config import Config

__all__ = ["LogReporter"]

_fallback_log = logging.getLogger("qhive.reporters")
_repr = reprlib.Repr()
_repr.maxstring = 200
_repr.maxother = 200


def _safe(value: Any) -> str:
    """``repr`` that never raises and never floods the log."""
    try:
        return _repr.repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def _field(task: Mapping[str, Any] | None, key: str) -> str:
    if task is None:
        return "?"
    try:
        value = task.get(key)
    except Exception:
        return "?"
    if isinstance(value, str):
        return value
    return "?" if value is None else _safe(value)


class LogReporter(Reporter):
    """Logs every task error with its traceback and the task's func, name and id.

    Options (``Q_CLUSTER["error_reporter"]["log"]``):

    :param logger: name of the logger to write to (default ``"qhive.reporters.log"``).
    :param level: level name or number (default ``"ERROR"``).
    """

    def __init__(
        self,
        *,
        config: Config | None = None,
        logger: str = "qhive.reporters.log",
        level: str | int = "ERROR",
    ) -> None:
        if not isinstance(logger, str) or not logger:
            raise ConfigError(
                f"log reporter: 'logger' must be a logger name, not {logger!r}",
                key="error_reporter.log.logger",
            )
        self.level = self._level(level)
        self.logger_name = logger
        super().__init__(config=config)

    @staticmethod
    def _level(level: str | int) -> int:
        if isinstance(level, int) and not isinstance(level, bool):
            return level
        number = logging.getLevelName(level.upper()) if isinstance(level, str) else None
        if not isinstance(number, int):
            raise ConfigError(
                f"log reporter: unknown log level {level!r}; use DEBUG, INFO, WARNING, "
                "ERROR or CRITICAL",
                key="error_reporter.log.level",
            )
        return number

    def report(self, error: BaseException, task: Mapping[str, Any] | None = None) -> None:
        try:
            message = (
                f"Task {_field(task, 'func')} ({_field(task, 'name')}, "
                f"id {_field(task, 'id')}) failed: {self._describe(error)}"
            )
            exc_info = (type(error), error, error.__traceback__)
            logging.getLogger(self.logger_name).log(self.level, message, exc_info=exc_info)
        except Exception:
            with contextlib.suppress(Exception):
                _fallback_log.exception("log reporter could not report a task error")

    @staticmethod
    def _describe(error: BaseException) -> str:
        try:
            text = str(error)
        except Exception:
            text = "<str() failed>"
        name = type(error).__name__
        return f"{name}: {text}" if text else name

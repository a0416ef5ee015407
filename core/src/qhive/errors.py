"""Every exception qhive raises on purpose.

They all derive from :class:`QhiveError`, so ``except QhiveError`` catches
anything the framework itself reports. Messages name the thing at fault (the
config key, the plugin and its distribution) and, where there is one, the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class QhiveError(Exception):
    """Base class of qhive's own errors."""


class ConfigError(QhiveError, ValueError):
    """``Q_CLUSTER`` holds something qhive cannot use.

    ``key`` is the dotted path of the offending setting (``"ALT_CLUSTERS.long.workers"``).
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class PluginError(QhiveError):
    """A plugin or driver could not be found, loaded or used."""


class UnknownDriverError(PluginError, LookupError):
    """No installed driver of a kind has the requested name."""


class DriverLoadError(PluginError, ImportError):
    """A selected driver was found but importing or building it failed."""


class DriverConflictError(PluginError):
    """Two distributions register the same driver name for one kind."""


class BadSignature(QhiveError):
    """A task package failed signature verification.

    Raised by :meth:`qhive.contracts.Signer.unsign` and :meth:`qhive.codec.TaskCodec.decode`
    before anything is deserialized: the package was tampered with, truncated,
    or signed with a key (or cluster name) this process does not know. A
    cluster fails such a message at the broker and never runs it.
    """


class SerializationError(QhiveError):
    """A value could not be serialized, or bytes could not be deserialized."""


class BadPackage(SerializationError):
    """A correctly signed package that is not a task (not a dict, no ``id``, ...).

    The cluster rejects it like a bad signature: logged, failed at the broker, never run.
    """


class SetupError(QhiveError):
    """A backend answers but is not set up for qhive: its table is missing (run
    ``manage.py migrate``), its queue cannot be created, ... Retrying will not help."""


class BrokerError(QhiveError):
    """A broker could not do what was asked (connection lost, queue gone, ...)."""


class UnsupportedOption(BrokerError, ValueError):
    """A task option needs a broker capability (``Capabilities.delay``,
    ``Capabilities.priority``) that the cluster's broker does not declare."""


class BrokerConnectionError(BrokerError, ConnectionError):
    """The broker's server cannot be reached."""


class TaskTimeout(QhiveError):
    """A task ran longer than its timeout and its worker was stopped."""


class TaskFunctionNotFound(QhiveError, LookupError):
    """A task names a function that cannot be imported."""


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """``" — did you mean 'timeout'?"``: the known name nearest ``name`` (case ignored),
    for the end of an error message; ``""`` when none is near."""
    lowered = {k.lower(): k for k in known}
    match = difflib.get_close_matches(str(name).lower(), list(lowered), n=1)
    return f" — did you mean {lowered[match[0]]!r}?" if match else ""

"""``Q_CLUSTER['sqs']`` read as Django Q2 reads it, checked before anything connects.

Django Q2 renames ``aws_region`` to ``region_name``, strips
``receive_message_wait_time_seconds`` and passes the rest to ``boto3.Session(**)``.
So does this module, with the keys of ``boto3.Session`` of the installed boto3
taken as they are, plus three of qhive's own (``endpoint_url``, ``create_queue``,
``message_group``). Any other key is a :class:`~qhive.errors.ConfigError` with a
"did you mean". A missing region is one too: SQS has no global endpoint, and
boto3 would only say ``NoRegionError`` at the first call.

Also here: how a qhive queue (the cluster name) becomes an SQS queue name, and how
the credentials a session found are described in an error (never the secret).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import re
from collections.abc import Mapping
from typing import Any

import boto3
import botocore.exceptions
from qhive.errors import ConfigError, did_you_mean

__all__ = ["SETTING", "SqsOptions", "describe_credentials", "parse_options", "sqs_queue_name"]

#: How the settings are named in messages.
SETTING = "Q_CLUSTER['sqs']"
#: SQS long-polls at most this long per ReceiveMessage call.
MAX_WAIT = 20
#: SQS queue names: letters, digits, ``-`` and ``_``, 80 characters with ``.fifo``.
MAX_QUEUE_NAME = 80
FIFO_SUFFIX = ".fifo"
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_-]")
#: ``message_group`` values: one group per queue (strict order), or one per message.
MESSAGE_GROUPS = ("queue", "message")

#: The keys qhive adds to Django Q2's, with what each must be.
_OWN_KEYS = {
    "aws_region": "a region name such as 'eu-west-1'",
    "receive_message_wait_time_seconds": "a whole number of seconds from 0 to 20",
    "endpoint_url": "an http:// or https:// URL",
    "create_queue": "True or False",
    "message_group": "'queue' or 'message'",
}
#: boto3.Session keyword arguments a settings dict cannot carry: a live botocore
#: session does not survive pickling, and clusters hand the broker to other processes.
_REFUSED = {"botocore_session": "use profile_name or the credential keys instead"}


@dataclasses.dataclass(frozen=True)
class SqsOptions:
    """The checked settings.

    :ivar session: keyword arguments for ``boto3.Session`` (``region_name`` set).
    :ivar wait: the longest one ReceiveMessage long-polls (0: short polling).
    :ivar endpoint_url: where SQS is, if not AWS's regional endpoint.
    :ivar create_queue: create the queue when it does not exist.
    :ivar message_group: FIFO queues: ``"queue"`` or ``"message"``.
    """

    session: Mapping[str, Any]
    wait: int = MAX_WAIT
    endpoint_url: str | None = None
    create_queue: bool = True
    message_group: str = "queue"

    @property
    def region(self) -> str:
        return self.session["region_name"]


def session_keys() -> list[str]:
    """The keyword arguments of the installed ``boto3.Session``."""
    return [p for p in inspect.signature(boto3.Session).parameters if p != "self"]


def parse_options(value: Mapping[str, Any] | None, *, plugin: str) -> SqsOptions:
    """Check ``Q_CLUSTER['sqs']`` and resolve the region; no network is used."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{plugin}: {SETTING} must be a dict (of boto3.Session keys and "
                          f"{', '.join(_OWN_KEYS)}), got {type(value).__name__}", key="sqs")
    options = dict(value)
    accepted = [*_OWN_KEYS, *(k for k in session_keys() if k not in _REFUSED)]
    for key in options:
        if key in _REFUSED:
            raise ConfigError(f"{plugin}: {SETTING}[{key!r}] is not supported: "
                              f"{_REFUSED[key]}", key=f"sqs.{key}")
        if key not in accepted:
            raise ConfigError(
                f"{plugin}: unknown key {key!r} in {SETTING}"
                + (did_you_mean(key, accepted) or f"; it takes: {', '.join(accepted)}"),
                key=f"sqs.{key}")
    for key in set(options) & set(session_keys()):
        if options[key] is not None and not isinstance(options[key], str):
            raise ConfigError(f"{plugin}: {SETTING}[{key!r}] must be a string, got "
                              f"{type(options[key]).__name__}", key=f"sqs.{key}")

    region = options.pop("aws_region", None)
    if region is not None:
        if not isinstance(region, str) or not region:
            raise ConfigError(f"{plugin}: {SETTING}['aws_region'] must be "
                              f"{_OWN_KEYS['aws_region']}, got {region!r}", key="sqs.aws_region")
        if options.get("region_name") not in (None, region):
            raise ConfigError(f"{plugin}: {SETTING} sets both aws_region={region!r} and "
                              f"region_name={options['region_name']!r}; keep one",
                              key="sqs.aws_region")
        options["region_name"] = region
    wait = options.pop("receive_message_wait_time_seconds", MAX_WAIT)
    if isinstance(wait, bool) or not isinstance(wait, int) or not 0 <= wait <= MAX_WAIT:
        raise ConfigError(f"{plugin}: {SETTING}['receive_message_wait_time_seconds'] must be "
                          f"{_OWN_KEYS['receive_message_wait_time_seconds']}, got {wait!r}",
                          key="sqs.receive_message_wait_time_seconds")
    endpoint_url = options.pop("endpoint_url", None)
    if endpoint_url is not None and not (
            isinstance(endpoint_url, str) and endpoint_url.startswith(("http://", "https://"))):
        raise ConfigError(f"{plugin}: {SETTING}['endpoint_url'] must be "
                          f"{_OWN_KEYS['endpoint_url']}, got {endpoint_url!r}",
                          key="sqs.endpoint_url")
    create_queue = options.pop("create_queue", True)
    if not isinstance(create_queue, bool):
        raise ConfigError(f"{plugin}: {SETTING}['create_queue'] must be True or False, got "
                          f"{create_queue!r}", key="sqs.create_queue")
    message_group = options.pop("message_group", "queue")
    if message_group not in MESSAGE_GROUPS:
        raise ConfigError(f"{plugin}: {SETTING}['message_group'] must be "
                          f"{_OWN_KEYS['message_group']}, got {message_group!r}",
                          key="sqs.message_group")

    session = {k: v for k, v in options.items() if v is not None}
    # The region as boto3 would find it: the setting, else $AWS_REGION /
    # $AWS_DEFAULT_REGION, else the profile's (reads ~/.aws/config; no network).
    session["region_name"] = resolve_region(session, plugin=plugin)
    return SqsOptions(session, wait, endpoint_url, create_queue, message_group)


def resolve_region(session: Mapping[str, Any], *, plugin: str) -> str:
    try:
        region = boto3.Session(**session).region_name
    except botocore.exceptions.ProfileNotFound as exc:
        raise ConfigError(f"{plugin}: {SETTING}['profile_name']: {exc} (profiles are read "
                          f"from ~/.aws/config and ~/.aws/credentials, or $AWS_CONFIG_FILE)",
                          key="sqs.profile_name") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise ConfigError(f"{plugin}: the AWS settings of {SETTING} are not usable: {exc}",
                          key="sqs") from None
    if not region:
        raise ConfigError(
            f"{plugin}: no AWS region: set {SETTING}['aws_region'] (e.g. 'eu-west-1'), or "
            f"$AWS_DEFAULT_REGION, or a region in the AWS profile", key="sqs.aws_region")
    return region


def sqs_queue_name(queue: str) -> str:
    """The SQS name of qhive queue ``queue`` (the cluster name).

    A name SQS accepts stays as it is (``.fifo`` at the end makes a FIFO queue).
    Otherwise each character SQS does not allow becomes ``-``, the name is cut to
    fit 80 characters, and ``-`` and 8 hex digits of the SHA-256 of the original
    name are appended, so that two names that differ only in such characters
    (``a.b``, ``a:b``) never share a queue.
    """
    fifo = queue.endswith(FIFO_SUFFIX)
    base = queue[: -len(FIFO_SUFFIX)] if fifo else queue
    suffix = FIFO_SUFFIX if fifo else ""
    room = MAX_QUEUE_NAME - len(suffix)
    clean = _NOT_ALLOWED.sub("-", base)
    if clean == base and 0 < len(base) <= room:
        return queue
    digest = hashlib.sha256(queue.encode()).hexdigest()[:8]
    return f"{clean[: room - len(digest) - 1]}-{digest}{suffix}"


def describe_credentials(session: boto3.Session, options: SqsOptions) -> str:
    """Which credentials a session uses, for an error: where they came from and the
    access key id with its middle hidden. Never the secret."""
    try:
        credentials = session.get_credentials()
    except botocore.exceptions.BotoCoreError as exc:
        return f"no usable credentials ({exc})"
    if credentials is None:
        return "no credentials"
    key = credentials.access_key or ""
    shown = f"{key[:4]}…{key[-4:]}" if len(key) >= 12 else f"{key[:2]}…"
    method = getattr(credentials, "method", "") or ""
    profile = options.session.get("profile_name")
    sources = {
        "explicit": f"{SETTING}['aws_access_key_id']",
        "env": "the environment ($AWS_ACCESS_KEY_ID)",
        "shared-credentials-file": f"~/.aws/credentials (profile {profile or 'default'!r})",
        "config-file": f"~/.aws/config (profile {profile or 'default'!r})",
        "iam-role": "the instance role (EC2 instance metadata)",
        "container-role": "the container role (ECS/EKS)",
        "assume-role": f"a role assumed for profile {profile or 'default'!r}",
    }
    return f"access key {shown} from {sources.get(method, method or 'an unknown source')}"

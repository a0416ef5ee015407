"""``SqsBroker``: Django Q2's ``Q_CLUSTER['sqs']`` queue on Amazon SQS, with receipts.

At least once: a message stays in SQS until it is acknowledged (deleted by its
receipt handle); one that is never acknowledged — its cluster died, its result
could not be saved — becomes visible again when its visibility timeout, set to
``retry`` on every receive, runs out. Nothing is lost while SQS keeps the
message (14 days at most: queues this broker creates keep them that long).

How each step maps onto SQS:

* ``enqueue`` — SendMessage; the body is ``qhive:`` and the task package in
  base64 (SQS bodies are non-empty text; packages are bytes). A body over the
  queue's ``MaximumMessageSize`` is refused here, naming the sizes, before SQS
  sees it. ``enqueue_many`` sends batches of 10 (and 1 MiB). ``enqueue(delay=s)``
  (a standard queue only) sends DelaySeconds, ``s`` rounded up to whole seconds, at
  most 900 (SQS's limit: a longer delay is a ValueError naming it).
* ``dequeue(count, timeout)`` — ReceiveMessage of up to 10, long-polling up to
  20 s per call (``receive_message_wait_time_seconds``): it returns as soon as a
  message arrives. Timeouts below a second are short polls, ``poll`` apart.
* ``acknowledge`` / ``acknowledge_many`` / ``fail`` / ``delete`` —
  DeleteMessageBatch, 10 per call. Entries failing on SQS's side are retried,
  then raised; entries SQS refuses (a receipt handle of a message no longer in
  flight) are logged: the message was deleted already, or runs again.
* ``touch`` — ChangeMessageVisibilityBatch to ``retry``; ``release`` —
  ChangeMessageVisibility to 0, or to ``delay`` (whole seconds, rounded up; SQS keeps
  a message hidden at most 12 hours from when it was received).
* ``queue_size`` / ``lock_size`` — ApproximateNumberOfMessages / …NotVisible,
  read on every call.
* ``purge_queue`` — PurgeQueue; SQS runs one per queue per 60 s, so while one
  runs, waiting messages are received and deleted one batch at a time.

FIFO queues (a queue name ending in ``.fifo``): each message gets a fresh
MessageDeduplicationId, so a send that botocore retries is stored once; the
MessageGroupId is the queue's name (strict order: SQS hands out a group's next
messages only when those in flight are finished) unless ``message_group`` is
``"message"`` (one group per message: no order, no head-of-line blocking).
SQS gives FIFO queues no per-message delay (only the queue's own DelaySeconds), so a
FIFO queue's broker does not declare ``delay`` and refuses ``enqueue(delay=…)``;
``release(delay=…)`` works on either kind of queue.

Unlike Django Q2's: ``ping`` calls SQS, the sizes are read fresh, the bulk limit
is not written into the global config, a missing region is an error when the
broker is built, and errors name the setting, the credentials or the IAM
permission at fault. Statistics are not kept in SQS (``stats=False``): clusters
keep theirs in the result store.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import logging
import math
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions
from qhive.contracts import Broker, Capabilities, Message, ProcessLocal, checked_delivery
from qhive.errors import BrokerConnectionError, BrokerError, ConfigError, QhiveError, SetupError
from qhive.plugins import hookimpl

from qhive_broker_sqs.errors import (
    DENIED,
    MISSING_QUEUE,
    PLUGIN,
    PURGE_RUNNING,
    MessageTooLarge,
    aws_errors,
    error_code,
)
from qhive_broker_sqs.options import (
    FIFO_SUFFIX,
    SETTING,
    SqsOptions,
    describe_credentials,
    parse_options,
    sqs_queue_name,
)

if TYPE_CHECKING:
    from qhive.codec import TaskCodec
    from qhive.config import Config

__all__ = ["MessageTooLarge", "SqsBroker"]

logger = logging.getLogger("qhive.broker.sqs")

#: SQS's batch limit: messages per ReceiveMessage and entries per batch call.
MAX_BATCH = 10
#: The longest visibility timeout SQS allows (12 hours).
MAX_VISIBILITY = 43_200
#: The longest DelaySeconds SQS allows on a message (15 minutes).
MAX_DELAY = 900
#: How long queues this broker creates keep a message: SQS's maximum, 14 days.
RETENTION = 14 * 24 * 3600
#: SQS's largest message and batch (1 MiB); a queue may set a smaller MaximumMessageSize.
MAX_MESSAGE = 1 << 20
#: No queue takes less than this: smaller bodies need no look at the queue's limit.
MIN_MAX_MESSAGE = 1024
#: Starts every body this broker sends: the rest is the package in base64. (A body
#: may not be empty, and a message without it was not sent by this broker.)
BODY_PREFIX = "qhive:"
#: Attempts of a batch call whose entries fail on SQS's side.
BATCH_ATTEMPTS = 3
#: How long ``purge_queue`` receives and deletes while a PurgeQueue is running.
DRAIN_LIMIT = 60.0
#: A long poll may end this much after ``dequeue``'s timeout (SQS waits whole seconds).
LONG_POLL_SLACK = 0.05
#: Seconds to connect; a long poll reads for up to 20 s, so the read timeout is longer.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30

#: What a standard SQS queue promises; a FIFO queue drops ``delay`` (SQS takes no
#: per-message delay there) and with one message group adds ``fifo``, and long polling
#: turned off (``receive_message_wait_time_seconds: 0``) drops ``blocking``.
STANDARD_CAPABILITIES = Capabilities(receipts=True, bulk=True, blocking=True, fifo=False,
                                     stats=False, shared=True, touch=True, delay=True)


class _CapabilitiesAttribute:
    """``SqsBroker.capabilities``: on the class, a standard queue's; on an instance,
    those of its queue type and settings."""

    def __get__(self, broker: SqsBroker | None, owner: type | None = None) -> Capabilities:
        return STANDARD_CAPABILITIES if broker is None else broker._capabilities


class SqsBroker(ProcessLocal, Broker):
    """The Amazon SQS broker.

    :param queue: the queue (cluster name); see :func:`~qhive_broker_sqs.options.sqs_queue_name`
        for the SQS queue it names.
    :param config: the cluster's config: ``retry`` is the visibility timeout, ``poll``
        the pause between short polls.
    :param sqs: Django Q2's ``Q_CLUSTER['sqs']``: ``aws_region``, the keys of
        ``boto3.Session`` (``aws_access_key_id``, ``aws_secret_access_key``,
        ``aws_session_token``, ``profile_name``, ...), ``receive_message_wait_time_seconds``,
        and ``endpoint_url``, ``create_queue``, ``message_group``.
    """

    builds_offline = True  # settings are checked here; the client connects on use

    capabilities = _CapabilitiesAttribute()  # type: ignore[assignment]

    def __init__(self, queue: str = "default", *, config: Config | None = None,
                 sqs: Mapping[str, Any] | None = None) -> None:
        super().__init__(queue, config=config)
        if not isinstance(queue, str) or not queue:
            raise ConfigError(f"{PLUGIN}: the queue name must be a non-empty string, got "
                              f"{queue!r}", key="name")
        self.options: SqsOptions = parse_options(sqs, plugin=PLUGIN)
        self.visibility = _visibility(self.config.retry)
        self.sqs_name = sqs_queue_name(queue)
        self.fifo_queue = self.sqs_name.endswith(FIFO_SUFFIX)
        self.endpoint = (self.options.endpoint_url
                         or f"https://sqs.{self.options.region}.amazonaws.com")
        self._capabilities = dataclasses.replace(
            STANDARD_CAPABILITIES, blocking=self.options.wait > 0,
            fifo=self.fifo_queue and self.options.message_group == "queue",
            delay=not self.fifo_queue)
        self._queue_url: str | None = None
        self._max_message: int | None = None
        self._init_local_state()

    #: Left behind by a pickled copy, which makes its own (ProcessLocal).
    local_state = ("_session", "_client", "_lock")

    def _init_local_state(self) -> None:
        self._session: boto3.Session | None = None
        self._client: Any = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} queue={self.queue!r} sqs={self.sqs_name!r}>"

    # -- the client and the queue

    def session(self) -> boto3.Session:
        with self._lock:
            if self._session is None:
                self._session = boto3.Session(**self.options.session)
            return self._session

    def client(self) -> Any:
        """The boto3 SQS client (built on first use; it connects when used)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self.session().client(
                        "sqs", endpoint_url=self.options.endpoint_url,
                        config=botocore.config.Config(
                            connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                            retries={"mode": "standard", "max_attempts": 3},
                            tcp_keepalive=True))
                client = self._client
        return client

    def close(self) -> None:
        """Drop the client and its connections; the next call builds a new one."""
        with self._lock:
            client, self._client, self._session = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def queue_url(self) -> str:
        """The queue's URL: looked up once (GetQueueUrl), the queue created if missing."""
        url = self._queue_url
        if url is None:
            with self._lock:
                if self._queue_url is None:
                    self._queue_url = self._find_url() or self._create()
                url = self._queue_url
        return url

    def _find_url(self) -> str | None:
        with aws_errors(self, "finding the queue", "get_queue_url"):
            try:
                return self.client().get_queue_url(QueueName=self.sqs_name)["QueueUrl"]
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) in MISSING_QUEUE:
                    return None
                raise

    def _create(self) -> str:
        name = self.sqs_name
        how = f"aws sqs create-queue --queue-name {name}" + (
            " --attributes FifoQueue=true" if self.fifo_queue else "")
        if not self.options.create_queue:
            raise SetupError(
                f"{PLUGIN}: the SQS queue {name!r} does not exist in {self.options.region} "
                f"(at {self.endpoint}) and {SETTING}['create_queue'] is False: create it "
                f"(`{how}`) or let the broker create it (create_queue: True)")
        attributes = {"MessageRetentionPeriod": str(RETENTION)}
        if self.fifo_queue:
            attributes["FifoQueue"] = "true"
        with aws_errors(self, "creating the queue", "create_queue"):
            try:
                return self.client().create_queue(QueueName=name,
                                                  Attributes=attributes)["QueueUrl"]
            except botocore.exceptions.ClientError as exc:
                code = error_code(exc)
                if code in DENIED:
                    raise SetupError(
                        f"{PLUGIN}: the SQS queue {name!r} does not exist and "
                        f"{self.credentials()} may not create it (sqs:CreateQueue denied): "
                        f"create it once (`{how}`) or allow sqs:CreateQueue; set "
                        f"{SETTING}['create_queue'] = False to say it must exist") from None
                if code == "QueueDeletedRecently":
                    raise BrokerError(
                        f"{PLUGIN}: the SQS queue {name!r} was deleted less than 60 s ago; "
                        f"SQS creates a queue of that name again only after 60 s") from None
                if code in ("QueueAlreadyExists", "QueueNameExists"):  # made meanwhile
                    return self.client().get_queue_url(QueueName=name)["QueueUrl"]
                raise

    def _forget_queue(self) -> None:
        with self._lock:
            self._queue_url = None
            self._max_message = None

    def _call(self, what: str, op: str, *, passthrough: Iterable[str] = (),
              **params: Any) -> dict[str, Any]:
        """``client.<op>(QueueUrl=..., **params)``, with SQS's errors made qhive's. A
        queue deleted under the broker is looked up (or created) again, once."""
        with aws_errors(self, what, op, passthrough=frozenset(passthrough)):
            for attempt in range(2):
                url = self.queue_url()
                try:
                    return getattr(self.client(), op)(QueueUrl=url, **params)
                except botocore.exceptions.ClientError as exc:
                    if attempt or error_code(exc) not in MISSING_QUEUE:
                        raise
                    self._forget_queue()
        raise AssertionError("unreachable")  # pragma: no cover

    def credentials(self) -> str:
        """Which credentials the broker uses, for messages (never the secret)."""
        return describe_credentials(self.session(), self.options)

    # -- enqueue

    def enqueue(self, payload: bytes, *, delay: float = 0.0) -> str:
        """SendMessage; with ``delay`` (seconds, at most 900, rounded up to whole
        seconds: SQS's DelaySeconds) the message cannot be received before then."""
        if delay != 0:
            return self._enqueue_delayed(payload, self._delay_seconds(delay))
        body = self._body(payload)
        reply = self._call("enqueue", "send_message", MessageBody=body, **self._fifo_fields())
        return reply["MessageId"]

    def _enqueue_delayed(self, payload: bytes, seconds: int) -> str:
        body = self._body(payload)
        reply = self._call("enqueue", "send_message", MessageBody=body, DelaySeconds=seconds)
        return reply["MessageId"]

    def _delay_seconds(self, delay: Any) -> int:
        """``enqueue``'s ``delay`` as SQS's DelaySeconds, or a ValueError saying why SQS
        cannot hold the message that long."""
        delay = checked_delivery(PLUGIN, delay)[0]
        if self.fifo_queue:
            raise ValueError(
                f"{PLUGIN}: the FIFO queue {self.sqs_name!r} cannot delay a message: SQS "
                f"takes a per-message DelaySeconds only on standard queues (a FIFO queue has "
                f"only its own DelaySeconds attribute); use a queue whose name does not end "
                f"in '.fifo' for eta/countdown")
        if delay > MAX_DELAY:
            raise ValueError(
                f"{PLUGIN}: a delay of {delay:g} s is over SQS's limit of {MAX_DELAY} s "
                f"(15 minutes) per message (DelaySeconds); nothing was sent")
        return math.ceil(delay)

    def enqueue_many(self, payloads: Iterable[bytes]) -> list[str]:
        bodies = [self._body(p) for p in payloads]
        ids: list[str] = []
        for batch in _batches(bodies):
            entries = [{"Id": str(i), "MessageBody": body, **self._fifo_fields()}
                       for i, body in enumerate(batch)]
            sent, refused = self._batch("enqueue_many", "send_message_batch", entries)
            if refused:
                first = refused[0]
                raise BrokerError(
                    f"{PLUGIN}: enqueue_many: SQS refused {len(refused)} of {len(bodies)} "
                    f"payloads ({first['Code']}: {first['Message']}); {len(ids) + len(sent)} "
                    f"were enqueued before")
            ids.extend(sent[e["Id"]]["MessageId"] for e in entries)
        return ids

    def _body(self, payload: bytes) -> str:
        data = _payload(payload)
        body = BODY_PREFIX + base64.b64encode(data).decode("ascii")
        if len(body) > MIN_MAX_MESSAGE:
            limit = self._limit()
            if len(body) > limit:
                raise MessageTooLarge(len(data), len(body), limit, self.sqs_name)
        return body

    def _limit(self) -> int:
        """The queue's MaximumMessageSize, read once; SQS's own limit if it cannot be
        read (SQS then refuses what is too large)."""
        if self._max_message is None:
            try:
                reply = self._call("reading the queue's MaximumMessageSize",
                                   "get_queue_attributes", AttributeNames=["MaximumMessageSize"])
                self._max_message = int(reply["Attributes"]["MaximumMessageSize"])
            except BrokerError as exc:
                if isinstance(exc, BrokerConnectionError):
                    raise
                logger.warning("%s; the limit of SQS itself (%d bytes) is assumed", exc,
                               MAX_MESSAGE)
                self._max_message = MAX_MESSAGE
        return self._max_message

    def _fifo_fields(self) -> dict[str, str]:
        """A FIFO queue's MessageGroupId and MessageDeduplicationId, new for each message:
        botocore sends a retried request with the same id, which SQS then stores once."""
        if not self.fifo_queue:
            return {}
        dedup = uuid.uuid4().hex
        group = (self.sqs_name[: -len(FIFO_SUFFIX)] if self.options.message_group == "queue"
                 else dedup)
        return {"MessageGroupId": group, "MessageDeduplicationId": dedup}

    # -- dequeue

    def dequeue(self, count: int = 1, timeout: float = 0.0) -> list[Message]:
        """Up to ``min(count, 10)`` messages, hidden for ``retry`` seconds. Long polls
        (whole seconds, at most ``receive_message_wait_time_seconds`` each) return as
        soon as a message arrives; what remains of ``timeout`` below a second is short
        polls ``poll`` seconds apart."""
        count = min(max(1, int(count)), MAX_BATCH)
        deadline = time.monotonic() + max(float(timeout or 0.0), 0.0)
        while True:
            # Whole seconds; the few milliseconds spent since the call are not a second short.
            wait = max(0, min(self.options.wait,
                              int(deadline - time.monotonic() + LONG_POLL_SLACK)))
            got = self._receive(count, wait, self.visibility)
            remaining = deadline - time.monotonic()
            if got or remaining <= 0:
                return got
            if wait == 0:
                time.sleep(min(remaining, self.config.poll))

    def _receive(self, count: int, wait: int, visibility: int) -> list[Message]:
        reply = self._call("dequeue", "receive_message", MaxNumberOfMessages=count,
                           WaitTimeSeconds=wait, VisibilityTimeout=visibility,
                           MessageSystemAttributeNames=["ApproximateReceiveCount"])
        return [_message(m) for m in reply.get("Messages", ())]

    # -- finishing messages

    def acknowledge(self, ack_id: str) -> None:
        self.acknowledge_many([ack_id])

    def acknowledge_many(self, ack_ids: Iterable[str]) -> None:
        """DeleteMessageBatch, 10 receipts per call. Entries failing on SQS's side are
        tried again, then raised (the monitor retries); receipts SQS refuses name no
        message in flight any more and are logged."""
        handles = list(dict.fromkeys(ack_ids))
        refused: list[dict[str, Any]] = []
        for start in range(0, len(handles), MAX_BATCH):
            entries = [{"Id": str(i), "ReceiptHandle": h}
                       for i, h in enumerate(handles[start:start + MAX_BATCH])]
            refused += self._batch("acknowledge", "delete_message_batch", entries)[1]
        if refused:
            logger.warning(
                "%s: %d of %d acknowledgements were refused by SQS queue %r (%s: %s): their "
                "receipt handles name no message in flight — deleted or purged already, or "
                "delivered again after 'retry' ran out (then it runs again)", PLUGIN,
                len(refused), len(handles), self.sqs_name, refused[0]["Code"],
                refused[0]["Message"])

    def fail(self, ack_id: str) -> None:
        """Delete the message. (A redrive policy on the queue moves messages to its
        dead-letter queue only when received too often, not on ``fail``.)"""
        self.acknowledge_many([ack_id])

    def delete(self, ack_id: str) -> None:
        self.acknowledge_many([ack_id])

    def touch(self, ack_ids: Iterable[str]) -> None:
        handles = list(dict.fromkeys(ack_ids))
        for start in range(0, len(handles), MAX_BATCH):
            entries = [{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": self.visibility}
                       for i, h in enumerate(handles[start:start + MAX_BATCH])]
            refused = self._batch("touch", "change_message_visibility_batch", entries)[1]
            if refused:  # finished, or back in the queue: left alone, as the contract says
                logger.debug("%s: touch left %d messages alone (%s)", PLUGIN, len(refused),
                             refused[0]["Code"])

    def release(self, ack_id: str, *, delay: float = 0.0) -> None:
        """Make the message visible again at once, or after ``delay`` seconds (rounded
        up to whole seconds): its delivery still counts. SQS keeps a message hidden at
        most 12 hours from when it was received: a longer delay is a ValueError."""
        seconds = 0
        if delay != 0:
            delay = checked_delivery(PLUGIN, delay)[0]
            if delay > MAX_VISIBILITY:
                raise ValueError(
                    f"{PLUGIN}: cannot release a message for {delay:g} s: SQS keeps a "
                    f"received message hidden at most {MAX_VISIBILITY} s (12 hours)")
            seconds = math.ceil(delay)
        try:
            self._call("release", "change_message_visibility", ReceiptHandle=ack_id,
                       VisibilityTimeout=seconds,
                       passthrough=("ReceiptHandleIsInvalid", "MessageNotInflight",
                                    "InvalidParameterValue"))
        except botocore.exceptions.ClientError as exc:
            text = str(exc.response.get("Error", {}).get("Message", ""))
            if seconds and "VisibilityTimeout" in text:  # past 12 h since it was received
                raise ValueError(
                    f"{PLUGIN}: SQS refused to hide a message for another {seconds} s "
                    f"({error_code(exc)}: {text}): a received message stays hidden at most "
                    f"{MAX_VISIBILITY} s (12 hours) from when it was received") from None
            # no longer in flight: nothing to give back
            logger.debug("%s: release of a message no longer in flight (%s)", PLUGIN,
                         error_code(exc))

    def _batch(self, what: str, op: str, entries: list[dict[str, Any]],
               ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """Call the batch operation ``op``; send again the entries that failed on SQS's
        side. Returns (the successful entries of the reply, by Id; the entries SQS
        refused as the sender's fault, each with its ``Code`` and ``Message``); raises
        if some keep failing on SQS's side."""
        pending = entries
        sent: dict[str, dict[str, Any]] = {}
        refused: list[dict[str, Any]] = []
        for attempt in range(BATCH_ATTEMPTS):
            if attempt:
                time.sleep(0.2 * attempt)
            reply = self._call(what, op, Entries=pending)
            sent.update((s["Id"], s) for s in reply.get("Successful", ()))
            by_id = {e["Id"]: e for e in pending}
            again, server_failure = [], None
            for failure in reply.get("Failed", ()):
                if failure.get("SenderFault", True):
                    refused.append({**by_id[failure["Id"]], "Code": failure.get("Code"),
                                    "Message": failure.get("Message")})
                else:
                    again.append(by_id[failure["Id"]])
                    server_failure = failure
            if not again:
                return sent, refused
            pending = again
        raise BrokerError(
            f"{PLUGIN}: {what} failed for {len(pending)} of {len(entries)} messages on SQS "
            f"queue {self.sqs_name!r} after {BATCH_ATTEMPTS} attempts "
            f"({server_failure.get('Code')}: {server_failure.get('Message')})")

    # -- sizes and queues

    def _attributes(self, what: str, names: list[str]) -> dict[str, int]:
        reply = self._call(what, "get_queue_attributes", AttributeNames=names)
        attributes = reply.get("Attributes", {})
        return {name: int(attributes.get(name, 0)) for name in names}

    def queue_size(self) -> int:
        """ApproximateNumberOfMessages, read now (SQS's count is approximate)."""
        return self._attributes("queue_size", ["ApproximateNumberOfMessages"])[
            "ApproximateNumberOfMessages"]

    def lock_size(self) -> int:
        """ApproximateNumberOfMessagesNotVisible: messages in flight, read now."""
        return self._attributes("lock_size", ["ApproximateNumberOfMessagesNotVisible"])[
            "ApproximateNumberOfMessagesNotVisible"]

    def purge_queue(self) -> None:
        """PurgeQueue. An empty queue is not purged (SQS runs one PurgeQueue per queue
        per 60 s: this keeps it for when it matters). While one runs, the waiting
        messages are received and deleted; messages in flight then cannot be deleted
        (only their holder has their receipt handle): that is an error saying how many."""
        counts = self._attributes("purge_queue", [
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed"])
        if not any(counts.values()):
            self._drain()  # the counts may not show a message sent a moment ago yet
            return
        try:
            self._call("purge_queue", "purge_queue", passthrough=(PURGE_RUNNING,))
        except botocore.exceptions.ClientError:
            deleted = self._drain()
            left = self._attributes("purge_queue", [
                "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"])
            in_flight = left["ApproximateNumberOfMessagesNotVisible"]
            delayed = left["ApproximateNumberOfMessagesDelayed"]
            logger.info("%s: a PurgeQueue of %r is still running (one per 60 s): deleted %d "
                        "waiting messages one by one", PLUGIN, self.sqs_name, deleted)
            if in_flight or delayed:
                kept = []
                if in_flight:
                    kept.append(f"{in_flight} in flight (taken, not acknowledged) can only be "
                                f"deleted by their holder and come back after 'retry' "
                                f"({self.config.retry} s)")
                if delayed:
                    kept.append(f"{delayed} delayed ones cannot be received before they "
                                f"are due")
                raise BrokerError(
                    f"{PLUGIN}: purge_queue: SQS runs one PurgeQueue per queue per 60 s and "
                    f"one is still running for {self.sqs_name!r}; {deleted} waiting messages "
                    f"were deleted one by one, but {' and '.join(kept)} — purge again in a "
                    f"minute") from None

    def _drain(self) -> int:
        """Receive and delete what is waiting (long polls of 1 s, which ask every SQS
        server, until one comes back empty); return how many were deleted."""
        deleted = 0
        deadline = time.monotonic() + DRAIN_LIMIT
        while time.monotonic() < deadline:
            messages = self._receive(MAX_BATCH, 1, max(self.visibility, 30))
            if not messages:
                break
            self.acknowledge_many(m.ack_id for m in messages)
            deleted += len(messages)
        return deleted

    def delete_queue(self) -> None:
        """DeleteQueue. SQS creates a queue of the same name again only after 60 s."""
        url = self._queue_url or self._find_url()
        if url is not None:
            try:
                with aws_errors(self, "delete_queue", "delete_queue", passthrough=MISSING_QUEUE):
                    self.client().delete_queue(QueueUrl=url)
            except botocore.exceptions.ClientError:  # deleted meanwhile: done
                pass
        self._forget_queue()

    # -- the service

    def ping(self) -> bool:
        """Look the queue up (creating it if missing and allowed) and read an attribute."""
        self._attributes("ping", ["ApproximateNumberOfMessages"])
        return True

    def info(self) -> str:
        """``Amazon SQS (<region>, <queue url>)``; the queue's name if it cannot be found."""
        try:
            where = self.queue_url()
        except QhiveError:
            where = f"queue {self.sqs_name!r}"
        kind = "Amazon SQS FIFO" if self.fifo_queue else "Amazon SQS"
        return f"{kind} ({self.options.region}, {where})"

    # -- hooks: a selected broker is a plugin too

    @hookimpl(wrapper=True)
    def qhive_enqueue(self, task: dict[str, Any], broker: Broker, codec: TaskCodec) -> Any:
        """Name the task in the error of a package too large for this queue: the broker
        itself only sees bytes."""
        try:
            return (yield)
        except MessageTooLarge as exc:
            if broker is not self or exc.task is not None:
                raise
            raise exc.for_task(task) from None


# --------------------------------------------------------------------------- helpers


def _visibility(retry: Any) -> int:
    """``retry`` as SQS's visibility timeout: whole seconds, 1 to 12 hours."""
    try:
        seconds = math.ceil(float(retry))
    except (TypeError, ValueError):
        raise ConfigError(f"{PLUGIN}: Q_CLUSTER['retry'] must be a number of seconds, got "
                          f"{retry!r}", key="retry") from None
    if not 1 <= seconds <= MAX_VISIBILITY:
        raise ConfigError(f"{PLUGIN}: Q_CLUSTER['retry'] is the SQS visibility timeout, 1 to "
                          f"{MAX_VISIBILITY} seconds (12 hours); got {retry!r}", key="retry")
    return seconds


def _payload(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"the SQS broker queues bytes, got {type(value).__name__}")


def _message(reply: Mapping[str, Any]) -> Message:
    body = reply.get("Body", "")
    try:
        if not body.startswith(BODY_PREFIX):
            raise ValueError("not sent by this broker")
        payload = base64.b64decode(body[len(BODY_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        # Not a qhive body (Django Q2's, one sent from a console): handed on as it is,
        # so that the cluster rejects it as a bad signature and fails it.
        payload = body.encode()
    count = reply.get("Attributes", {}).get("ApproximateReceiveCount")
    return Message(reply["ReceiptHandle"], payload, int(count) if count else None)


def _batches(bodies: list[str]) -> Iterator[list[str]]:
    """At most 10 bodies and 1 MiB per SendMessageBatch."""
    batch: list[str] = []
    size = 0
    for body in bodies:
        if batch and (len(batch) >= MAX_BATCH or size + len(body) > MAX_MESSAGE):
            yield batch
            batch, size = [], 0
        batch.append(body)
        size += len(body)
    if batch:
        yield batch

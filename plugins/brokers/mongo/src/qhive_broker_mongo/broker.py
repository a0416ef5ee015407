"""``MongoBroker``: Django Q2's MongoDB queue, with leases as delivery receipts.

A task taken from the queue is leased until ``now + retry``: one the cluster never
acknowledges (it died, it was killed) comes back when the lease runs out. (Django Q2's
Mongo broker takes one message per call, has no index for its query, sleeps a fixed
``poll`` when idle and answers ``ping`` without asking the server.) Each queue is a
collection, ``qhive_queue_<queue>`` in the database ``mongo_db``, one document per
message:

* ``payload`` — the bytes given to :meth:`~MongoBroker.enqueue`;
* ``visible`` — from when it may be taken: the second it was enqueued (its ObjectId's),
  or when its delay ends; while leased, the end of the lease; released with a delay,
  the end of that delay;
* ``token`` — the lease, a random token written by the claim that took it (absent on
  a message never taken, or given back by :meth:`~MongoBroker.release`);
* ``deliveries`` — how often it was handed out.

A claim is atomic per message and takes messages in queue order (``visible``, then
``_id``: FIFO for each producer; one compound index, created on first use, serves the
filter and the sort). One message is one ``find_one_and_update``. Several are two
round trips whatever ``count`` is (a loop of ``find_one_and_update`` would be ``count``
+ 1): a ``find`` of up to ``count`` visible messages, then one ``update_many`` that
leases, under a fresh token, those no claim took since (same ``_id`` and
``deliveries``, still visible) — the server evaluates the filter on each document as it
writes it, so two clusters racing for a message never both get it. If all were leased,
what the ``find`` read is what this claim holds; if other clusters won some, a third
call, a ``find`` of the token, says which. The receipt (``ack_id``) is
``<_id>.<token>``.

Acknowledging deletes by ``_id`` whoever holds the message now (``acknowledge_many``:
one ``delete_many``): it was processed, so a second run is not wanted. :meth:`touch`
and :meth:`release` change only the lease their receipt names: a cluster whose lease ran
out never prolongs or hands back the lease of the cluster that took the message since.

Delays (``enqueue(delay=s)``, ``release(ack_id, delay=s)``) are only a later
``visible``: the message is an ordinary document meanwhile (it survives restarts) and
is taken by the first look after it falls due, in queue order with the others. A plain
enqueue costs what it did: one ``insert_one``.

There is no wake-up (change streams need a replica set): :meth:`dequeue` polls with the
core's back-off — a look every few milliseconds while work comes, one every ``poll``
seconds once idle (so a delayed message is taken at most ``poll`` seconds, 0.2 by
default, after it falls due). Statistics live in ``qhive_stats`` (key, value, expiry), with a TTL
index so the server deletes expired ones; reads skip them before it does.

Times come from the clock of the process that enqueues, takes or renews: pymongo's
classic updates cannot ask the server for "now". Hosts need synchronised clocks (NTP).
pymongo's errors become :class:`qhive.errors.BrokerConnectionError` (server unreachable,
with the timeout that gave up) or :class:`qhive.errors.BrokerError`; the client
reconnects by itself once the server is back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pymongo
from bson import ObjectId
from bson.errors import InvalidId
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from qhive.contracts import Broker, Capabilities, Message, ProcessLocal, checked_delivery
from qhive.errors import BrokerConnectionError, BrokerError, ConfigError

from qhive_broker_mongo.options import (
    DEFAULT_DATABASE,
    PLUGIN,
    address,
    check_collection,
    check_database,
    client_options,
    server_selection_timeout,
)

if TYPE_CHECKING:
    from pymongo.collection import Collection
    from qhive.config import Config

__all__ = ["ORDER", "QUEUE_PREFIX", "STATS_COLLECTION", "MongoBroker"]

#: A queue's collection is this prefix and the queue (cluster) name.
QUEUE_PREFIX = "qhive_queue_"
#: The statistics of every cluster using the database.
STATS_COLLECTION = "qhive_stats"
#: The queue order; the index of that name serves it and the ``visible`` filter.
ORDER = [("visible", pymongo.ASCENDING), ("_id", pymongo.ASCENDING)]
ORDER_INDEX = "qhive_queue_order"
STATS_INDEX = "qhive_stats_expiry"
#: What a claim reads of a message.
FIELDS = {"payload": 1, "deliveries": 1}
#: A bulk claim whose candidates all went to other clusters first looks this often.
CLAIM_TRIES = 3


class MongoBroker(ProcessLocal, Broker):
    """The MongoDB broker.

    :param queue: the queue (cluster name); its collection is ``qhive_queue_<queue>``.
    :param config: the cluster's config (``retry`` is the lease, ``poll`` the idle pause).
    :param mongo: ``pymongo.MongoClient`` keyword arguments — Django Q2's
        ``Q_CLUSTER["mongo"]``; a ``mongodb://`` URI goes in ``host``. Default: the
        server on localhost:27017. ``serverSelectionTimeoutMS`` defaults to 5000 and
        ``socketTimeoutMS`` to 30000 unless set here or in the URI.
    :param mongo_db: the database of the queues — Django Q2's ``Q_CLUSTER["mongo_db"]``;
        default: the URI's database, else ``django-q``.
    :param client_factory: for tests only: a picklable callable taking ``MongoClient``'s
        arguments and returning a client in its place, such as
        ``qhive_testkit.mongo_server.mongomock_client``. Default: ``pymongo.MongoClient``.
    """

    builds_offline = True  # settings are checked here; the client connects on use

    capabilities = Capabilities(
        receipts=True, bulk=True, blocking=False, fifo=True, stats=True, shared=True, touch=True,
        delay=True,
    )

    def __init__(
        self, queue: str = "default", *, config: Config | None = None,
        mongo: Mapping[str, Any] | str | None = None, mongo_db: str | None = None,
        client_factory: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(queue, config=config)
        self.client_options = client_options(mongo)
        self.client_factory = client_factory
        self._info: str | None = None
        self._init_local_state()
        client = self._client = self._build_client()  # checks the options; connects nowhere
        if mongo_db is None:
            mongo_db = client.get_default_database(DEFAULT_DATABASE).name
        self.database = check_database(mongo_db)
        self.collection = check_collection(queue, QUEUE_PREFIX, self.database)

    #: Left behind by a pickled copy, which makes its own (ProcessLocal).
    local_state = ("_client", "_client_lock", "_pid", "_indexed")

    def _init_local_state(self) -> None:
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._pid = os.getpid()
        self._indexed: set[str] = set()  # collections whose indexes this client made

    def __repr__(self) -> str:
        return f"<{type(self).__name__} queue={self.queue!r} at {self.address}/{self.database}>"

    # -- the client

    def _build_client(self) -> Any:
        factory = self.client_factory or pymongo.MongoClient
        try:
            client = factory(**self.client_options)
        except (ConfigurationError, TypeError, ValueError) as exc:
            raise ConfigError(f"{PLUGIN}: Q_CLUSTER['mongo'] is not usable: {_reason(exc)}",
                              key="mongo") from None
        self._pid = os.getpid()
        return client

    def client(self) -> Any:
        """The ``MongoClient`` of this process (built on first use; connects when used)."""
        client = self._client
        if client is None or self._pid != os.getpid():
            with self._client_lock:
                if self._client is None or self._pid != os.getpid():
                    # One inherited through fork is the parent's: dropped, not closed.
                    self._client = self._build_client()
                    self._indexed = set()
                client = self._client
        return client

    def _queue(self) -> Collection:
        collection = self.client()[self.database][self.collection]
        if self.collection not in self._indexed:
            collection.create_index(ORDER, name=ORDER_INDEX)
            self._indexed.add(self.collection)
        return collection

    def _stats(self) -> Collection:
        collection = self.client()[self.database][STATS_COLLECTION]
        if STATS_COLLECTION not in self._indexed:
            collection.create_index("expires", name=STATS_INDEX, expireAfterSeconds=0)
            self._indexed.add(STATS_COLLECTION)
        return collection

    def close(self) -> None:
        """Close the client; the next call opens a new one."""
        client, self._client, self._indexed = self._client, None, set()
        if client is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):
                client.close()

    # -- where the server is, for messages (never with a password)

    @property
    def address(self) -> str:
        return address(self.client_options)

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn pymongo's errors into qhive's, naming the server and the fix."""
        try:
            yield
        except ServerSelectionTimeoutError as exc:
            timeout = server_selection_timeout(self._client)
            within = f" within {timeout:g} s (serverSelectionTimeoutMS)" if timeout else ""
            raise BrokerConnectionError(
                f"{PLUGIN}: {what} failed: cannot reach MongoDB at {self.address}{within}: "
                f"{_reason(exc)}. {self._start_hint()}") from exc
        except ConnectionFailure as exc:
            raise BrokerConnectionError(
                f"{PLUGIN}: {what} failed: lost the connection to MongoDB at {self.address} "
                f"({_reason(exc)}); the next call reconnects") from exc
        except OperationFailure as exc:
            raise BrokerError(f"{PLUGIN}: {what} failed on MongoDB at {self.address}: "
                              f"{_reason(exc)} (code {exc.code})") from exc
        except PyMongoError as exc:
            raise BrokerError(f"{PLUGIN}: {what} failed on MongoDB at {self.address}: "
                              f"{type(exc).__name__}: {_reason(exc)}") from exc

    def _start_hint(self) -> str:
        first = self.address.split(",")[0]
        host, _, port = first.rpartition(":")
        if host in ("127.0.0.1", "localhost", "::1", "[::1]"):
            return (f"Is mongod running? Start it with: mongod --bind_ip {host} --port {port} "
                    f"--dbpath <a folder>")
        return f"Is MongoDB at {self.address} running and reachable from this host?"

    # -- enqueue

    def enqueue(self, payload: bytes, *, delay: float = 0.0) -> str:
        """Insert the message; with ``delay`` (seconds) it is not visible before then."""
        document = _document(payload)
        if delay != 0:
            document["visible"] = _later(checked_delivery(PLUGIN, delay)[0])
        with self._errors("enqueue"):
            self._queue().insert_one(document)
        return str(document["_id"])

    def enqueue_many(self, payloads: Iterable[bytes]) -> list[str]:
        """Enqueue several payloads with one ``insert_many`` (pymongo splits it in
        batches the server takes)."""
        documents = [_document(p) for p in payloads]
        if documents:
            with self._errors("enqueue_many"):
                self._queue().insert_many(documents)
        return [str(d["_id"]) for d in documents]

    # -- dequeue

    def dequeue(self, count: int = 1, timeout: float = 0.0) -> list[Message]:
        count = max(1, int(count))
        return self._poll(lambda: self._claim(count), max(float(timeout or 0.0), 0.0))

    def _claim(self, count: int) -> list[Message]:
        token = os.urandom(8).hex()
        with self._errors("dequeue"):
            queue = self._queue()
            if count == 1:
                now = _now()
                found = queue.find_one_and_update(
                    {"visible": {"$lte": now}}, self._lease(now, token), sort=ORDER,
                    projection=FIELDS, return_document=pymongo.ReturnDocument.AFTER)
                return [] if found is None else [_message(found, token)]
            for _ in range(CLAIM_TRIES):
                now = _now()
                seen = list(queue.find({"visible": {"$lte": now}}, FIELDS).sort(ORDER)
                            .limit(count))
                if not seen:
                    return []
                # Each message only if no claim took it since it was seen (a claim
                # counts a delivery): then what was seen is exactly what was leased.
                unchanged = [{"_id": d["_id"], "deliveries": d["deliveries"]} for d in seen]
                taken = queue.update_many({"$or": unchanged, "visible": {"$lte": now}},
                                          self._lease(now, token))
                if taken.modified_count == len(seen):  # the usual case: two round trips
                    return [_message({**d, "deliveries": d["deliveries"] + 1}, token)
                            for d in seen]
                if taken.modified_count:  # other clusters took some: which are ours?
                    ids = [d["_id"] for d in seen]
                    won = queue.find({"_id": {"$in": ids}, "token": token}, FIELDS).sort(ORDER)
                    return [_message(d, token) for d in won]
            return []

    def _lease(self, now: dt.datetime, token: str) -> dict[str, Any]:
        until = now + dt.timedelta(seconds=float(self.config.retry))
        return {"$set": {"visible": until, "token": token}, "$inc": {"deliveries": 1}}

    # -- finishing messages

    def acknowledge(self, ack_id: str) -> None:
        self._delete([ack_id], "acknowledge")

    def acknowledge_many(self, ack_ids: Iterable[str]) -> None:
        """Acknowledge several messages with one ``delete_many``."""
        self._delete(ack_ids, "acknowledge_many")

    def fail(self, ack_id: str) -> None:
        self._delete([ack_id], "fail")

    def delete(self, ack_id: str) -> None:
        self._delete([ack_id], "delete")

    def _delete(self, ack_ids: Iterable[str], what: str) -> None:
        ids = [_receipt(a)[0] for a in ack_ids]
        if ids:
            with self._errors(what):
                self._queue().delete_many({"_id": {"$in": ids}})

    def touch(self, ack_ids: Iterable[str]) -> None:
        """Move the leases still held to ``retry`` seconds from now (one ``update_many``
        per lease token); a lease that ran out or was taken over stays as it is."""
        leases: dict[str, list[ObjectId]] = {}
        for ack_id in ack_ids:
            oid, token = _receipt(ack_id)
            leases.setdefault(token, []).append(oid)
        if not leases:
            return
        with self._errors("touch"):
            queue = self._queue()
            now = _now()
            until = now + dt.timedelta(seconds=float(self.config.retry))
            for token, ids in leases.items():
                queue.update_many({"_id": {"$in": ids}, "token": token, "visible": {"$gt": now}},
                                  {"$set": {"visible": until}})

    def release(self, ack_id: str, *, delay: float = 0.0) -> None:
        """End the lease and put the message back in its place in the queue at once, or
        make it visible ``delay`` seconds from now (its delivery still counts either
        way); a lease that ran out or was taken over stays."""
        oid, token = _receipt(ack_id)
        visible = (_naive(oid.generation_time) if delay == 0
                   else _later(checked_delivery(PLUGIN, delay)[0]))
        with self._errors("release"):
            self._queue().update_one(
                {"_id": oid, "token": token, "visible": {"$gt": _now()}},
                {"$set": {"visible": visible}, "$unset": {"token": ""}})

    # -- sizes and queues

    def queue_size(self) -> int:
        """Messages waiting: not leased, or whose lease ran out (not those delayed)."""
        with self._errors("queue_size"):
            return self._queue().count_documents({"visible": {"$lte": _now()}})

    def lock_size(self) -> int:
        """Messages leased and not yet acknowledged (a delayed message has no lease)."""
        with self._errors("lock_size"):
            return self._queue().count_documents({"visible": {"$gt": _now()},
                                                  "token": {"$exists": True}})

    def purge_queue(self) -> None:
        """Remove every message, waiting or leased (the collection and index stay)."""
        with self._errors("purge_queue"):
            self._queue().delete_many({})

    def delete_queue(self) -> None:
        """Drop the queue's collection."""
        with self._errors("delete_queue"):
            self.client()[self.database][self.collection].drop()
        self._indexed.discard(self.collection)

    # -- the server

    def ping(self) -> bool:
        with self._errors("ping"):
            self.client().admin.command("ping")
        return True

    def info(self) -> str:
        if self._info is None:
            with self._errors("info"):
                version = self.client().server_info().get("version", "?")
            self._info = f"MongoDB {version}"
        return self._info

    # -- statistics

    def set_stat(self, key: str, value: bytes, ttl: float) -> None:
        expires = _now() + dt.timedelta(seconds=float(ttl))
        with self._errors("set_stat"):
            self._stats().update_one({"_id": _stat_key(key)},
                                     {"$set": {"value": _payload(value), "expires": expires}},
                                     upsert=True)

    def get_stat(self, key: str) -> bytes | None:
        with self._errors("get_stat"):
            found = self._stats().find_one({"_id": _stat_key(key), "expires": {"$gt": _now()}},
                                           {"value": 1})
        return None if found is None else bytes(found["value"])

    def get_stats(self, prefix: str) -> list[bytes]:
        """Every live stat under ``prefix``: an anchored regex on ``_id``, which the
        ``_id`` index serves."""
        wanted = {"_id": {"$regex": "^" + re.escape(prefix)}, "expires": {"$gt": _now()}}
        with self._errors("get_stats"):
            return [bytes(d["value"]) for d in self._stats().find(wanted, {"value": 1})]


# --------------------------------------------------------------------------- helpers


def _now() -> dt.datetime:
    """Now in UTC, naive, as BSON dates are read back by default."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _later(seconds: float) -> dt.datetime:
    """``seconds`` from now, rounded up to the millisecond BSON dates keep: a delayed
    message is never visible before its delay has passed."""
    moment = _now() + dt.timedelta(seconds=seconds)
    if moment.microsecond % 1000:
        moment += dt.timedelta(microseconds=1000 - moment.microsecond % 1000)
    return moment


def _naive(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def _payload(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"the MongoDB broker queues bytes, got {type(value).__name__}")


def _document(payload: Any) -> dict[str, Any]:
    oid = ObjectId()
    return {"_id": oid, "payload": _payload(payload), "visible": _naive(oid.generation_time),
            "deliveries": 0}


def _message(document: Mapping[str, Any], token: str) -> Message:
    return Message(f"{document['_id']}.{token}", bytes(document["payload"]),
                   int(document["deliveries"]))


def _receipt(ack_id: str) -> tuple[ObjectId, str]:
    """(``_id``, lease token) of a receipt; a bare ``_id`` (an enqueue's id) has no token."""
    oid, _, token = str(ack_id).partition(".")
    try:
        return ObjectId(oid), token
    except (InvalidId, TypeError):
        raise ValueError(f"{ack_id!r} is not a MongoDB broker ack id "
                         f"('<ObjectId>.<lease token>')") from None


def _stat_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"MongoDB broker stat keys are non-empty strings, got {key!r}")
    return key


def _reason(exc: BaseException) -> str:
    """pymongo's message on one line, without the topology dump of a selection timeout."""
    if isinstance(exc, OperationFailure):
        text = (exc.details or {}).get("errmsg") or str(exc)
    else:
        text = str(exc).split(", Timeout:", 1)[0]
        text = re.sub(r"\s*\(configured timeouts:[^)]*\)", "", text)
    return " ".join(text.split()) or type(exc).__name__

"""A MongoDB wire-protocol server for TESTS ONLY. It is not a MongoDB: no journal, no
replication, no authentication, one command at a time, queries are mongomock's.

No MongoDB server installs here (neither PyPI nor Debian has one; the packages that
"install" one download it at run time), so the MongoDB broker's tests run the real
``pymongo`` client — its connection pool, server selection, BSON and OP_MSG — against
this server: ``mockupdb`` (MongoDB's own library for wire-protocol test servers) reads
each command off the socket, and the command runs on a ``mongomock`` store. It answers
what qhive's MongoDB broker and pymongo send:

* handshake and monitoring: ``hello`` / ``isMaster`` (a standalone server of wire
  version 13, MongoDB 5.0, the version mongomock follows, with no sessions, so pymongo
  sends none), ``ping``, ``buildInfo``, ``endSessions``, ``killCursors``;
* ``insert``, ``find``, ``update``, ``delete``, ``findAndModify``, ``aggregate``
  (``count_documents``), ``count``;
* ``createIndexes``, ``listIndexes``, ``drop``, ``dropDatabase``, ``listCollections``,
  ``listDatabases``.

Anything else is MongoDB's ``CommandNotFound`` error. Every reply fits one batch (the
cursor id is 0: no ``getMore``). Commands run one at a time under mockupdb's lock,
so each is atomic, as MongoDB's single-document writes are (and a multi-document
update more so). A command that fails is an error reply, never a dropped connection.

It listens on 127.0.0.1 (mockupdb binds ``localhost``). With ``--state FILE`` it keeps
its data across a restart, as a cleanly stopped ``mongod`` does: SIGTERM or SIGINT ends
the command being run, closes every connection, writes all collections, their indexes
and documents to FILE (BSON), and exits; the next start on that FILE loads them. A
``kill -9`` loses what it held.

In process: :class:`MongoTestServer` (threads). As a process of its own: ``python -m
qhive_testkit.mongo_server --port N [--state FILE]``, or :class:`MongoServerProcess`.
Fixtures: ``mongo_test_server`` (one per test session; the real MongoDB at
``$QHIVE_TEST_MONGO_URL`` instead, when that is set) and ``mongo_server_process`` (a
test's own, to stop and start). :func:`mongomock_client` gives a broker an in-process
mongomock client instead, for tests that need no second process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import bson
import mockupdb
import mongomock
import pytest
from bson.int64 import Int64
from mongomock.store import ServerStore
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, OperationFailure

from qhive_testkit.services import free_port, stop_process, wait_until_up

__all__ = ["MONGO_URL_ENV", "ExternalMongo", "MongoServerProcess", "MongoTestServer", "main",
           "mongo_server_process", "mongo_test_server", "mongomock_client"]

#: A real MongoDB to run the tests on instead of this server, e.g. mongodb://127.0.0.1:27017.
MONGO_URL_ENV = "QHIVE_TEST_MONGO_URL"
#: The MongoDB version whose behaviour mongomock follows, and its wire version.
SERVER_VERSION = mongomock.SERVER_VERSION
WIRE_VERSION = 13
MAX_BSON_SIZE = 16 * 1024 * 1024

#: mongomock's data for :func:`mongomock_client`: one store per process.
_IN_PROCESS_STORE = ServerStore()


def mongomock_client(host: Any = None, port: Any = None, **options: Any) -> mongomock.MongoClient:
    """A mongomock client on this process's one in-memory store: what a test passes as
    ``MongoBroker(client_factory=...)`` to run the broker without any server. Clients
    made here share data within the process, never with another process."""
    return mongomock.MongoClient(host, port, _store=_IN_PROCESS_STORE, **options)


# --------------------------------------------------------------------------- commands


class _Failure(Exception):
    """An error reply: MongoDB's ``code`` and ``codeName``."""

    def __init__(self, message: str, code: int, code_name: str) -> None:
        super().__init__(message)
        self.code, self.code_name = code, code_name


class _Commands:
    """Runs commands on a mongomock client; the server calls one at a time."""

    def __init__(self, client: mongomock.MongoClient) -> None:
        self.client = client
        self.connection_ids = itertools.count(1)
        self.table: dict[str, Callable[[str, Mapping[str, Any]], dict[str, Any]]] = {
            "hello": self.hello, "ismaster": self.hello, "ping": self.nothing,
            "buildinfo": self.build_info, "endsessions": self.nothing,
            "killcursors": self.nothing, "insert": self.insert, "find": self.find,
            "update": self.update, "delete": self.delete, "findandmodify": self.find_and_modify,
            "aggregate": self.aggregate, "count": self.count,
            "createindexes": self.create_indexes, "listindexes": self.list_indexes,
            "drop": self.drop, "dropdatabase": self.drop_database,
            "listcollections": self.list_collections, "listdatabases": self.list_databases,
        }

    def run(self, name: str, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        """The reply to one command: never raises."""
        run = self.table.get(name.lower())
        try:
            if run is None:
                raise _Failure(f"no such command: '{name}' (qhive's MongoDB test server "
                               f"knows only what qhive's broker and pymongo send)", 59,
                               "CommandNotFound")
            return {**run(db, command), "ok": 1.0}
        except _Failure as exc:
            return {"ok": 0.0, "errmsg": str(exc), "code": exc.code, "codeName": exc.code_name}
        except OperationFailure as exc:
            return {"ok": 0.0, "errmsg": str(exc), "code": exc.code or 8,
                    "codeName": "UnknownError"}
        except Exception as exc:  # a bug here or in mongomock: an error reply, not a hang
            return {"ok": 0.0, "errmsg": f"{type(exc).__name__}: {exc}", "code": 1,
                    "codeName": "InternalError"}

    def _collection(self, db: str, command: Mapping[str, Any]) -> Any:
        name = next(iter(command.values()))
        if not isinstance(name, str) or not name:
            raise _Failure(f"collection name must be a non-empty string, got {name!r}", 73,
                           "InvalidNamespace")
        return self.client[db][name]

    # -- the server

    def hello(self, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        return {"ismaster": True, "isWritablePrimary": True, "helloOk": True,
                "maxBsonObjectSize": MAX_BSON_SIZE, "maxMessageSizeBytes": 48_000_000,
                "maxWriteBatchSize": 100_000, "localTime": dt.datetime.now(dt.UTC),
                "connectionId": next(self.connection_ids), "minWireVersion": 0,
                "maxWireVersion": WIRE_VERSION, "readOnly": False}

    def build_info(self, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        numbers = [int(p) for p in SERVER_VERSION.split(".")]
        return {"version": SERVER_VERSION, "versionArray": [*numbers, 0][:4],
                "gitVersion": "qhive-testkit-mongomock", "bits": 64,
                "maxBsonObjectSize": MAX_BSON_SIZE, "qhiveTestServer": True}

    def nothing(self, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    # -- documents

    def insert(self, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        collection = self._collection(db, command)
        ordered = command.get("ordered", True)
        inserted, errors = 0, []
        for index, document in enumerate(command.get("documents", [])):
            try:
                collection.insert_one(document)
                inserted += 1
            except DuplicateKeyError as exc:
                errors.append({"index": index, "code": 11000, "errmsg": str(exc)})
                if ordered:
                    break
        return {"n": inserted, **({"writeErrors": errors} if errors else {})}

    def find(self, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        collection = self._collection(db, command)
        found = collection.find(command.get("filter") or {}, command.get("projection") or None,
                                skip=int(command.get("skip") or 0),
                                limit=abs(int(command.get("limit") or 0)))
        if command.get("sort"):
            found = found.sort(list(command["sort"].items()))
        return _cursor(db, collection.name, list(found))

    def update(self, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        collection = self._collection(db, command)
        ordered = command.get("ordered", True)
        matched = modified = 0
        upserted, errors = [], []
        for index, spec in enumerate(command.get("updates", [])):
            query, change, upsert = spec.get("q") or {}, spec.get("u") or {}, spec.get("upsert")
            try:
                if isinstance(change, list):
                    raise _Failure("update pipelines are not supported here", 2, "BadValue")
                if change and not next(iter(change)).startswith("$"):
                    result = collection.replace_one(query, change, upsert=bool(upsert))
                elif spec.get("multi"):
                    result = collection.update_many(query, change, upsert=bool(upsert))
                else:
                    result = collection.update_one(query, change, upsert=bool(upsert))
            except (_Failure, OperationFailure, ValueError) as exc:
                errors.append({"index": index, "code": getattr(exc, "code", None) or 2,
                               "errmsg": str(exc)})
                if ordered:
                    break
                continue
            matched += result.matched_count
            modified += result.modified_count
            if result.upserted_id is not None:
                matched += 1
                upserted.append({"index": index, "_id": result.upserted_id})
        return {"n": matched, "nModified": modified,
                **({"upserted": upserted} if upserted else {}),
                **({"writeErrors": errors} if errors else {})}

    def delete(self, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        collection = self._collection(db, command)
        deleted = 0
        for spec in command.get("deletes", []):
            query = spec.get("q") or {}
            result = (collection.delete_one(query) if spec.get("limit") == 1
                      else collection.delete_many(query))
            deleted += result.deleted_count
        return {"n": deleted}

    def find_and_modify(self, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        collection = self._collection(db, command)
        query = command.get("query") or {}
        sort = list(command["sort"].items()) if command.get("sort") else None
        fields = command.get("fields") or None
        if command.get("remove"):
            value = collection.find_one_and_delete(query, projection=fields, sort=sort)
            return {"value": value, "lastErrorObject": {"n": int(value is not None)}}
        change = command.get("update") or {}
        if isinstance(change, list):
            raise _Failure("update pipelines are not supported here", 2, "BadValue")
        after = ReturnDocument.AFTER if command.get("new") else ReturnDocument.BEFORE
        upsert = bool(command.get("upsert"))
        if change and not next(iter(change)).startswith("$"):
            value = collection.find_one_and_replace(query, change, projection=fields, sort=sort,
                                                    upsert=upsert, return_document=after)
        else:
            value = collection.find_one_and_update(query, change, projection=fields, sort=sort,
                                                   upsert=upsert, return_document=after)
        return {"value": value, "lastErrorObject": {"n": int(value is not None),
                                                    "updatedExisting": value is not None}}

    def aggregate(self, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        collection = self._collection(db, command)
        return _cursor(db, collection.name, list(collection.aggregate(command["pipeline"])))

    def count(self, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        return {"n": self._collection(db, command).count_documents(command.get("query") or {})}

    # -- collections and indexes

    def create_indexes(self, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        collection = self._collection(db, command)
        existed = collection.name in self.client[db].list_collection_names()
        before = len(collection.index_information()) if existed else 0
        for spec in command.get("indexes", []):
            options = {k: v for k, v in spec.items() if k not in ("key", "v", "ns")}
            collection.create_index(list(spec["key"].items()), **options)
        return {"createdCollectionAutomatically": not existed, "numIndexesBefore": before,
                "numIndexesAfter": len(collection.index_information())}

    def list_indexes(self, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        collection = self._collection(db, command)
        indexes = [{**{k: v for k, v in info.items() if k != "key"}, "key": dict(info["key"]),
                    "name": name} for name, info in collection.index_information().items()]
        return _cursor(db, collection.name, indexes)

    def drop(self, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        collection = self._collection(db, command)
        collection.drop()
        return {"ns": f"{db}.{collection.name}"}

    def drop_database(self, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        self.client.drop_database(db)
        return {"dropped": db}

    def list_collections(self, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        names = self.client[db].list_collection_names()
        return _cursor(db, "$cmd.listCollections",
                       [{"name": n, "type": "collection", "options": {}} for n in names])

    def list_databases(self, db: str, command: Mapping[str, Any]) -> dict[str, Any]:
        names = self.client.list_database_names()
        return {"databases": [{"name": n, "sizeOnDisk": 0, "empty": False} for n in names],
                "totalSize": 0}


def _cursor(db: str, collection: str, documents: list[Any]) -> dict[str, Any]:
    return {"cursor": {"id": Int64(0), "ns": f"{db}.{collection}", "firstBatch": documents}}


# --------------------------------------------------------------------------- state


def save_state(client: mongomock.MongoClient, path: Path) -> None:
    """Write every collection, its indexes and documents to ``path`` (BSON, one record
    a collection or a document), through a temporary file renamed into place."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out:
        for db_name in client.list_database_names():
            db = client[db_name]
            for name in db.list_collection_names():
                indexes = [{**{k: v for k, v in info.items() if k not in ("key", "v")},
                            "name": index, "key": [list(pair) for pair in info["key"]]}
                           for index, info in db[name].index_information().items()
                           if index != "_id_"]
                out.write(bson.encode({"collection": [db_name, name], "indexes": indexes}))
                for document in db[name].find():
                    out.write(bson.encode({"in": [db_name, name], "document": document}))
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


def load_state(client: mongomock.MongoClient, path: Path) -> int:
    """Load what :func:`save_state` wrote; returns how many documents."""
    documents: dict[tuple[str, str], list[Any]] = {}
    with path.open("rb") as source:
        for record in bson.decode_file_iter(source):
            if "collection" in record:
                db_name, name = record["collection"]
                collection = client[db_name][name]
                documents.setdefault((db_name, name), [])
                for index in record["indexes"]:
                    options = {k: v for k, v in index.items() if k != "key"}
                    collection.create_index([tuple(pair) for pair in index["key"]], **options)
            else:
                documents.setdefault(tuple(record["in"]), []).append(record["document"])
    for (db_name, name), batch in documents.items():
        if batch:
            client[db_name][name].insert_many(batch)
    return sum(map(len, documents.values()))


# --------------------------------------------------------------------------- the server


class MongoTestServer:
    """The test server in this process (mockupdb's threads, a mongomock store).

    :param port: the port on 127.0.0.1 (0: a free one).
    :param state: a file to load the data from at :meth:`start` and save it to at
        :meth:`stop` (None: memory only).
    """

    def __init__(self, port: int = 0, *, state: Path | str | None = None) -> None:
        self.state = Path(state) if state else None
        self.store = mongomock.MongoClient(_store=ServerStore())
        self._commands = _Commands(self.store)
        self._server = mockupdb.MockupDB(port=port or None, verbose=False)
        self._server.autoresponds(self._answer)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> MongoTestServer:
        if self.state is not None and self.state.exists():
            load_state(self.store, self.state)
        self._server.run()
        return self

    def stop(self) -> None:
        """Close every connection (after the command being run), then save the data."""
        self._server.stop()
        if self.state is not None:
            save_state(self.store, self.state)

    def _answer(self, request: Any) -> bool:
        command = request.doc
        name = next(iter(command), "")
        db = command.get("$db") or str(request.namespace or "admin").split(".")[0]
        reply = self._commands.run(name, db, command)
        if getattr(request, "flags", 0) & mockupdb.OP_MSG_FLAGS["moreToCome"]:
            return True  # an unacknowledged write: the client waits for no reply
        try:
            request.replies(reply)
        except OSError:
            raise  # the client is gone: mockupdb ends the connection
        except Exception as exc:  # a reply that cannot be encoded
            request.replies({"ok": 0.0, "errmsg": f"{type(exc).__name__}: {exc}", "code": 1,
                             "codeName": "InternalError"})
        return True


class MongoServerProcess:
    """``python -m qhive_testkit.mongo_server`` as a process of its own on a free port of
    127.0.0.1, keeping its data in ``folder`` across :meth:`stop` and :meth:`start` as a
    cleanly stopped ``mongod`` keeps its data files. The port stays the same."""

    #: Tests may stop and start it.
    restartable = True

    def __init__(self, folder: Path | str, *, port: int = 0) -> None:
        self.folder = Path(folder)
        self.port = port or free_port()
        self.state = self.folder / "mongo_state.bson"
        self.log = self.folder / "mongo_server.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self, within: float = 30.0) -> MongoServerProcess:
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "qhive_testkit.mongo_server", "--port", str(self.port),
                 "--state", str(self.state)], stdout=out, stderr=subprocess.STDOUT)
        wait_until_up(self.process, self.port, what="the MongoDB test server", log=self.log,
                      within=within)
        return self

    def stop(self) -> None:
        """SIGTERM, as an administrator's stop: the server saves its data and exits."""
        stop_process(self.process, within=60)
        self.process = None


class ExternalMongo:
    """The MongoDB at ``$QHIVE_TEST_MONGO_URL``: a real server, shared; never stopped."""

    restartable = False

    def __init__(self, url: str) -> None:
        self.url = url


@pytest.fixture(scope="session")
def mongo_test_server(tmp_path_factory) -> Iterator[MongoServerProcess | ExternalMongo]:
    """The MongoDB of the session: the one at ``$QHIVE_TEST_MONGO_URL`` when set, else a
    :class:`MongoServerProcess` (one per xdist worker). Tests keep apart by queue names."""
    url = os.environ.get(MONGO_URL_ENV, "").strip()
    if url:
        yield ExternalMongo(url)
        return
    server = MongoServerProcess(tmp_path_factory.mktemp("mongo")).start()
    yield server
    server.stop()


@pytest.fixture
def mongo_server_process(tmp_path) -> Iterator[MongoServerProcess]:
    """A :class:`MongoServerProcess` of the test's own, to stop and start; stopped at the end."""
    server = MongoServerProcess(tmp_path).start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m qhive_testkit.mongo_server",
        description="A MongoDB wire-protocol server for tests (mockupdb + mongomock); "
                    "not a MongoDB.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--state", type=Path, help="load the data from this file at start, "
                                                   "save it there at SIGTERM / SIGINT")
    args = parser.parse_args(argv)
    server = MongoTestServer(args.port, state=args.state).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"qhive's MongoDB test server (not a MongoDB) on {server.url}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    print("stopped" + (f"; data saved in {args.state}" if args.state else ""), flush=True)


if __name__ == "__main__":
    main()

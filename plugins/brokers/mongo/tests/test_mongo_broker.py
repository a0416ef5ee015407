"""The MongoDB broker beyond the contract: its settings as Django Q2 reads them, leases
on a server reached over the wire, errors in one line, and the test server keeping its
data across a restart (the cluster's outage test relies on it)."""

from __future__ import annotations

import datetime as dt
import pickle
import time
import uuid

import pymongo
import pytest
from pymongo import monitoring
from qhive.config import Config
from qhive.errors import BrokerConnectionError, ConfigError
from qhive_broker_mongo.broker import ORDER_INDEX, QUEUE_PREFIX, STATS_INDEX, MongoBroker
from qhive_testkit.mongo_server import SERVER_VERSION, MongoServerProcess
from qhive_testkit.services import free_port

DATABASE = "qhive_broker_tests"


def config(**settings) -> Config:
    return Config.from_dict({"name": "mongo-tests", "poll": 0.05, **settings})


@pytest.fixture
def server(mongo_test_server):
    return mongo_test_server


@pytest.fixture
def made(server):
    """``made(**settings) -> MongoBroker`` on a queue of its own on the server; each one
    made is dropped and closed at the end."""
    brokers = []

    def make(queue: str | None = None, **settings) -> MongoBroker:
        broker = MongoBroker(queue or unique("mongo"), config=config(**settings),
                             mongo={"host": server.url}, mongo_db=DATABASE)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.delete_queue()
        broker.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- settings


def test_a_uri_in_host_names_the_database_and_never_shows_its_password():
    broker = MongoBroker("jobs", mongo={
        "host": "mongodb://qhive:s3cret@db.example:27018/queues?authSource=admin"})
    assert broker.database == "queues"
    assert broker.collection == f"{QUEUE_PREFIX}jobs"
    assert broker.address == "db.example:27018"
    assert "s3cret" not in repr(broker) and "s3cret" not in broker.address
    assert pickle.loads(pickle.dumps(broker)).database == "queues"


@pytest.mark.parametrize("mongo", [None, {"host": "127.0.0.1", "port": 27017},
                                   {"host": "mongodb://127.0.0.1:27017/"}])
def test_mongo_db_defaults_to_django_q(mongo):
    assert MongoBroker("jobs", mongo=mongo).database == "django-q"


def test_mongo_db_wins_over_the_uri():
    broker = MongoBroker("jobs", mongo={"host": "mongodb://127.0.0.1/queues"}, mongo_db="other")
    assert broker.database == "other"


def test_mongo_takes_mongoclient_keywords(server):
    broker = MongoBroker(unique("mongo"), config=config(), mongo_db=DATABASE, mongo={
        "host": server.url, "appname": "qhive-mongo-test", "maxPoolSize": 3,
        "socketTimeoutMS": 20000})
    try:
        options = broker.client().options
        assert options.pool_options.max_pool_size == 3
        assert options.pool_options.metadata["application"] == {"name": "qhive-mongo-test"}
        assert options.pool_options.socket_timeout == 20
        assert options.server_selection_timeout == 5, "the broker's default: 5 s, not 30"
        assert broker.ping() is True
    finally:
        broker.close()


def test_django_q2_keys_select_the_broker_and_reach_pymongo_as_plain_values():
    # Config freezes what Q_CLUSTER holds (tuples, read-only maps): pymongo gets lists/dicts.
    q = Config.from_dict({"name": "jobs", "mongo_db": "queues", "mongo": {
        "host": ["127.0.0.1:27017", "127.0.0.1:27018"], "compressors": ["zlib"],
        "authMechanismProperties": {"SERVICE_NAME": "mongodb"},
        "readPreference": "secondaryPreferred", "readPreferenceTags": ["dc:ny"]}})
    assert (q.broker, q.broker_selected_by) == ("mongo", "mongo")
    broker = MongoBroker(q.queue, config=q, **q.broker_options)
    options = broker.client().options
    assert broker.database == "queues"
    assert broker.address == "127.0.0.1:27017,127.0.0.1:27018"
    assert options.read_preference.tag_sets == [{"dc": "ny"}]


@pytest.mark.parametrize(("mongo", "seconds"), [
    ({"serverselectiontimeoutms": 1500}, 1.5),  # pymongo reads names in any case
    ({"host": "mongodb://127.0.0.1:27017/?serverSelectionTimeoutMS=2500"}, 2.5),
])
def test_a_timeout_set_in_the_settings_or_the_uri_wins_over_the_default(mongo, seconds):
    broker = MongoBroker("jobs", mongo=mongo)
    assert broker.client().options.server_selection_timeout == seconds


@pytest.mark.parametrize(("mongo", "says"), [
    ({"host": "127.0.0.1", "servrSelectionTimeoutMS": 100},
     "MongoDB broker: pymongo.MongoClient takes no option 'servrSelectionTimeoutMS' in "
     "Q_CLUSTER['mongo'] — did you mean 'serverSelectionTimeoutMS'? (it takes MongoClient's "
     "keyword arguments; a mongodb:// URI goes in 'host')"),
    ({"hots": "mongodb://127.0.0.1"},
     "MongoDB broker: pymongo.MongoClient takes no option 'hots' in Q_CLUSTER['mongo'] — did "
     "you mean 'host'?"),
    ({"host": "http://127.0.0.1:27017"},
     "MongoDB broker: Q_CLUSTER['mongo'] is not usable: Invalid URI scheme: URI must begin "
     "with 'mongodb://' or 'mongodb+srv://'"),
    ({"host": "mongodb://127.0.0.1:notaport/queues"},
     "MongoDB broker: Q_CLUSTER['mongo'] is not usable: Port "),  # pymongo says the rest
    ({"host": "127.0.0.1", "maxPoolSize": "many"},
     "MongoDB broker: Q_CLUSTER['mongo'] is not usable: "),
])
def test_bad_mongo_settings_are_one_line_naming_the_setting(mongo, says):
    with pytest.raises(ConfigError) as raised:
        MongoBroker("jobs", mongo=mongo)
    message = str(raised.value)
    assert message.startswith(says), message
    assert "\n" not in message and raised.value.key == "mongo"


def test_a_bad_database_name_names_mongo_db():
    with pytest.raises(ConfigError) as raised:
        MongoBroker("jobs", mongo_db="my.queues")
    assert str(raised.value).startswith(
        "MongoDB broker: Q_CLUSTER['mongo_db'] must be a MongoDB database name")
    assert raised.value.key == "mongo_db"


def test_an_unreachable_server_is_a_connection_error_in_one_line():
    port = free_port()  # nothing listens there
    broker = MongoBroker("jobs", config=config(), mongo={
        "host": f"mongodb://127.0.0.1:{port}/", "serverSelectionTimeoutMS": 300})
    for call in (broker.ping, broker.dequeue, lambda: broker.enqueue(b"x")):
        with pytest.raises(BrokerConnectionError) as raised:
            call()
        message = str(raised.value)
        assert "\n" not in message, message
        assert f"failed: cannot reach MongoDB at 127.0.0.1:{port} within 0.3 s " \
               f"(serverSelectionTimeoutMS): 127.0.0.1:{port}: [Errno 111] Connection refused. " \
               f"Is mongod running? Start it with: mongod --bind_ip 127.0.0.1 --port {port}" \
               in message, message
    broker.close()


# --------------------------------------------------------------------------- on the server


def test_the_server_is_asked(server, made):
    broker = made()
    assert broker.ping() is True
    info = broker.info()
    if isinstance(server, MongoServerProcess):
        assert info == f"MongoDB {SERVER_VERSION}"
    assert info.startswith("MongoDB ")


def test_indexes_are_made_on_first_use(server, made):
    broker = made()
    broker.enqueue(b"first")
    broker.set_stat(unique("mongo-stat"), b"value", 60)
    client = pymongo.MongoClient(server.url, serverSelectionTimeoutMS=5000)
    try:
        db = client[DATABASE]
        queue = db[broker.collection].index_information()
        assert queue[ORDER_INDEX]["key"] == [("visible", 1), ("_id", 1)]
        stats = db["qhive_stats"].index_information()[STATS_INDEX]
        assert stats["key"] == [("expires", 1)] and stats["expireAfterSeconds"] == 0
    finally:
        client.close()


def test_a_lease_runs_out_after_retry_and_a_touched_one_later(made):
    retry = 3.0  # the touch comes a third of the way: slack for a slow machine
    broker = made(retry=retry)
    broker.enqueue_many([b"left", b"touched"])
    taken_at = time.time()
    taken = {m.payload: m for m in broker.dequeue(count=2)}
    assert set(taken) == {b"left", b"touched"}
    assert (broker.queue_size(), broker.lock_size()) == (0, 2), "leased: not waiting"
    assert broker.dequeue(timeout=0.3) == [], "a leased message is not handed out again"
    time.sleep(retry / 3)
    touched_at = time.time()
    broker.touch([taken[b"touched"].ack_id])

    came_back = {}
    deadline = time.monotonic() + 3 * retry + 10
    while len(came_back) < 2 and time.monotonic() < deadline:
        for message in broker.dequeue(count=2, timeout=0.5):
            came_back[message.payload] = (message, time.time())
    assert set(came_back) == {b"left", b"touched"}, "both leases ran out in the end"
    left, left_at = came_back[b"left"]
    touched, again_at = came_back[b"touched"]
    # Lease ends are stored to the millisecond: allow that much, nothing more.
    assert left_at >= taken_at + retry - 0.01, "not before its lease ran out"
    assert again_at >= touched_at + retry - 0.01, "touch() moved its lease on"
    assert (left.deliveries, touched.deliveries) == (2, 2)
    broker.acknowledge_many([left.ack_id, touched.ack_id])
    assert (broker.queue_size(), broker.lock_size()) == (0, 0)


def test_a_stale_lease_neither_releases_the_new_one_nor_keeps_it_from_acknowledging(made):
    first = made(retry=1)
    second = made(first.queue, retry=30)
    first.enqueue(b"slow")
    old = first.dequeue()[0]
    new = None
    deadline = time.monotonic() + 15
    while new is None and time.monotonic() < deadline:  # once the first lease ran out
        new = next(iter(second.dequeue(timeout=0.5)), None)
    assert new is not None and new.payload == b"slow" and new.deliveries == 2
    assert new.ack_id != old.ack_id, "each lease has its own token"

    first.release(old.ack_id)  # the old lease: the message stays with its new holder
    first.touch([old.ack_id])
    assert (second.queue_size(), second.lock_size()) == (0, 1)
    assert second.dequeue(timeout=0.3) == []

    # It was processed, whoever did it: acknowledging the old receipt removes it.
    first.acknowledge(old.ack_id)
    assert (second.queue_size(), second.lock_size()) == (0, 0)
    second.acknowledge(new.ack_id)  # harmless


class TakeOneFirst(monitoring.CommandListener):
    """Just before the bulk claim's ``update`` leaves for the server, another broker
    takes one of the messages the claim has seen: a race, made to happen."""

    def __init__(self, other: MongoBroker) -> None:
        self.other, self.taken = other, None

    def started(self, event):
        if event.command_name == "update" and self.taken is None:
            self.taken = self.other.dequeue()  # one message: a findAndModify, no update

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def test_a_bulk_claim_that_loses_a_race_returns_what_it_won(server, made):
    other = made()
    listener = TakeOneFirst(other)
    broker = MongoBroker(other.queue, config=config(retry=30), mongo_db=DATABASE,
                         mongo={"host": server.url, "event_listeners": [listener]})
    try:
        broker.enqueue_many([b"1", b"2", b"3", b"4"])
        won = broker.dequeue(count=4)
        assert [m.payload for m in listener.taken] == [b"1"], "the other broker won the first"
        assert [(m.payload, m.deliveries) for m in won] == [(b"2", 1), (b"3", 1), (b"4", 1)]
        assert (broker.queue_size(), broker.lock_size()) == (0, 4)
        broker.acknowledge_many([m.ack_id for m in [*won, *listener.taken]])
        assert broker.lock_size() == 0
    finally:
        broker.close()


def test_a_released_message_goes_back_to_its_place(made):
    broker = made(retry=30)
    broker.enqueue_many([b"1", b"2", b"3"])
    first = broker.dequeue()[0]
    assert first.payload == b"1"
    broker.release(first.ack_id)
    order = [m.payload for m in broker.dequeue(count=3)]
    assert order == [b"1", b"2", b"3"]


def test_a_delay_is_a_later_visible_and_not_a_lease(made, server):
    broker = made(retry=30)
    broker.enqueue(b"plain")
    broker.enqueue(b"plain too", delay=0)
    before = time.time()
    delayed_id = broker.enqueue(b"later", delay=60)
    assert (broker.queue_size(), broker.lock_size()) == (2, 0), "delayed: neither"
    client = pymongo.MongoClient(server.url)
    try:
        documents = {d["payload"]: d for d in
                     client[DATABASE][QUEUE_PREFIX + broker.queue].find({})}
    finally:
        client.close()
    assert set(documents[b"plain"]) == {"_id", "payload", "visible", "deliveries"}
    due = documents[b"later"]["visible"].replace(tzinfo=dt.UTC).timestamp()
    assert before + 60 <= due + 0.001 <= time.time() + 60.01
    assert str(documents[b"later"]["_id"]) == delayed_id
    taken = broker.dequeue(count=5)
    assert [m.payload for m in taken] == [b"plain", b"plain too"]
    broker.acknowledge_many([m.ack_id for m in taken])
    assert broker.dequeue(timeout=0.3) == []


def test_release_with_a_delay_ends_the_lease(made):
    broker = made(retry=30)
    broker.enqueue(b"again")
    taken = broker.dequeue()[0]
    broker.release(taken.ack_id, delay=30)
    assert (broker.queue_size(), broker.lock_size()) == (0, 0)
    broker.touch([taken.ack_id])  # no lease any more: nothing moves
    broker.release(taken.ack_id)  # the same: it stays delayed
    assert broker.dequeue(timeout=0.3) == []


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (float("inf"), ValueError),
                                        ("1", TypeError), (None, TypeError)])
def test_a_bad_delay_names_the_broker(made, bad, error):
    broker = made()
    with pytest.raises(error, match="MongoDB broker: delay must be"):
        broker.enqueue(b"x", delay=bad)
    broker.enqueue(b"y")
    taken = broker.dequeue()[0]
    with pytest.raises(error, match="MongoDB broker: delay must be"):
        broker.release(taken.ack_id, delay=bad)
    assert broker.queue_size() == 0


# --------------------------------------------------------------------------- restarts


def test_the_test_server_keeps_its_data_across_a_restart_and_the_broker_reconnects(
        tmp_path, mongo_test_server):
    if not getattr(mongo_test_server, "restartable", False):
        pytest.skip("$QHIVE_TEST_MONGO_URL names a server this test cannot restart")
    server = MongoServerProcess(tmp_path).start()
    broker = MongoBroker("restart", config=config(retry=60), mongo_db=DATABASE, mongo={
        "host": server.url, "serverSelectionTimeoutMS": 500})
    try:
        broker.enqueue_many([b"a", b"b", b"c"])
        leased = broker.dequeue()[0]
        server.stop()
        with pytest.raises(BrokerConnectionError) as raised:
            broker.queue_size()
        assert "\n" not in str(raised.value)
        server.start()
        deadline = time.monotonic() + 30
        while True:  # pymongo finds the server again by itself
            try:
                sizes = (broker.queue_size(), broker.lock_size())
                break
            except BrokerConnectionError:
                assert time.monotonic() < deadline, "the broker did not reconnect"
        assert sizes == (2, 1), "waiting and leased messages survived the restart"
        assert [m.payload for m in broker.dequeue(count=5)] == [b"b", b"c"]
        broker.acknowledge(leased.ack_id)
    finally:
        broker.close()
        server.stop()

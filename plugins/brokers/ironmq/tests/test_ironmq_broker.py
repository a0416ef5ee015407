"""What the IronMQ broker promises beyond the contract, with the real ``iron-mq`` client
against the emulator of ``qhive_testkit`` — and that the emulator keeps the service's
rules (reservations that run out, stale reservation ids refused, ...), since every
other test trusts it.

Emulators here run in a thread of the test process; a test that needs the service's
own 30 s minimum reservation uses one with that minimum and moves its clock with
:meth:`IronMQEmulator.advance` instead of sleeping.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import uuid

import pytest
import requests
from qhive.config import Config
from qhive.errors import BrokerConnectionError, BrokerError, ConfigError, SetupError
from qhive_broker_ironmq.broker import BODY_PREFIX, IronMQBroker
from qhive_broker_ironmq.client import QueueNameRefused, TokenRefused
from qhive_broker_ironmq.options import reservation_timeout
from qhive_testkit.ironmq_emulator import PROJECT_ID, TOKEN, IronMQEmulator
from qhive_testkit.services import free_port

#: Generous bound for calls that take milliseconds; it catches hangs, not slowness.
WITHIN = 30.0


def unique(prefix: str = "iron-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def service():
    """An emulator with the service's own limits (reservations from 30 s, 256 KiB)."""
    with IronMQEmulator() as emulator:
        yield emulator


@pytest.fixture
def make(service):
    """``make(queue=None, iron_mq=None, **Q_CLUSTER) -> IronMQBroker`` on ``service``;
    its queues are deleted afterwards."""
    made = []

    def factory(queue=None, *, iron_mq=None, **settings):
        config = Config.from_dict({"retry": 30, **settings})
        broker = IronMQBroker(queue or unique(), config=config,
                              iron_mq=service.options() if iron_mq is None else iron_mq)
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        with contextlib.suppress(BrokerError):  # a broker a test pointed somewhere else
            broker.delete_queue()
        broker.close()


@pytest.fixture
def no_iron_config(tmp_path, monkeypatch):
    """No credentials from the environment or iron.json files: only what a test gives."""
    for name in list(os.environ):
        if name.startswith(("IRON_", "IRON_MQ_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # ~/.iron.json
    monkeypatch.chdir(tmp_path)  # ./iron.json
    return tmp_path


def api(service, method, path, body=None, token=TOKEN):
    """One request to the emulator as any HTTP client would send it: (status, json)."""
    response = requests.request(
        method, f"{service.url}/3/projects/{PROJECT_ID}/{path}",
        data=None if body is None else json.dumps(body),
        headers={"Authorization": f"OAuth {token}", "Content-Type": "application/json"},
        timeout=WITHIN)
    return response.status_code, response.json()


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


# --------------------------------------------------------------------------- settings


def test_selected_by_django_q2_s_key_with_its_options(service):
    from qhive.pipeline import Pipeline

    config = Config.from_dict({"name": unique(), "iron_mq": service.options()})
    broker = Pipeline(config).broker
    try:
        assert isinstance(broker, IronMQBroker) and broker.queue == config.name
        assert config.broker == "ironmq" and config.broker_selected_by == "iron_mq"
        assert broker.ping() is True
    finally:
        broker.close()


def test_the_entry_point_names_the_class_and_importing_imports_no_client():
    from qhive.drivers import load_driver

    assert load_driver("broker", "ironmq") is IronMQBroker
    code = ("import sys, qhive_broker_ironmq; "
            "print(sorted(m for m in ('iron_mq', 'iron_core', 'requests') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=WITHIN)
    assert out.stdout.strip() == "[]", "importing the package imported the client"


def test_token_project_id_host_port_and_protocol(make, service):
    broker = make(iron_mq={"token": TOKEN, "project_id": PROJECT_ID, "host": "127.0.0.1",
                           "port": service.port, "protocol": "http"})
    assert broker.info() == f"IronMQ at http://127.0.0.1:{service.port} (project {PROJECT_ID})"
    broker.enqueue(b"through the given host")
    assert [m["body"] for m in service.messages(broker.queue)] == [
        BODY_PREFIX + "dGhyb3VnaCB0aGUgZ2l2ZW4gaG9zdA=="]


def test_port_as_a_string_and_api_version_3(make, service):
    broker = make(iron_mq=service.options(port=str(service.port), api_version="3"))
    assert broker.ping() is True


def test_cloud_gives_protocol_host_and_port(make, service):
    broker = make(iron_mq={"token": TOKEN, "project_id": PROJECT_ID, "cloud": service.url})
    assert broker.address == service.url
    assert broker.ping() is True


def test_config_file(make, service, no_iron_config):
    path = no_iron_config / "elsewhere.json"
    path.write_text(json.dumps({"token": TOKEN, "project_id": PROJECT_ID,
                                "iron_mq": {"host": "127.0.0.1", "port": service.port,
                                            "protocol": "http"}}))
    broker = make(iron_mq={"config_file": str(path)})
    assert broker.ping() is True


def test_credentials_from_the_environment(make, service, no_iron_config, monkeypatch):
    monkeypatch.setenv("IRON_TOKEN", TOKEN)
    monkeypatch.setenv("IRON_MQ_PROJECT_ID", PROJECT_ID)
    broker = make(iron_mq={"host": "127.0.0.1", "port": service.port, "protocol": "http"})
    assert broker.ping() is True
    copy = pickle.loads(pickle.dumps(broker))  # built from what was resolved, not the env
    monkeypatch.delenv("IRON_TOKEN")
    assert copy.ping() is True
    copy.close()


def test_credentials_from_iron_json(make, service, no_iron_config):
    (no_iron_config / "iron.json").write_text(json.dumps(
        {"token": TOKEN, "project_id": PROJECT_ID, "host": "127.0.0.1",
         "port": service.port, "protocol": "http"}))
    broker = make(iron_mq={})
    assert broker.ping() is True


def test_options_win_over_the_environment(make, service, no_iron_config, monkeypatch):
    monkeypatch.setenv("IRON_TOKEN", "a-token-of-another-project")
    broker = make(iron_mq=service.options())
    assert broker.ping() is True


def test_request_timeout_against_a_server_that_never_answers(make):
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        broker = make(iron_mq={"token": TOKEN, "project_id": PROJECT_ID, "host": "127.0.0.1",
                               "port": silent.getsockname()[1], "protocol": "http",
                               "request_timeout": 0.3})
        with pytest.raises(BrokerConnectionError) as caught:
            broker.dequeue(timeout=1.0)
    message = one_line(caught.value)
    assert "did not answer within 0.3 s" in message
    assert "Q_CLUSTER['iron_mq']['request_timeout']" in message


def test_min_reservation_timeout_and_the_retry_it_gives(make, service, caplog):
    with caplog.at_level(logging.WARNING, logger="qhive.broker.ironmq"):
        broker = make(retry=7.5)
    assert broker.reservation_timeout == 30
    assert "Q_CLUSTER['retry'] is 7.5 s, but IronMQ reserves a message for at least 30 s" \
           in caplog.text
    broker.enqueue(b"x")
    assert len(broker.dequeue(timeout=1)) == 1
    service.advance(29)
    assert broker.dequeue() == [], "reserved for 30 s, not 7.5"
    service.advance(2)
    assert [m.payload for m in broker.dequeue()] == [b"x"]

    # A floor below the service's own: the service refuses the reservation.
    short = make(retry=2, iron_mq=service.options(min_reservation_timeout=1))
    assert short.reservation_timeout == 2
    short.enqueue(b"y")
    with pytest.raises(BrokerError, match=r"400 timeout must be a whole number from 30"):
        short.dequeue()


def test_reservation_timeout_rounds_up_and_stays_in_range():
    assert reservation_timeout(60) == (60, None)
    assert reservation_timeout(45.2) == (46, None)  # whole seconds, never shorter
    assert reservation_timeout(1, floor=1) == (1, None)
    seconds, warning = reservation_timeout(10)
    assert seconds == 30 and "at least 30 s" in warning and "comes back after 30 s" in warning
    seconds, warning = reservation_timeout(100_000)
    assert seconds == 86_400 and "at most 86400 s (24 h)" in warning


@pytest.mark.parametrize(("options", "key", "message"), [
    ({"tokn": "x"}, "iron_mq.tokn", "takes no option 'tokn' in Q_CLUSTER['iron_mq'] — did you "
                                    "mean 'token'?"),
    ({"project": "x"}, "iron_mq.project", "did you mean 'project_id'?"),
    ({"request_timout": 5}, "iron_mq.request_timout", "did you mean 'request_timeout'?"),
    ({"zzz": 1}, "iron_mq.zzz", "it takes: token, project_id, host"),
    ("https://mq", "iron_mq", "must be a dict of iron_mq.IronMQ options"),
    ({"port": "eighty"}, "iron_mq.port", "must be a port number"),
    ({"port": 70000}, "iron_mq.port", "must be a port number"),
    ({"protocol": "ftp"}, "iron_mq.protocol", "must be 'https' or 'http'"),
    ({"host": ""}, "iron_mq.host", "must be a non-empty string"),
    ({"token": 12}, "iron_mq.token", "must be a non-empty string"),
    ({"api_version": 2}, "iron_mq.api_version", "speaks IronMQ's API v3"),
    ({"config_file": "/no/such/iron.json"}, "iron_mq.config_file", "which is not a file"),
    ({"keystone": {"server": "http://k"}}, "iron_mq.keystone",
     "missing: tenant, username, password"),
    ({"request_timeout": 0}, "iron_mq.request_timeout", "seconds > 0"),
    ({"min_reservation_timeout": 0.5}, "iron_mq.min_reservation_timeout", "whole number"),
])
def test_bad_options_are_one_line_config_errors(options, key, message):
    with pytest.raises(ConfigError) as caught:
        IronMQBroker("q", iron_mq=options)
    text = one_line(caught.value)
    assert message in text and text.startswith("IronMQ broker: ")
    assert caught.value.key == key


def test_keystone_is_passed_on_without_a_request(service, no_iron_config):
    broker = IronMQBroker(unique(), iron_mq={
        "project_id": PROJECT_ID, "host": "127.0.0.1", "port": service.port,
        "protocol": "http", "keystone": {"server": "http://127.0.0.1:9/v2.0/",
                                         "tenant": "t", "username": "u", "password": "pw"}})
    assert service.queue_names() == [] and service.state.requests == 0  # asks on use
    assert "pw" not in repr(broker.options) and "pw" not in repr(broker)
    broker.close()


@pytest.mark.parametrize(("options", "key", "says"), [
    ({"project_id": PROJECT_ID}, "iron_mq.token",
     "IronMQ broker: no token: set Q_CLUSTER['iron_mq']['token'] (or the IRON_TOKEN / "
     "IRON_MQ_TOKEN environment variable"),
    ({"token": TOKEN}, "iron_mq.project_id",
     "IronMQ broker: no project id: set Q_CLUSTER['iron_mq']['project_id']"),
    ({}, "iron_mq.token", "IronMQ broker: no token and no project id: set "
                          "Q_CLUSTER['iron_mq']['token']"),
])
def test_missing_credentials_name_the_key(no_iron_config, options, key, says):
    with pytest.raises(ConfigError) as caught:
        IronMQBroker("q", iron_mq=options)
    assert one_line(caught.value).startswith(says)
    assert caught.value.key == key


def test_an_iron_json_that_is_not_json(no_iron_config):
    (no_iron_config / "iron.json").write_text("{token: nope")
    with pytest.raises(ConfigError, match=r"an IronMQ config file is not valid JSON"):
        IronMQBroker("q", iron_mq={"token": TOKEN, "project_id": PROJECT_ID})


def test_the_token_never_shows(make):
    broker = make()
    assert TOKEN not in repr(broker) and TOKEN not in repr(broker.options)
    assert TOKEN not in broker.info()


# --------------------------------------------------------------------------- errors


def test_a_bad_token_is_one_line_naming_the_key(make, service):
    broker = make(iron_mq=service.options(token="not-the-token"))
    for call in (broker.ping, broker.queue_size, lambda: broker.enqueue(b"x")):
        with pytest.raises(TokenRefused) as caught:
            call()
        message = one_line(caught.value)
        assert "refused the token (401 Unauthorized)" in message
        assert "check Q_CLUSTER['iron_mq']['token']" in message
        assert "not-the-token" not in message
    # A cluster does not start on it (SetupError); while running, it backs off.
    assert isinstance(caught.value, SetupError) and isinstance(caught.value, BrokerError)


def test_another_project_names_project_id(make, service):
    broker = make(iron_mq=service.options(project_id="000000000000000000000000"))
    with pytest.raises(BrokerConnectionError) as caught:
        broker.ping()
    assert "has no project 000000000000000000000000" in one_line(caught.value)
    assert "check Q_CLUSTER['iron_mq']['project_id']" in str(caught.value)


def test_an_unreachable_service_is_an_outage_then_the_broker_works_again(make):
    port = free_port()
    broker = make(iron_mq={"token": TOKEN, "project_id": PROJECT_ID, "host": "127.0.0.1",
                           "port": port, "protocol": "http"})
    for call in (broker.ping, lambda: broker.dequeue(timeout=1), lambda: broker.enqueue(b"x"),
                 lambda: broker.acknowledge("1:abc")):
        with pytest.raises(BrokerConnectionError) as caught:  # the cluster backs off, retries
            call()
        message = one_line(caught.value)
        assert f"cannot reach IronMQ at http://127.0.0.1:{port} (" in message
        assert "Connection refused" in message
        assert "check Q_CLUSTER['iron_mq']['host']" in message
    with IronMQEmulator(port=port):  # the service is back: the same instance carries on
        broker.enqueue(b"after the outage")
        assert [m.payload for m in broker.dequeue(timeout=1)] == [b"after the outage"]


def test_https_against_a_plain_http_server_is_an_outage(make, service):
    broker = make(iron_mq=service.options(protocol="https"))
    with pytest.raises(BrokerConnectionError, match=r"cannot reach IronMQ at https://"):
        broker.ping()


def test_a_queue_name_ironmq_refuses(make):
    broker = make("no/slashes")
    with pytest.raises(QueueNameRefused) as caught:
        broker.enqueue(b"x")
    message = one_line(caught.value)
    assert "refused the queue name 'no/slashes' (400 Invalid queue name)" in message
    assert "choose a Q_CLUSTER['name']" in message
    with pytest.raises(QueueNameRefused):
        broker.ping()  # SetupError: a cluster with this name does not start
    assert isinstance(caught.value, SetupError)


def test_a_name_with_spaces_and_dots_arrives_whole(make, service):
    broker = make("my queue.v2")
    broker.enqueue(b"x")
    assert "my queue.v2" in service.queue_names()


def test_a_message_over_the_service_s_limit(make):
    broker = make()
    broker.enqueue(b"\0" * 190_000)  # 253 KB once base64-encoded: fits in 256 KiB
    with pytest.raises(BrokerError) as caught:
        broker.enqueue(b"\0" * 200_000)
    message = one_line(caught.value)
    assert "refused a message as too large (413 Message too big: 266675 bytes" in message
    assert "pass large arguments by reference" in message


def test_a_path_prefix_is_used(make, service):
    broker = make(iron_mq=service.options(path_prefix="/mq"))
    assert broker.address == f"{service.url}/mq"
    with pytest.raises(BrokerError, match=r"IronMQ at .*/mq answered 404 Not found"):
        broker.ping()  # the emulator serves no prefix: the request went to /mq/3/...


# --------------------------------------------------------------------------- behaviour


def test_bodies_are_text_and_foreign_ones_arrive_as_their_bytes(make, service):
    broker = make()
    broker.enqueue(b"\x00\xff binary")
    api(service, "POST", f"queues/{broker.queue}/messages",
        {"messages": [{"body": "posted by someone else"}]})
    stored = [m["body"] for m in service.messages(broker.queue)]
    assert stored[0].startswith(BODY_PREFIX) and stored[0].isascii()
    got = [m.payload for m in broker.dequeue(count=5, timeout=1)]
    assert got == [b"\x00\xff binary", b"posted by someone else"]


def test_bulk_reserve_is_capped_at_100(make, service):
    broker = make()
    broker.enqueue_many(b"%d" % i for i in range(150))  # two posts: 100 + 50
    assert len(broker.dequeue(count=500, timeout=1)) == 100
    assert len(broker.dequeue(count=500, timeout=1)) == 50


def test_queue_size_and_lock_size(make):
    broker = make()
    assert (broker.queue_size(), broker.lock_size()) == (0, 0)  # no queue yet
    broker.enqueue_many([b"m"] * 60)
    broker.dequeue(count=10, timeout=1)
    assert (broker.queue_size(), broker.lock_size()) == (50, 10)
    broker.enqueue_many([b"m"] * 60)
    # 110 waiting: more than a peek shows; IronMQ's size counts the reserved ones too.
    assert (broker.queue_size(), broker.lock_size()) == (120, None)


def test_touch_then_acknowledge_from_another_copy(make, service):
    """The cluster touches and acknowledges from one thread's broker and releases from
    another's: the new reservation id a touch got is known to every copy."""
    broker = make()
    broker.enqueue_many([b"acked", b"released"])
    taken = {m.payload: m for m in broker.dequeue(count=2, timeout=1)}
    broker.touch([m.ack_id for m in taken.values()])
    monitor, sentinel = pickle.loads(pickle.dumps(broker)), pickle.loads(pickle.dumps(broker))
    monitor.acknowledge(taken[b"acked"].ack_id)
    sentinel.release(taken[b"released"].ack_id)
    assert [(m["body"], m["reserved"]) for m in service.messages(broker.queue)] == [
        (BODY_PREFIX + "cmVsZWFzZWQ=", False)]
    monitor.close()
    sentinel.close()


def test_acknowledged_after_its_reservation_ran_out(make, service):
    broker = make()
    broker.enqueue(b"waiting again")
    [late] = broker.dequeue(timeout=1)
    service.advance(31)  # its reservation ran out: it waits again, not taken by anyone
    broker.acknowledge(late.ack_id)
    assert service.messages(broker.queue) == [], "a finished task must not run again"

    slow, fast = broker, make(broker.queue)  # two consumers of one queue
    slow.enqueue(b"taken by another")
    [first] = slow.dequeue(timeout=1)
    service.advance(31)
    [second] = fast.dequeue(timeout=1)  # the other consumer has it now
    slow.acknowledge(first.ack_id)  # too late: left to the other consumer
    assert [m["reserved"] for m in service.messages(broker.queue)] == [True]
    fast.acknowledge(second.ack_id)
    assert service.messages(broker.queue) == []


def test_an_idle_dequeue_long_polls(make, service):
    """IronMQ's ``wait``: an idle dequeue is one request that waits, not a poll loop."""
    broker = make()
    broker.enqueue(b"x")
    broker.dequeue(timeout=1)
    before = service.state.requests
    assert broker.dequeue(timeout=2.5) == []  # waits 2 s on the server; 0.5 s is not waited
    assert service.state.requests - before == 1


def test_dequeue_creates_a_missing_queue_and_waits_on_it(make, service):
    broker = make()
    assert broker.queue not in service.queue_names()
    assert broker.dequeue(timeout=1) == []
    assert broker.queue in service.queue_names()  # later dequeues long-poll on it


def test_a_delayed_post_is_held_for_its_whole_seconds(make, service):
    broker = make()
    broker.enqueue(b"later", delay=1.2)  # 2 s: IronMQ takes whole seconds, rounded up
    broker.enqueue(b"now", delay=0)
    assert [m.payload for m in broker.dequeue(count=5, timeout=0)] == [b"now"]
    assert broker.queue_size() == 0, "a delayed message is not waiting"
    service.advance(1.9)
    assert broker.dequeue(timeout=0) == []
    service.advance(0.2)
    [due] = broker.dequeue(timeout=0)
    assert (due.payload, due.deliveries) == (b"later", 1)
    broker.acknowledge(due.ack_id)


def test_release_with_a_delay_counts_the_reservation(make, service):
    broker = make()
    broker.enqueue_many([b"retry me", b"next"])
    [taken] = broker.dequeue(timeout=0)
    broker.release(taken.ack_id, delay=5)
    [other] = broker.dequeue(timeout=0)
    assert other.payload == b"next", "released with a delay: not at the front"
    service.advance(4.9)
    assert broker.dequeue(timeout=0) == []
    service.advance(0.2)
    [again] = broker.dequeue(timeout=0)
    assert (again.payload, again.deliveries) == (b"retry me", 2)
    broker.acknowledge_many([other.ack_id, again.ack_id])
    broker.release(again.ack_id, delay=5)  # finished: nothing to give back, no error
    assert service.messages(broker.queue) == []


def test_a_delay_over_7_days_or_not_a_number_is_refused(make, service):
    broker = make()
    with pytest.raises(ValueError) as caught:
        broker.enqueue(b"too late", delay=604_801)
    text = one_line(caught.value)
    assert "IronMQ broker" in text and "604800 s (7 days)" in text
    broker.enqueue(b"at the limit", delay=604_800)
    for bad, error in [(-1, ValueError), (float("nan"), ValueError), ("5", TypeError)]:
        with pytest.raises(error, match="IronMQ broker: delay must be"):
            broker.enqueue(b"x", delay=bad)
        with pytest.raises(error, match="IronMQ broker: delay must be"):
            broker.release("1:2", delay=bad)
    assert len(service.messages(broker.queue)) == 1
    # IronMQ's size counts delayed messages: lock_size() counts them with those in flight
    assert (broker.queue_size(), broker.lock_size()) == (0, 1)


# --------------------------------------------------------------------------- the emulator


def reserve(service, queue, **body):
    status, reply = api(service, "POST", f"queues/{queue}/reservations", body)
    assert status == 200, reply
    return reply["messages"]


def post(service, queue, *bodies):
    status, reply = api(service, "POST", f"queues/{queue}/messages",
                        {"messages": [{"body": b} for b in bodies]})
    assert status == 201, reply
    return reply["ids"]


def test_emulator_a_reservation_runs_out_a_touched_one_later_a_deleted_one_never(service):
    queue = unique()
    post(service, queue, "expires", "touched", "deleted")
    taken = {m["body"]: m for m in reserve(service, queue, n=3, timeout=30)}
    assert {m["reserved_count"] for m in taken.values()} == {1}
    assert api(service, "DELETE", f"queues/{queue}/messages/{taken['deleted']['id']}",
               {"reservation_id": taken["deleted"]["reservation_id"]}) == (
        200, {"msg": "Deleted"})
    service.advance(20)
    status, touched = api(service, "POST", f"queues/{queue}/messages/{taken['touched']['id']}"
                          "/touch", {"reservation_id": taken["touched"]["reservation_id"],
                                     "timeout": 30})
    assert status == 200 and touched["msg"] == "Touched"
    assert touched["reservation_id"] != taken["touched"]["reservation_id"]
    assert reserve(service, queue, n=3) == []
    service.advance(11)  # 31 s after the reservation, 11 s after the touch
    back = reserve(service, queue, n=3, timeout=30)
    assert [(m["body"], m["reserved_count"]) for m in back] == [("expires", 2)]
    service.advance(20)  # 31 s after the touch
    assert [m["body"] for m in reserve(service, queue, n=3, timeout=30)] == ["touched"]
    service.advance(120)
    assert sorted(m["body"] for m in reserve(service, queue, n=3)) == ["expires", "touched"]


def test_emulator_refuses_a_stale_reservation_id(service):
    queue = unique()
    [message_id] = post(service, queue, "one")
    [first] = reserve(service, queue, timeout=30)
    path = f"queues/{queue}/messages/{message_id}"
    service.advance(31)
    [second] = reserve(service, queue, timeout=30)  # reserved again: a new reservation id
    stale = {"reservation_id": first["reservation_id"]}
    refused = (403, {"msg": "Reservation timed out"})
    assert api(service, "DELETE", path, stale) == refused
    assert api(service, "POST", f"{path}/touch", stale) == refused
    assert api(service, "POST", f"{path}/release", stale) == refused
    assert api(service, "DELETE", path, {}) == refused  # reserved: an id is needed
    status, touched = api(service, "POST", f"{path}/touch",
                          {"reservation_id": second["reservation_id"]})
    assert status == 200
    # A touch replaces the reservation id too.
    assert api(service, "DELETE", path, {"reservation_id": second["reservation_id"]}) == refused
    assert api(service, "DELETE", path, {"reservation_id": touched["reservation_id"]}) == (
        200, {"msg": "Deleted"})
    assert api(service, "DELETE", path, {"reservation_id": touched["reservation_id"]}) == (
        404, {"msg": "Message not found"})


def test_emulator_batch_delete_is_all_or_none(service):
    queue = unique()
    post(service, queue, "a", "b")
    a, b = reserve(service, queue, n=2, timeout=30)
    items = [{"id": a["id"], "reservation_id": a["reservation_id"]},
             {"id": b["id"], "reservation_id": "stale"}]
    assert api(service, "DELETE", f"queues/{queue}/messages", {"ids": items})[0] == 403
    assert len(service.messages(queue)) == 2
    items[1]["reservation_id"] = b["reservation_id"]
    assert api(service, "DELETE", f"queues/{queue}/messages", {"ids": items}) == (
        200, {"msg": "Deleted"})
    assert service.messages(queue) == []


def test_emulator_sizes_peek_release_and_clear(service):
    queue = unique()
    post(service, queue, "1", "2", "3")
    [one] = reserve(service, queue, timeout=30)
    _, info = api(service, "GET", f"queues/{queue}")
    assert (info["queue"]["size"], info["queue"]["total_messages"]) == (3, 3), \
        "size counts reserved messages, as the service's does"
    _, peeked = api(service, "GET", f"queues/{queue}/messages?n=100")
    assert [m["body"] for m in peeked["messages"]] == ["2", "3"], \
        "a peek shows what a reservation would take"
    assert api(service, "POST", f"queues/{queue}/messages/{one['id']}/release",
               {"reservation_id": one["reservation_id"]}) == (200, {"msg": "Released"})
    # Released (and timed-out) messages go to the front of the queue.
    assert [(m["body"], m["reserved_count"]) for m in reserve(service, queue, n=3)] == [
        ("1", 2), ("2", 1), ("3", 1)]
    assert api(service, "DELETE", f"queues/{queue}/messages", {}) == (200, {"msg": "Cleared"})
    assert api(service, "GET", f"queues/{queue}")[1]["queue"]["size"] == 0
    assert api(service, "DELETE", f"queues/{queue}") == (200, {"msg": "Deleted"})
    assert api(service, "GET", f"queues/{queue}") == (404, {"msg": "Queue not found"})


def test_emulator_a_long_poll_returns_when_a_message_arrives(service):
    import threading

    queue = unique()
    post(service, queue, "first")
    reserve(service, queue, timeout=30)
    timer = threading.Timer(0.3, post, (service, queue, "arrived"))
    timer.start()
    try:
        got = reserve(service, queue, wait=30, timeout=30)  # would wait 30 s for nothing
    finally:
        timer.join(WITHIN)
    assert [m["body"] for m in got] == ["arrived"]


@pytest.mark.parametrize(("method", "path", "body", "expected"), [
    ("POST", "reservations", {"timeout": 29}, (400, "timeout must be a whole number from 30")),
    ("POST", "reservations", {"timeout": 30.5}, (400, "timeout must be a whole number")),
    ("POST", "reservations", {"n": 101}, (400, "n must be a whole number from 1 to 100")),
    ("POST", "reservations", {"wait": 31}, (400, "wait must be a whole number from 0 to 30")),
    ("POST", "messages", {"messages": [{"body": "x"}] * 101}, (400, "1 to 100 messages")),
    ("POST", "messages", {"messages": [{"body": ""}]}, (400, "non-empty string")),
    ("POST", "messages", {"messages": [{"body": "x" * (256 * 1024 + 1)}]},
     (413, "Message too big")),
])
def test_emulator_keeps_the_service_s_limits(service, method, path, body, expected):
    queue = unique()
    post(service, queue, "so that the queue exists")
    status, reply = api(service, method, f"queues/{queue}/{path}", body)
    assert status == expected[0] and expected[1] in reply["msg"], (status, reply)


def test_emulator_checks_the_token_the_project_and_the_queue(service):
    assert api(service, "GET", "queues/q", token="wrong") == (401, {"msg": "Unauthorized"})
    assert api(service, "POST", "queues/missing/reservations", {}) == (
        404, {"msg": "Queue not found"})
    assert api(service, "GET", "queues/bad%2Fname") == (400, {"msg": "Invalid queue name"})
    response = requests.get(f"{service.url}/3/projects/other/queues/q", timeout=WITHIN,
                            headers={"Authorization": f"OAuth {TOKEN}"})
    assert (response.status_code, response.json()) == (404, {"msg": "Project not found"})


@pytest.mark.parametrize(("method", "path"), [("DELETE", "messages"),
                                             ("POST", "reservations")])
def test_emulator_drops_a_request_whose_body_never_came(service, method, path):
    """A client killed between the headers and the body (urllib3 sends them apart):
    read as ``{}``, the batch delete would clear the queue, the reservation would last
    the default 60 s. A server drops such a request."""
    queue = unique()
    post(service, queue, "a", "b")
    head = (f"{method} /3/projects/{PROJECT_ID}/queues/{queue}/{path} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: OAuth {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: 60\r\n\r\n{{\"ids\": [")
    with socket.create_connection((service.host, service.port), timeout=WITHIN) as sock:
        sock.sendall(head.encode())
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b"", "no answer"
    assert [(m["body"], m["reserved"]) for m in service.messages(queue)] == [
        ("a", False), ("b", False)]


def test_emulator_runs_as_a_process(ironmq_emulator_process):
    broker = IronMQBroker(unique(), iron_mq=ironmq_emulator_process.options())
    try:
        broker.enqueue(b"to the process")
        assert [m.payload for m in broker.dequeue(timeout=1)] == [b"to the process"]
    finally:
        broker.delete_queue()
        broker.close()

"""What the Disque broker promises beyond the contract, on real ``disque-server`` processes.

Tests that share a server use ``disque_server`` (one per session) and queues of their own;
tests that stop, kill or freeze a node, join two nodes into one Disque cluster or need a
password start servers of their own (``disque_servers``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pickle
import subprocess
import sys
import threading
import time
import uuid

import pytest
import qhive_testkit.broker
from qhive.config import Config
from qhive.errors import BrokerConnectionError, BrokerError, ConfigError
from qhive_broker_disque.broker import DisqueBroker
from qhive_broker_disque.options import DEFAULT_TTL
from qhive_testkit.disque_server import free_port_pair

#: Generous bounds for things that take milliseconds; they catch hangs, not slowness.
WITHIN = 30.0


def unique(prefix: str = "disque-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make():
    """``make(*servers_or_addresses, queue=None, **settings) -> DisqueBroker``; the queues
    are purged and the brokers closed afterwards."""
    made = []

    def factory(*nodes, queue=None, disque_auth=None, disque_fastack=False, replicate=None,
                ttl=None, **settings):
        config = Config.from_dict({"retry": 30, **settings})
        addresses = [getattr(n, "address", n) for n in nodes]
        broker = DisqueBroker(queue or unique(), config=config, disque_nodes=addresses,
                              disque_auth=disque_auth, disque_fastack=disque_fastack,
                              replicate=replicate, ttl=ttl)
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        with contextlib.suppress(BrokerError):  # its own servers are gone already
            broker.delete_queue()
        broker.close()


#: ``take(broker, n)``: dequeue until ``n`` messages came or ``within`` seconds passed.
take = functools.partial(qhive_testkit.broker.take, within=WITHIN, count=10)


def finish_within(seconds, func, *args):
    """Run ``func(*args)`` in a thread; what it returned or raised. Fails on a hang."""
    outcome = {}

    def run():
        try:
            outcome["value"] = func(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{getattr(func, '__name__', func)} still running after {seconds:.0f} s",
                    pytrace=False)
    return outcome


def show(server, job_id):
    """Disque's own view of a job (``SHOW``), as a dict."""
    client = server.client()
    try:
        reply = client.execute_command("SHOW", job_id)
    finally:
        client.close()
    if reply is None:
        return None
    return {k.decode(): v for k, v in zip(reply[::2], reply[1::2], strict=True)}


def dead_address():
    return f"127.0.0.1:{free_port_pair()}"  # nothing listens there


# --------------------------------------------------------------------------- settings


def test_selected_by_django_q_keys(disque_server):
    from qhive.pipeline import Pipeline

    config = Config.from_dict({"name": unique(), "disque_nodes": [disque_server.address],
                               "disque_fastack": True, "retry": 45})
    broker = Pipeline(config).broker
    try:
        assert isinstance(broker, DisqueBroker) and broker.queue == config.name
        assert broker.options.fastack and broker.options.password is None
        assert [str(n) for n in broker.options.nodes] == [disque_server.address]
        assert broker.ping() is True
        assert broker.info() == f"Disque 1.0-rc1 at {disque_server.address}"
    finally:
        broker.close()


def test_explicit_broker_with_options_of_its_own(disque_server):
    from qhive.pipeline import Pipeline

    config = Config.from_dict({"name": unique(), "broker": "disque", "broker_options": {
        "disque_nodes": [disque_server.address], "replicate": 1, "ttl": 3600}})
    broker = Pipeline(config).broker
    try:
        job = broker.enqueue(b"x")
        seen = show(disque_server, job)
        assert (seen["repl"], seen["retry"], seen["queue"]) == (1, 60, broker.queue.encode())
        assert 3590 <= seen["ttl"] <= 3600
    finally:
        broker.delete_queue()
        broker.close()


def test_no_delay_declared():
    """Disque cannot give a job back for a chosen time keeping its counters (README,
    *Delays*): ``delay`` is not declared, so the core refuses countdown/eta/backoff."""
    assert DisqueBroker.capabilities.delay is False
    assert DisqueBroker.capabilities.priority is False


def test_the_entry_point_names_the_class_and_the_package_imports_nothing():
    from qhive.drivers import load_driver

    assert load_driver("broker", "disque") is DisqueBroker
    code = "import sys, qhive_broker_disque; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=WITHIN)
    assert out.stdout.strip() == "False", "importing the package imported redis-py"


@pytest.mark.parametrize(("options", "key", "message"), [
    ({}, "disque_nodes",
     "Q_CLUSTER['disque_nodes'] is not set: list the Disque nodes as 'host:port', "
     "e.g. ['127.0.0.1:7711']"),
    ({"disque_nodes": []}, "disque_nodes",
     "Q_CLUSTER['disque_nodes'] is empty: list at least one Disque node as 'host:port', "
     "e.g. ['127.0.0.1:7711']"),
    ({"disque_nodes": "10.0.0.1:7711"}, "disque_nodes",
     "Q_CLUSTER['disque_nodes'] must be a list of 'host:port' strings, got the string "
     "'10.0.0.1:7711': write ['10.0.0.1:7711']"),
    ({"disque_nodes": ["10.0.0.1:7711", "10.0.0.2"]}, "disque_nodes",
     "Q_CLUSTER['disque_nodes'][1] = '10.0.0.2' is not 'host:port': write it as "
     "'10.0.0.2:7711' (Disque's default port)"),
    ({"disque_nodes": ["10.0.0.1:77l1"]}, "disque_nodes",
     "Q_CLUSTER['disque_nodes'][0] = '10.0.0.1:77l1' has no valid port (a number from 1 to "
     "65535): write e.g. '10.0.0.1:7711'"),
    ({"disque_nodes": ["10.0.0.1:70000"]}, "disque_nodes", "has no valid port"),
    ({"disque_nodes": [":7711"]}, "disque_nodes", "is not 'host:port'"),
    ({"disque_nodes": ["::1"]}, "disque_nodes", "write it as '[::1]:7711'"),
    ({"disque_nodes": [7711]}, "disque_nodes",
     "Q_CLUSTER['disque_nodes'][0] must be a 'host:port' string such as '127.0.0.1:7711', "
     "got int 7711"),
    ({"disque_nodes": ["h:7711"], "disque_auth": 1234}, "disque_auth",
     "Q_CLUSTER['disque_auth'] must be the password of the Disque nodes (a string) or None, "
     "got int"),
    ({"disque_nodes": ["h:7711"], "disque_fastack": "yes"}, "disque_fastack",
     "Q_CLUSTER['disque_fastack'] must be True or False, got 'yes'"),
    ({"disque_nodes": ["h:7711"], "replicate": 0}, "broker_options.replicate",
     "Q_CLUSTER['broker_options']['replicate'] must be how many Disque nodes keep a copy"),
    ({"disque_nodes": ["h:7711"], "ttl": 0}, "broker_options.ttl",
     "Q_CLUSTER['broker_options']['ttl'] must be the seconds a job lives"),
    ({"disque_nodes": ["h:7711"], "ttl": 30}, "broker_options.ttl",
     "Q_CLUSTER['broker_options']['ttl'] (30 s) must be longer than Q_CLUSTER['retry'] "
     "(60 s): a task not acknowledged would expire before it is delivered again"),
])
def test_bad_settings_are_one_line_config_errors(options, key, message):
    with pytest.raises(ConfigError) as caught:
        DisqueBroker("q", **options)
    text = str(caught.value)
    assert text.startswith("Disque broker: ") and message in text
    assert "\n" not in text and caught.value.key == key


def test_good_node_spellings_and_no_network_at_construction():
    broker = DisqueBroker("q", disque_nodes=[" disque.example:7711", "[::1]:7712",
                                             "10.0.0.1:7713", "10.0.0.1:7713"])
    assert [(n.host, n.port) for n in broker.options.nodes] == [
        ("disque.example", 7711), ("::1", 7712), ("10.0.0.1", 7713)]
    assert [str(n) for n in broker.options.nodes][1] == "[::1]:7712"
    assert broker.options.ttl == DEFAULT_TTL and broker.options.replicate is None


def test_the_password_never_shows():
    broker = DisqueBroker("q", disque_nodes=["h:7711"], disque_auth="s3cret")
    assert "s3cret" not in repr(broker) and "s3cret" not in repr(broker.options)
    config = Config.from_dict({"disque_nodes": ["h:7711"], "disque_auth": "s3cret"})
    assert "s3cret" not in str(config.redacted())


def test_bad_queue_name():
    with pytest.raises(ConfigError, match="non-empty string"):
        DisqueBroker("", disque_nodes=["h:7711"])


# --------------------------------------------------------------------------- the server's view


def test_jobs_carry_retry_ttl_and_any_bytes(make, disque_server):
    broker = make(disque_server, retry=2.5)
    payload = b"ADDJOB q \r\n\x00 \xff spaces and CRLF " + bytes(range(256))
    job = broker.enqueue(payload)
    seen = show(disque_server, job)
    # RETRY rounded up: a later redelivery, never an earlier one.
    assert seen["retry"] == 3 and seen["body"] == payload and seen["repl"] == 1
    assert DEFAULT_TTL - 10 <= seen["ttl"] <= DEFAULT_TTL
    [message] = take(broker, 1)
    assert message.payload == payload and message.ack_id == job


def test_an_unacknowledged_job_comes_back_after_retry_a_touched_one_later(make,
                                                                           disque_server):
    broker = make(disque_server, retry=2)
    broker.enqueue_many([b"left", b"touched"])
    taken = {m.payload: m for m in take(broker, 2)}
    assert set(taken) == {b"left", b"touched"}
    assert show(disque_server, taken[b"left"].ack_id)["state"] == b"active"
    time.sleep(1.2)
    broker.touch([taken[b"touched"].ack_id])  # WORKING: its next delivery moves 2 s on
    [again] = take(broker, 1, within=2 + WITHIN)
    assert (again.payload, again.deliveries) == (b"left", 2)
    later = take(broker, 1, within=2 + WITHIN)
    assert [(m.payload, m.deliveries) for m in later] == [(b"touched", 2)]
    broker.acknowledge_many([again.ack_id, later[0].ack_id])
    assert broker.dequeue(timeout=2.5) == []


def test_retry_counts_from_the_delivery_not_from_the_enqueue(make, disque_server):
    """Disque times RETRY from when a job was last queued: one that waited longer than
    that would come back right after it was handed out, unless its clock is restarted."""
    broker = make(disque_server, retry=2)
    broker.enqueue(b"waited")
    time.sleep(3.5)  # in the queue past its RETRY: Disque moved its requeue time to ~4 s
    [taken] = take(broker, 1)
    assert taken.payload == b"waited"
    assert broker.dequeue(timeout=1.5) == [], "handed out again before retry had passed"
    [again] = take(broker, 1, within=2 + WITHIN)
    assert (again.payload, again.deliveries) == (b"waited", 2)
    broker.acknowledge(again.ack_id)


def test_touch_leaves_waiting_and_finished_jobs_alone(make, disque_server):
    broker = make(disque_server, retry=30)
    broker.enqueue_many([b"waiting", b"finished"])
    taken = {m.payload: m for m in take(broker, 2)}
    broker.acknowledge(taken[b"finished"].ack_id)
    broker.release(taken[b"waiting"].ack_id)  # NACK: waiting in the queue again
    waiting = taken[b"waiting"].ack_id
    broker.touch([waiting, taken[b"finished"].ack_id,
                  "D-00000000-000000000000000000000000-05a1"])  # unknown: left alone too
    # WORKING would have taken the waiting job out of the queue: it is still there.
    assert show(disque_server, waiting)["state"] == b"queued"
    assert broker.queue_size() == 1
    [message] = take(broker, 1)
    assert (message.payload, message.deliveries) == (b"waiting", 2)  # the NACK counts


def test_fastack_acknowledges_with_fastack(make, disque_servers):
    server = disque_servers()
    broker = make(server, disque_fastack=True)
    broker.enqueue_many([b"1", b"2", b"3"])
    got = take(broker, 3)
    broker.acknowledge(got[0].ack_id)
    broker.acknowledge_many([m.ack_id for m in got[1:]])
    client = server.client()
    try:
        used = client.info("commandstats")
    finally:
        client.close()
    assert used["cmdstat_fastack"]["calls"] == 2 and "cmdstat_ackjob" not in used
    assert broker.queue_size() == 0 and broker.lock_size() == 0
    assert broker.dequeue(timeout=0.5) == []


def test_acknowledge_uses_ackjob_by_default(make, disque_servers):
    server = disque_servers()
    broker = make(server)
    broker.enqueue(b"1")
    broker.acknowledge(take(broker, 1)[0].ack_id)
    client = server.client()
    try:
        used = client.info("commandstats")
    finally:
        client.close()
    assert used["cmdstat_ackjob"]["calls"] == 1 and "cmdstat_fastack" not in used


def test_blocked_consumers_all_get_work(make, disque_server):
    queue = unique()
    consumers = [make(disque_server, queue=queue) for _ in range(3)]
    results = {}

    def consume(index, broker):
        results[index] = broker.dequeue(timeout=WITHIN)

    threads = [threading.Thread(target=consume, args=(i, b), daemon=True)
               for i, b in enumerate(consumers)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    make(disque_server, queue=queue).enqueue_many([b"1", b"2", b"3"])
    for thread in threads:
        thread.join(WITHIN + 10)
    got = sorted(m.payload for messages in results.values() for m in messages)
    assert got == [b"1", b"2", b"3"] and all(len(m) == 1 for m in results.values())


# --------------------------------------------------------------------------- passwords


def test_a_password_protected_node(make, disque_servers):
    server = disque_servers(password="s3cret")
    broker = make(server, disque_auth="s3cret")
    broker.enqueue(b"with a password")
    assert [m.payload for m in take(broker, 1)] == [b"with a password"]

    for auth, says in ((None, "it needs a password: set Q_CLUSTER['disque_auth']"),
                       ("wrong", "it refused the password of Q_CLUSTER['disque_auth']")):
        other = make(server, disque_auth=auth, queue=broker.queue)
        outcome = finish_within(WITHIN, other.enqueue, b"refused")
        error = outcome.get("error")
        assert isinstance(error, BrokerConnectionError), outcome
        text = str(error)
        assert text.startswith("Disque broker: enqueue failed: every node of "
                               "Q_CLUSTER['disque_nodes'] refused the connection's password")
        assert says in text and server.address in text and "s3cret" not in text
    assert broker.queue_size() == 0


# --------------------------------------------------------------------------- failover


@pytest.mark.parametrize("operation", ["ping", "enqueue", "dequeue", "queue_size", "info"])
def test_no_node_reachable_is_a_broker_connection_error(operation):
    nodes = [dead_address(), dead_address()]
    broker = DisqueBroker("q", disque_nodes=nodes, disque_auth="s3cret",
                          config=Config.from_dict({"retry": 30}))
    call = {"ping": broker.ping, "enqueue": lambda: broker.enqueue(b"x"),
            "dequeue": lambda: broker.dequeue(timeout=5), "queue_size": broker.queue_size,
            "info": broker.info}[operation]
    outcome = finish_within(WITHIN, call)
    error = outcome.get("error")
    assert isinstance(error, BrokerConnectionError), f"{operation}() gave {outcome}"
    text = str(error)
    assert text.startswith(f"Disque broker: {operation} failed: no node of "
                           f"Q_CLUSTER['disque_nodes'] can be reached: ")
    assert all(node in text for node in nodes) and "disque-server" in text
    assert "\n" not in text and "s3cret" not in text


def test_the_first_node_down_at_start(make, disque_server, caplog):
    dead = dead_address()
    broker = make(dead, disque_server)
    broker.connection.index = 0  # as the processes whose pid makes them start there
    with caplog.at_level(logging.WARNING, logger="qhive.broker.disque"):
        broker.enqueue(b"on the second node")
    assert broker.connection.node.port == disque_server.port
    assert f"using the Disque node {disque_server.address} now; {dead} (" in caplog.text
    assert [m.payload for m in take(broker, 1)] == [b"on the second node"]
    copy = pickle.loads(pickle.dumps(broker))  # a copy starts where the original is
    assert copy.connection.node.port == disque_server.port and copy.ping()


def test_each_process_starts_at_a_node_of_its_own_and_its_threads_agree():
    nodes = ["127.0.0.1:7711", "127.0.0.1:7712", "127.0.0.1:7713"]
    code = ("import os; from qhive_broker_disque.broker import DisqueBroker as B; "
            f"a, b = B('q', disque_nodes={nodes!r}), B('q', disque_nodes={nodes!r}); "
            "print(os.getpid(), a.connection.node.port, b.connection.node.port)")
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, timeout=WITHIN).stdout.split()
        pid, first, second = map(int, out)
        assert first == second == 7711 + pid % 3


def test_independent_nodes_one_dies_the_broker_carries_on(make, disque_servers):
    first, second = disque_servers(), disque_servers()
    broker = make(first, second)
    broker.connection.index = 0
    broker.enqueue(b"on the first")
    assert [m.payload for m in take(broker, 1)] == [b"on the first"]
    first.kill()
    broker.enqueue(b"on the second")  # the node failed under the open connection
    assert broker.connection.node.port == second.port
    assert [m.payload for m in take(broker, 1)] == [b"on the second"]


def test_a_frozen_node_is_left_for_the_next(make, disque_servers):
    first, second = disque_servers(), disque_servers()
    broker = make(first, second)
    broker.connection.index = 0
    assert broker.ping()
    first.freeze()  # accepts nothing, answers nothing: the socket timeout decides
    outcome = finish_within(WITHIN, broker.enqueue, b"after the freeze")
    assert "error" not in outcome, outcome
    assert broker.connection.node.port == second.port
    assert [m.payload for m in take(broker, 1)] == [b"after the freeze"]


def test_a_joined_node_dies_its_jobs_come_back_on_the_other(make, disque_servers):
    first, second = disque_servers(), disque_servers()
    first.meet(second)
    broker = make(first, second, retry=1)
    broker.connection.index = 0
    payloads = [f"job {i}".encode() for i in range(5)]
    ids = broker.enqueue_many(payloads)
    assert all(show(second, job)["repl"] == 2 for job in ids), "copied to both nodes"
    assert broker.lock_size() is None, "in flight is unknown with two nodes"
    taken = take(broker, 2, count=2)
    broker.acknowledge(taken[0].ack_id)
    deadline = time.monotonic() + WITHIN  # the acknowledgement reaches the other node
    while (show(second, taken[0].ack_id) or {}).get("state", b"acked") != b"acked":
        assert time.monotonic() < deadline, "the second node never heard of the ACKJOB"
        time.sleep(0.02)
    first.kill()  # with 3 waiting jobs, 1 in flight and 1 acknowledged

    got = take(broker, 4, within=WITHIN)  # the second node queues its copies after retry
    assert broker.connection.node.port == second.port
    assert sorted(m.payload for m in got) == sorted(set(payloads) - {taken[0].payload})
    broker.acknowledge_many(m.ack_id for m in got)
    assert broker.dequeue(timeout=1.5) == [], "acknowledged jobs came back"

    # A new job cannot get its second copy: an error that says what to do...
    outcome = finish_within(WITHIN, broker.enqueue, b"two copies")
    assert isinstance(outcome.get("error"), BrokerError), outcome
    text = str(outcome["error"])
    assert text.startswith(f"Disque broker: enqueue failed on the Disque node "
                           f"{second.address}: NOREPL")
    assert "{'replicate': 1}" in text
    outcome = finish_within(WITHIN, broker.enqueue_many, [b"payload one", b"payload two"])
    text = str(outcome.get("error"))
    assert text.startswith("Disque broker: enqueue_many failed on the Disque node")
    assert "NOREPL" in text and "payload" not in text, "the error quotes the command"
    # ...unless one copy is accepted.
    single = make(second, queue=broker.queue, replicate=1)
    single.enqueue(b"one copy")
    assert [m.payload for m in take(single, 1)] == [b"one copy"]


def test_a_redis_server_is_not_taken_for_disque(make):
    from qhive_testkit.services import REDIS_HOST, REDIS_PORT, require

    require("redis")
    broker = make(f"{REDIS_HOST}:{REDIS_PORT}")
    with pytest.raises(BrokerError, match="is it a Disque server"):
        broker.enqueue(b"x")


# --------------------------------------------------------------------------- checks


@pytest.fixture
def qhive_checks(django_project):
    """``qhive_checks(Q_CLUSTER) -> [(id, message)]``: Django's system checks, tag qhive."""
    from django.core.checks import run_checks
    from django.test import override_settings
    from qhive_django.conf import reset

    def run(q_cluster: dict) -> list[tuple[str, str]]:
        with override_settings(Q_CLUSTER=q_cluster):
            try:
                return [(m.id, m.msg) for m in run_checks(tags=["qhive"])]
            finally:
                reset()

    return run


def test_checks_pass_good_settings_without_a_server(qhive_checks):
    assert qhive_checks({"name": "dqcheck", "disque_nodes": ["10.0.0.1:7711"],
                         "disque_auth": "pw", "disque_fastack": True}) == []


@pytest.mark.parametrize(("q_cluster", "says"), [
    ({"disque_nodes": ["10.0.0.1"]},
     "Disque broker: Q_CLUSTER['disque_nodes'][0] = '10.0.0.1' is not 'host:port': write it "
     "as '10.0.0.1:7711' (Disque's default port)"),
    ({"disque_nodes": []},
     "Disque broker: Q_CLUSTER['disque_nodes'] is empty: list at least one Disque node as "
     "'host:port', e.g. ['127.0.0.1:7711']"),
    ({"broker": "disque", "broker_options": {"disque_nodes": ["h:1"], "replicas": 2}},
     "broker 'disque' does not take option(s) 'replicas' in Q_CLUSTER['broker_options']; "
     "it takes: disque_auth, disque_fastack, disque_nodes, replicate, ttl"),
])
def test_checks_show_a_bad_setting_in_one_error(qhive_checks, q_cluster, says):
    assert qhive_checks({"name": "dqcheck", **q_cluster}) == [("qhive.E004", says)]


def test_manage_py_check_shows_a_bad_node_in_one_line(django_project, tmp_path):
    env = django_project.env({"name": "dqcheck", "disque_nodes": ["127.0.0.1:7711", "nohost"]})
    done = subprocess.run(django_project.manage("check"), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    [line] = [x for x in done.stderr.splitlines() if "qhive.E004" in x]
    assert line == ("settings.Q_CLUSTER: (qhive.E004) Disque broker: "
                    "Q_CLUSTER['disque_nodes'][1] = 'nohost' is not 'host:port': write it as "
                    "'nohost:7711' (Disque's default port)"), done.stderr
    assert "Traceback" not in done.stderr

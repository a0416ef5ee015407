"""The SQS broker against moto's server over real HTTP: Django Q2's settings, the credential
chain, FIFO queues, the size limit, batched deletes, PurgeQueue's one-a-minute rule, the
errors a user meets (bad credentials, no endpoint, no region, no permission), and that
the server keeps visibility timeouts honestly.

Every test uses queues named for itself. The tests about credentials use a second moto
server of this module's own that checks signatures and IAM policies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import socket
import threading
import time
import uuid

import boto3
import pytest
from qhive.config import Config
from qhive.errors import BrokerConnectionError, BrokerError, ConfigError, SetupError
from qhive.pipeline import Pipeline
from qhive_broker_sqs.broker import MAX_MESSAGE, MessageTooLarge, SqsBroker
from qhive_broker_sqs.options import sqs_queue_name
from qhive_testkit._util import make_config
from qhive_testkit.services import MotoServer, free_port

AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE")


def name(prefix: str = "sqs-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def no_aws_environment(monkeypatch, tmp_path):
    """No AWS settings from this machine: no variables, no ~/.aws files."""
    for variable in AWS_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to look for
    return tmp_path


@pytest.fixture
def brokers(moto_server):
    """``brokers(queue=None, retry=30, poll=0.05, **sqs)``: brokers on moto, their queues
    deleted afterwards."""
    made: list[SqsBroker] = []

    def make(queue: str | None = None, *, retry: float = 30, poll: float = 0.05,
             **sqs) -> SqsBroker:
        broker = SqsBroker(queue or name(), config=make_config(retry=retry, poll=poll),
                           sqs=moto_server.sqs_options(**sqs))
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.delete_queue()
        broker.close()


def calls(broker: SqsBroker, operation: str) -> list[dict]:
    """The parameters of every ``operation`` (e.g. "ReceiveMessage") the broker's client
    sends from now on, recorded by botocore's own event hooks."""
    seen: list[dict] = []
    broker.client().meta.events.register(
        f"provide-client-params.sqs.{operation}", lambda params, **_: seen.append(dict(params)))
    return seen


def raw_client(server: MotoServer):
    return boto3.client("sqs", endpoint_url=server.url, region_name=server.REGION,
                        aws_access_key_id=server.KEY_ID, aws_secret_access_key=server.SECRET)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, f"not one line: {text!r}"
    return text


# --------------------------------------------------------------------------- settings


def test_django_q2_keys(moto_server):
    options = {"aws_region": "eu-west-1", "aws_access_key_id": "AKIAEXAMPLEKEY000001",
               "aws_secret_access_key": "secret-1", "aws_session_token": "token-1",
               "receive_message_wait_time_seconds": 7, "endpoint_url": moto_server.url}
    broker = SqsBroker(name(), config=make_config(), sqs=options)
    assert broker.options.region == "eu-west-1"  # aws_region → region_name
    assert broker.options.wait == 7 and broker.capabilities.blocking
    credentials = broker.session().get_credentials()
    assert (credentials.access_key, credentials.secret_key, credentials.token) == (
        "AKIAEXAMPLEKEY000001", "secret-1", "token-1")
    assert credentials.method == "explicit"
    assert broker.ping() is True and "(eu-west-1, http://127.0.0.1:" in broker.info()
    receives = calls(broker, "ReceiveMessage")
    broker.dequeue(timeout=1.0)
    assert receives[0]["WaitTimeSeconds"] == 1  # what is left of the timeout, up to 7
    broker.delete_queue()
    # region_name, as boto3.Session spells it (Django Q2 passes it on too)
    same = SqsBroker(name(), sqs={**options, "aws_region": None, "region_name": "eu-west-2"})
    assert same.options.region == "eu-west-2"


@pytest.mark.parametrize("bad, complaint", [
    ({"aws_regoin": "eu-west-1"}, "unknown key 'aws_regoin' in Q_CLUSTER['sqs'] — did you "
                                  "mean 'aws_region'?"),
    ({"receive_message_wait_time_seconds": 21}, "must be a whole number of seconds from 0 to 20"),
    ({"receive_message_wait_time_seconds": True}, "must be a whole number"),
    ({"receive_message_wait_time_seconds": 2.5}, "must be a whole number"),
    ({"endpoint_url": "localhost:4566"}, "must be an http:// or https:// URL"),
    ({"create_queue": "no"}, "['create_queue'] must be True or False"),
    ({"message_group": "task"}, "['message_group'] must be 'queue' or 'message'"),
    ({"aws_access_key_id": 12}, "['aws_access_key_id'] must be a string"),
    ({"botocore_session": object()}, "use profile_name or the credential keys instead"),
    ({"aws_region": "eu-west-1", "region_name": "us-east-1"}, "keep one"),
])
def test_a_bad_setting_is_one_line_naming_the_key(bad, complaint):
    with pytest.raises(ConfigError) as caught:
        SqsBroker(name(), sqs={"aws_region": "us-east-1", **bad})
    assert complaint in one_line(caught.value)
    assert caught.value.key.startswith("sqs")


def test_retry_is_the_visibility_timeout_within_sqs_limits():
    assert SqsBroker(name(), config=make_config(retry=2.5),
                     sqs={"aws_region": "us-east-1"}).visibility == 3
    with pytest.raises(ConfigError, match=r"1 to 43200 seconds \(12 hours\)") as caught:
        SqsBroker(name(), config=make_config(retry=50_000), sqs={"aws_region": "us-east-1"})
    assert caught.value.key == "retry"


def test_missing_region_names_the_setting(no_aws_environment):
    with pytest.raises(ConfigError) as caught:
        SqsBroker(name(), sqs={"aws_access_key_id": "k", "aws_secret_access_key": "s"})
    assert one_line(caught.value) == (
        "SQS broker: no AWS region: set Q_CLUSTER['sqs']['aws_region'] (e.g. 'eu-west-1'), "
        "or $AWS_DEFAULT_REGION, or a region in the AWS profile")
    assert caught.value.key == "sqs.aws_region"


def test_region_and_credentials_from_a_profile(no_aws_environment, moto_server, monkeypatch):
    (no_aws_environment / "config").write_text("[profile qhive]\nregion = ap-south-1\n")
    (no_aws_environment / "credentials").write_text(
        "[qhive]\naws_access_key_id = AKIAPROFILEKEY000001\naws_secret_access_key = s\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(no_aws_environment / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(no_aws_environment / "credentials"))
    broker = SqsBroker(name(), sqs={"profile_name": "qhive", "endpoint_url": moto_server.url})
    assert broker.options.region == "ap-south-1"
    assert broker.session().get_credentials().access_key == "AKIAPROFILEKEY000001"
    assert broker.ping()
    broker.delete_queue()
    with pytest.raises(ConfigError, match=r"\['profile_name'\]: The config profile \(nope\) "
                                          r"could not be found"):
        SqsBroker(name(), sqs={"profile_name": "nope"})


def test_receive_wait_zero_is_short_polling_without_a_busy_loop(brokers):
    broker = brokers(receive_message_wait_time_seconds=0, poll=0.5)
    assert broker.capabilities.blocking is False
    receives = calls(broker, "ReceiveMessage")
    assert broker.dequeue(timeout=1.2) == []
    assert {r["WaitTimeSeconds"] for r in receives} == {0}
    # At 0, 0.5, 1.0 and 1.2 s at most (a slow machine looks less often, never more).
    assert 1 <= len(receives) <= 4, f"{len(receives)} looks in 1.2 s with poll=0.5"


def test_a_long_poll_is_one_call(brokers):
    broker = brokers()
    broker.ping()
    receives = calls(broker, "ReceiveMessage")
    assert broker.dequeue(timeout=3) == []
    # One long poll; at most one short look if SQS answered a moment early.
    assert [r["WaitTimeSeconds"] for r in receives][:1] == [3] and len(receives) <= 2


def test_bulk_is_capped_at_ten(brokers):
    broker = brokers()
    broker.enqueue_many([b"%d" % n for n in range(15)])
    receives = calls(broker, "ReceiveMessage")
    got = broker.dequeue(count=50, timeout=1)
    assert 1 <= len(got) <= 10 and receives[0]["MaxNumberOfMessages"] == 10
    broker.acknowledge_many(m.ack_id for m in got)


# --------------------------------------------------------------------------- queues


def test_queue_names_sqs_refuses_are_mapped(brokers, moto_server):
    assert sqs_queue_name("myproject") == "myproject"
    assert sqs_queue_name("orders.fifo") == "orders.fifo"
    dotted, coloned = sqs_queue_name("my.site"), sqs_queue_name("my:site")
    assert dotted.startswith("my-site-") and coloned.startswith("my-site-") and dotted != coloned
    long = sqs_queue_name("x" * 200 + ".fifo")
    assert len(long) == 80 and long.endswith(".fifo")

    one, other = brokers(f"{name()}.a b"), brokers(f"{name()}:a b")
    one.enqueue(b"for one")
    assert other.queue_size() == 0 and one.queue_size() == 1
    urls = raw_client(moto_server).list_queues(QueueNamePrefix=one.sqs_name)["QueueUrls"]
    assert [u.rsplit("/", 1)[1] for u in urls] == [one.sqs_name]


def test_an_existing_queue_is_not_created_and_a_missing_one_is_an_error(brokers, moto_server):
    queue = name()
    raw_client(moto_server).create_queue(QueueName=queue)
    existing = brokers(queue, create_queue=False)
    creates = calls(existing, "CreateQueue")
    existing.enqueue(b"x")
    assert existing.queue_size() == 1 and creates == []

    missing = brokers(create_queue=False)
    with pytest.raises(SetupError) as caught:
        missing.ping()
    text = one_line(caught.value)
    assert f"the SQS queue {missing.sqs_name!r} does not exist" in text
    assert "Q_CLUSTER['sqs']['create_queue'] is False" in text
    assert f"aws sqs create-queue --queue-name {missing.sqs_name}" in text


def test_a_created_queue_keeps_messages_14_days(brokers, moto_server):
    broker = brokers()
    broker.ping()
    attributes = raw_client(moto_server).get_queue_attributes(
        QueueUrl=broker.queue_url(), AttributeNames=["MessageRetentionPeriod"])["Attributes"]
    assert attributes["MessageRetentionPeriod"] == str(14 * 24 * 3600)


def test_a_queue_deleted_under_the_broker_is_created_again(brokers, moto_server):
    broker = brokers()
    broker.enqueue(b"before")
    raw_client(moto_server).delete_queue(QueueUrl=broker.queue_url())
    broker.enqueue(b"after")
    assert [m.payload for m in broker.dequeue(timeout=1)] == [b"after"]


def test_a_body_not_sent_by_qhive_is_handed_on_as_it_is(brokers, moto_server):
    broker = brokers()
    raw_client(moto_server).send_message(QueueUrl=broker.queue_url(), MessageBody="django-q2")
    [message] = broker.dequeue(timeout=1)
    assert message.payload == b"django-q2"  # the cluster rejects it as a bad signature


# --------------------------------------------------------------------------- FIFO


def fifo_fields(server: MotoServer, broker: SqsBroker, count: int) -> list[dict]:
    """Take ``count`` messages with the raw client, with their FIFO attributes."""
    got: list[dict] = []
    client = raw_client(server)
    while len(got) < count:
        reply = client.receive_message(
            QueueUrl=broker.queue_url(), MaxNumberOfMessages=10, WaitTimeSeconds=1,
            MessageSystemAttributeNames=["MessageGroupId", "MessageDeduplicationId"])
        got += reply.get("Messages", [])
        for message in reply.get("Messages", []):
            client.delete_message(QueueUrl=broker.queue_url(),
                                  ReceiptHandle=message["ReceiptHandle"])
    return [m["Attributes"] for m in got]


def test_fifo_group_and_deduplication_ids(brokers, moto_server):
    one_group = brokers(f"{name()}.fifo")
    assert one_group.capabilities.fifo is True
    one_group.enqueue_many([b"same"] * 3)
    one_group.enqueue(b"same")
    fields = fifo_fields(moto_server, one_group, 4)
    assert {f["MessageGroupId"] for f in fields} == {one_group.sqs_name.removesuffix(".fifo")}
    assert len({f["MessageDeduplicationId"] for f in fields}) == 4, "each message its own id"

    per_message = brokers(f"{name()}.fifo", message_group="message")
    assert per_message.capabilities.fifo is False
    per_message.enqueue_many([b"same"] * 3)
    fields = fifo_fields(moto_server, per_message, 3)
    assert all(f["MessageGroupId"] == f["MessageDeduplicationId"] for f in fields)
    assert len({f["MessageGroupId"] for f in fields}) == 3


def test_one_group_fifo_order_and_head_of_line_blocking(brokers):
    broker = brokers(f"{name()}.fifo")
    other = brokers(broker.queue)
    payloads = [b"%02d" % n for n in range(25)]
    broker.enqueue_many(payloads[:20])
    for payload in payloads[20:]:
        broker.enqueue(payload)
    got: list[bytes] = []
    while len(got) < len(payloads):
        batch = broker.dequeue(count=4, timeout=1)
        assert batch, f"stopped after {len(got)} messages"
        # While the group has messages in flight, SQS hands none of it to anyone.
        assert other.dequeue(timeout=0) == []
        got += [m.payload for m in batch]
        broker.acknowledge_many(m.ack_id for m in batch)
    assert got == payloads


class DroppingProxy:
    """A TCP proxy before the moto server that can lose the next reply: the server has
    done the request, the client sees the connection close and botocore sends it again."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lose_reply = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if replies and self.lose_reply.is_set():
                    self.lose_reply.clear()
                    break
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):  # shutdown wakes the other pump's recv too
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("fifo, stored", [(True, 1), (False, 2)], ids=["fifo", "standard"])
def test_a_send_retried_after_a_lost_reply(moto_server, fifo, stored):
    """A FIFO queue stores a send botocore retried once (same MessageDeduplicationId);
    a standard queue stores it twice: enqueue is at least once there."""
    proxy = DroppingProxy(moto_server.port)
    broker = SqsBroker(f"{name()}.fifo" if fifo else name(), config=make_config(),
                       sqs=moto_server.sqs_options(endpoint_url=proxy.url))
    try:
        broker.ping()
        sends = calls(broker, "SendMessage")
        proxy.lose_reply.set()
        broker.enqueue(b"once")
        assert not proxy.lose_reply.is_set(), "the reply was lost"
        assert len(sends) == 1  # one call of the broker; botocore sent it twice
        assert broker.queue_size() == stored
    finally:
        broker.delete_queue()  # through the proxy, while it still listens
        broker.close()
        proxy.close()


# --------------------------------------------------------------------------- sizes


def test_a_package_over_the_limit_is_refused_naming_the_sizes(brokers, moto_server):
    broker = brokers()
    fits = b"\x01" * (MAX_MESSAGE * 3 // 4 - 12)  # base64 and "qhive:" just fit
    broker.enqueue(fits)
    [message] = broker.dequeue(timeout=1)
    assert message.payload == fits
    broker.acknowledge(message.ack_id)
    with pytest.raises(MessageTooLarge) as caught:
        broker.enqueue(b"\x01" * 800_000)
    text = one_line(caught.value)
    assert "a task package of 800,000 bytes is 1,066,674 bytes in base64, over the " \
           "1,048,576-byte limit of SQS queue" in text
    assert "Q_CLUSTER['compress'] = True" in text and "smaller arguments" in text
    with pytest.raises(MessageTooLarge):
        broker.enqueue_many([b"small", b"\x01" * 800_000])
    assert broker.queue_size() == 0, "nothing was sent"

    small = brokers()
    raw_client(moto_server).set_queue_attributes(
        QueueUrl=small.queue_url(), Attributes={"MaximumMessageSize": "2048"})
    small.enqueue(b"\x01" * 1000)
    with pytest.raises(MessageTooLarge, match=r"over the 2,048-byte limit"):
        small.enqueue(b"\x01" * 2000)


def test_the_error_names_the_task(moto_server):
    config = Config.from_dict({"name": name(), "sqs": moto_server.sqs_options()},
                              secret_key="test-secret")
    pipeline = Pipeline(config)
    try:
        with pytest.raises(MessageTooLarge) as caught:
            pipeline.enqueue("qhive_testkit.tasks.echo", args=("x" * 900_000,),
                             task_name="big-echo")
        text = one_line(caught.value)
        assert text.startswith("SQS broker: task 'big-echo' (qhive_testkit.tasks.echo, id ")
        assert "its package of 900," in text and "Q_CLUSTER['compress'] = True" in text
        small = pipeline.enqueue("qhive_testkit.tasks.echo", args=("x",))
        assert isinstance(small, str)
    finally:
        pipeline.broker.delete_queue()
        pipeline.close()


def test_sizes_are_read_fresh(brokers):
    broker = brokers()
    assert (broker.queue_size(), broker.lock_size()) == (0, 0)
    broker.enqueue_many([b"1", b"2", b"3"])
    assert (broker.queue_size(), broker.lock_size()) == (3, 0)
    taken = broker.dequeue(count=2, timeout=1)
    assert (broker.queue_size(), broker.lock_size()) == (3 - len(taken), len(taken))


# --------------------------------------------------------------------------- finishing


def test_acknowledge_many_batches_by_ten_and_reports_a_refused_entry(brokers, caplog):
    broker = brokers()
    broker.enqueue_many([b"%d" % n for n in range(23)])
    taken = []
    while len(taken) < 23:
        taken += broker.dequeue(count=10, timeout=1)
    deletes = calls(broker, "DeleteMessageBatch")
    handles = [m.ack_id for m in taken]
    with caplog.at_level(logging.WARNING, logger="qhive.broker.sqs"):
        broker.acknowledge_many([*handles[:12], "not-a-receipt-handle", *handles[12:]])
    assert [len(d["Entries"]) for d in deletes] == [10, 10, 4]
    assert broker.lock_size() == 0 and broker.queue_size() == 0, "the others were deleted"
    [warning] = [r.getMessage() for r in caplog.records if r.name == "qhive.broker.sqs"]
    assert "1 of 24 acknowledgements were refused" in warning
    assert "ReceiptHandleIsInvalid" in warning


def test_visibility_runs_out_on_the_server_unless_touched(brokers):
    broker = brokers(retry=3)
    broker.enqueue_many([b"left", b"touched"])
    taken = {m.payload: m for m in broker.dequeue(count=2, timeout=1)}
    assert set(taken) == {b"left", b"touched"}
    back: list = []
    for _ in range(4):  # renewed every second, until past the first deadline
        time.sleep(1)
        broker.touch([taken[b"touched"].ack_id])
        for message in broker.dequeue(timeout=0):
            back.append(message)
            broker.acknowledge(message.ack_id)
    back += broker.dequeue(timeout=1)
    assert [m.payload for m in back] == [b"left"], "only the message not touched came back"
    assert back[0].deliveries == 2
    broker.acknowledge(taken[b"touched"].ack_id)
    assert broker.dequeue(timeout=4) == [], "finished messages stay finished"


def test_release_makes_a_message_visible_at_once(brokers):
    broker = brokers(retry=600)
    broker.enqueue(b"given back")
    [taken] = broker.dequeue(timeout=1)
    broker.release(taken.ack_id)
    [again] = broker.dequeue(timeout=1)
    assert (again.payload, again.deliveries) == (b"given back", 2)
    broker.acknowledge(again.ack_id)
    broker.release(again.ack_id)  # finished: nothing to give back, no error
    broker.touch([again.ack_id])
    assert broker.queue_size() == 0


# --------------------------------------------------------------------------- delays


def test_a_delay_is_delay_seconds_rounded_up_and_none_is_sent_without_one(brokers):
    broker = brokers()
    sends = calls(broker, "SendMessage")
    broker.enqueue(b"now")
    broker.enqueue(b"also now", delay=0)
    broker.enqueue(b"later", delay=1.2)
    assert [c.get("DelaySeconds") for c in sends] == [None, None, 2]
    assert {m.payload for m in broker.dequeue(count=10, timeout=1)} == {b"now", b"also now"}


def test_a_delay_over_900_s_is_refused_naming_the_limit(brokers):
    broker = brokers()
    sends = calls(broker, "SendMessage")
    with pytest.raises(ValueError) as caught:
        broker.enqueue(b"too late", delay=901)
    text = one_line(caught.value)
    assert "SQS broker" in text and "900 s" in text and "nothing was sent" in text
    broker.enqueue(b"at the limit", delay=900)
    assert [c.get("DelaySeconds") for c in sends] == [900]
    for bad, error in [(-1, ValueError), (float("nan"), ValueError), ("5", TypeError)]:
        with pytest.raises(error, match="SQS broker: delay must be"):
            broker.enqueue(b"x", delay=bad)


def test_a_fifo_queue_declares_no_delay_and_refuses_one(brokers):
    for options in ({}, {"message_group": "message"}):
        broker = brokers(name() + ".fifo", **options)
        assert broker.capabilities.delay is False
        with pytest.raises(ValueError) as caught:
            broker.enqueue(b"later", delay=1)
        text = one_line(caught.value)
        assert "FIFO queue" in text and "standard queue" in text
        assert broker.queue_size() == 0
    assert SqsBroker.capabilities.delay is True  # the class: a standard queue's
    assert brokers().capabilities.delay is True


def test_release_with_a_delay_on_a_fifo_queue(brokers):
    broker = brokers(name() + ".fifo", message_group="message", retry=600)
    broker.enqueue(b"retry me")
    [taken] = broker.dequeue(timeout=1)
    released = time.monotonic()
    broker.release(taken.ack_id, delay=2)
    assert broker.dequeue(timeout=1) == []
    [again] = broker.dequeue(timeout=4)
    assert time.monotonic() - released >= 1.95
    assert (again.payload, again.deliveries) == (b"retry me", 2)
    broker.acknowledge(again.ack_id)


def test_release_with_a_delay_over_12_hours_is_refused(brokers):
    broker = brokers(retry=600)
    broker.enqueue(b"held")
    [taken] = broker.dequeue(timeout=1)
    visibility = calls(broker, "ChangeMessageVisibility")
    with pytest.raises(ValueError, match=r"SQS broker: .* 43200 s \(12 hours\)"):
        broker.release(taken.ack_id, delay=43_201)
    assert visibility == [], "nothing was sent"
    broker.release(taken.ack_id, delay=0.3)
    assert [c["VisibilityTimeout"] for c in visibility] == [1]
    [again] = broker.dequeue(timeout=3)
    broker.acknowledge(again.ack_id)
    broker.release(again.ack_id, delay=5)  # finished: nothing to give back, no error


def test_delayed_messages_are_not_waiting(brokers):
    broker = brokers()
    broker.enqueue(b"later", delay=60)
    assert broker.queue_size() == 0
    assert broker.dequeue(timeout=1) == []


# --------------------------------------------------------------------------- purge


def test_purge_twice_in_a_row(brokers):
    broker = brokers(retry=600)
    purges = calls(broker, "PurgeQueue")
    broker.purge_queue()  # empty: PurgeQueue is kept for when it matters
    assert purges == []
    broker.enqueue_many([b"1", b"2"])
    broker.purge_queue()
    assert len(purges) == 1 and broker.queue_size() == 0

    broker.enqueue_many([b"3", b"4", b"5"])
    broker.purge_queue()  # within 60 s: SQS refuses, the waiting ones are deleted instead
    assert len(purges) == 2 and broker.queue_size() == 0

    broker.enqueue_many([b"6", b"7"])
    [held] = broker.dequeue(timeout=1)
    with pytest.raises(BrokerError) as caught:
        broker.purge_queue()
    text = one_line(caught.value)
    assert "one PurgeQueue per queue per 60 s" in text
    assert "1 waiting messages were deleted one by one, but 1 in flight" in text
    assert "purge again in a minute" in text
    assert broker.queue_size() == 0 and broker.lock_size() == 1
    broker.acknowledge(held.ack_id)


# --------------------------------------------------------------------------- errors


def test_an_unreachable_endpoint_is_one_line(moto_server):
    endpoint = f"http://127.0.0.1:{free_port()}"
    broker = SqsBroker(name(), sqs={**moto_server.sqs_options(), "endpoint_url": endpoint})
    for call in (broker.ping, lambda: broker.dequeue(timeout=1), lambda: broker.enqueue(b"x")):
        with pytest.raises(BrokerConnectionError) as caught:  # the cluster's outage back-off
            call()
        text = one_line(caught.value)
        assert f"cannot reach SQS at {endpoint}" in text
        assert "is Q_CLUSTER['sqs']['endpoint_url'] right and the service running?" in text


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """A moto server that checks signatures and IAM policies: (server, key id, secret)
    of a user allowed everything."""
    server = MotoServer(tmp_path_factory.mktemp("moto-auth")).start()
    key, secret = server.enforce_auth()
    yield server, key, secret
    server.stop()


def test_bad_credentials_are_one_line_naming_them(auth_server):
    server, key, secret = auth_server
    good = SqsBroker(name(), sqs=server.sqs_options(aws_access_key_id=key,
                                                    aws_secret_access_key=secret))
    assert good.ping()
    good.delete_queue()
    for key_id, secret_key, code in [("AKIAUNKNOWNKEY000001", secret, "InvalidClientTokenId"),
                                     (key, "not-the-secret", "SignatureDoesNotMatch")]:
        broker = SqsBroker(name(), sqs=server.sqs_options(aws_access_key_id=key_id,
                                                          aws_secret_access_key=secret_key))
        with pytest.raises(BrokerConnectionError) as caught:
            broker.dequeue(timeout=1)
        text = one_line(caught.value)
        assert f"AWS refused the credentials ({code}: " in text
        assert f"used access key {key_id[:4]}…{key_id[-4:]} from " \
               f"Q_CLUSTER['sqs']['aws_access_key_id']" in text
        assert secret_key not in text and key_id not in text


def test_credentials_from_the_environment(auth_server, no_aws_environment, monkeypatch):
    server, key, secret = auth_server
    monkeypatch.setenv("AWS_DEFAULT_REGION", server.REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    broker = SqsBroker(name(), sqs={"endpoint_url": server.url})
    assert broker.options.region == server.REGION
    broker.enqueue(b"signed with the environment's key")
    assert [m.payload for m in broker.dequeue(timeout=1)] == [
        b"signed with the environment's key"]
    broker.delete_queue()

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "stale")
    with pytest.raises(BrokerConnectionError) as caught:
        SqsBroker(name(), sqs={"endpoint_url": server.url}).ping()
    assert "from the environment ($AWS_ACCESS_KEY_ID)" in one_line(caught.value)


def test_a_denied_permission_is_named(auth_server):
    server, key, secret = auth_server
    iam = boto3.client("iam", endpoint_url=server.url, region_name=server.REGION,
                       aws_access_key_id=key, aws_secret_access_key=secret)
    user = name("limited")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="no-create-no-purge", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sqs:*", "Resource": "*"},
            {"Effect": "Deny", "Action": ["sqs:CreateQueue", "sqs:PurgeQueue"],
             "Resource": "*"}]}))
    limited = iam.create_access_key(UserName=user)["AccessKey"]
    options = server.sqs_options(aws_access_key_id=limited["AccessKeyId"],
                                 aws_secret_access_key=limited["SecretAccessKey"])
    missing = SqsBroker(name(), sqs=options)
    with pytest.raises(SetupError) as caught:
        missing.enqueue(b"x")
    text = one_line(caught.value)
    assert "may not create it (sqs:CreateQueue denied)" in text
    assert "create_queue'] = False" in text

    admin = SqsBroker(name(), sqs=server.sqs_options(aws_access_key_id=key,
                                                     aws_secret_access_key=secret))
    admin.enqueue(b"made by the administrator")
    existing = SqsBroker(admin.queue, sqs=options)
    assert existing.queue_size() == 1  # a queue that exists needs no sqs:CreateQueue
    with pytest.raises(BrokerError) as caught:
        existing.purge_queue()
    assert "AWS denied sqs:PurgeQueue on queue" in one_line(caught.value)
    admin.delete_queue()


def test_a_pickled_broker_carries_no_client(brokers):
    broker = brokers()
    broker.enqueue(b"before")
    copy = pickle.loads(pickle.dumps(broker))
    assert copy._client is None and copy.queue_url() == broker.queue_url()
    assert [m.payload for m in copy.dequeue(timeout=1)] == [b"before"]

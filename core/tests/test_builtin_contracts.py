"""The built-in memory broker, memory result store and log reporter pass their contracts."""

from __future__ import annotations

import datetime as dt
import logging
import pickle
import threading

import pytest
from qhive.builtin.memory import MemoryBroker, MemoryResultStore
from qhive.builtin.reporters import LogReporter
from qhive.config import Config
from qhive.contracts import TaskResult
from qhive.errors import ConfigError
from qhive_testkit import BrokerContract, ReporterContract, ResultStoreContract


class TestMemoryBroker(BrokerContract):
    @pytest.fixture
    def make_broker(self):
        return lambda queue, config: MemoryBroker(queue, config=config)


class TestMemoryResultStore(ResultStoreContract):
    @pytest.fixture
    def make_result_store(self):
        return lambda config: MemoryResultStore(config=config)


class TestLogReporter(ReporterContract):
    @pytest.fixture
    def make_reporter(self):
        return LogReporter


# --------------------------------------------------------------------------- memory specifics


def test_memory_broker_instances_share_a_queue_by_name():
    one, two = MemoryBroker("test-shared-by-name"), MemoryBroker("test-shared-by-name")
    try:
        one.enqueue(b"x")
        assert two.queue_size() == 1
        assert [m.payload for m in two.dequeue()] == [b"x"]
        assert one.lock_size() == 1
        assert pickle.loads(pickle.dumps(one)).lock_size() == 1
    finally:
        one.delete_queue()


def test_memory_broker_wakes_a_waiter_when_the_queue_is_deleted():
    broker = MemoryBroker("test-deleted-while-waiting")
    got = []
    waiter = threading.Thread(target=lambda: got.extend(broker.dequeue(timeout=30)))
    waiter.start()
    broker.delete_queue()
    MemoryBroker("test-deleted-while-waiting").enqueue(b"after delete")
    waiter.join(30)
    assert [m.payload for m in got] == [b"after delete"]
    broker.delete_queue()


def test_memory_broker_refuses_text():
    with pytest.raises(TypeError, match="bytes"):
        MemoryBroker("test-text").enqueue("text")


def test_memory_result_store_is_shared_per_cluster_name():
    now = dt.datetime.now(dt.UTC)
    result = TaskResult("f" * 32, "n", "math.floor", now, now, True, 1)
    one = MemoryResultStore(config=Config.from_dict({"name": "test-store-one"}))
    one.save(result)
    try:
        twin = MemoryResultStore(config=Config.from_dict({"name": "test-store-one"}))
        other = MemoryResultStore(config=Config.from_dict({"name": "test-store-two"}))
        assert twin.get(result.id) == result
        assert other.get(result.id) is None
    finally:
        one.delete(result.id)


# --------------------------------------------------------------------------- log reporter


def test_log_reporter_logs_the_error_with_traceback_and_task(caplog):
    task = {"id": "a" * 32, "name": "alpha-bravo", "func": "myapp.tasks.explode"}
    try:
        raise ValueError("it broke")
    except ValueError as exc:
        error = exc
        with caplog.at_level(logging.ERROR, logger="qhive.reporters.log"):
            LogReporter().report(error, task)
    (record,) = [r for r in caplog.records if r.name == "qhive.reporters.log"]
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    for part in ("myapp.tasks.explode", "alpha-bravo", "a" * 32, "ValueError: it broke"):
        assert part in message
    assert record.exc_info[1] is error
    assert "raise ValueError" in caplog.text  # the traceback is in the output


def test_log_reporter_options(caplog):
    reporter = LogReporter(logger="myapp.errors", level="warning")
    with caplog.at_level(logging.WARNING, logger="myapp.errors"):
        reporter.report(RuntimeError("no traceback"), None)
    (record,) = [r for r in caplog.records if r.name == "myapp.errors"]
    assert record.levelno == logging.WARNING
    assert "RuntimeError: no traceback" in record.getMessage()


@pytest.mark.parametrize("options", [{"level": "LOUD"}, {"level": None}, {"logger": ""}])
def test_log_reporter_bad_options(options):
    with pytest.raises(ConfigError):
        LogReporter(**options)

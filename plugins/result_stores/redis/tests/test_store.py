"""What the Redis store does beyond the contract: the key layout, expiry, the
connection options, errors, pruning details and processes racing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import pickle
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from qhive.config import Config
from qhive.contracts import TaskResult
from qhive.errors import ConfigError
from qhive_store_redis.store import (
    DEFAULT_REDIS,
    RedisResultStore,
    RedisStoreConnectionError,
    RedisStoreError,
)
from qhive_testkit.services import free_port, redis_address, redis_options, redis_url

URL = redis_url()
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def make_result(n: int = 0, **fields) -> TaskResult:
    stopped = NOW + dt.timedelta(seconds=n)
    defaults = {"id": uuid.uuid4().hex, "name": f"redistest-task-{uuid.uuid4().hex[:8]}",
                "func": "math.floor", "started": stopped - dt.timedelta(seconds=1),
                "stopped": stopped, "success": True, "result": n}
    return TaskResult(**{**defaults, **fields})




# -- options


def test_the_options_come_from_the_argument_then_config_redis_then_the_default(make_config):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    explicit = RedisResultStore(config=make_config(redis=dead), redis=URL)
    assert explicit.options_from == "result_store_options['redis']"
    from_config = RedisResultStore(config=make_config(redis=URL))
    assert from_config.options_from == "Q_CLUSTER['redis']"
    as_dict = RedisResultStore(config=make_config(redis=redis_options()))
    renamed = RedisResultStore(config=make_config(redis={**redis_options(), "charset": "utf-8"}))
    assert renamed.redis_options == {**redis_options(), "encoding": "utf-8"}, (
        "Django Q's old redis-py option names still work")
    default = RedisResultStore(config=make_config())
    assert default.redis_options == DEFAULT_REDIS and default.address == "127.0.0.1:6379/0"
    live = [explicit, from_config, as_dict, renamed]
    if default.address == redis_address():  # not when $QHIVE_TEST_REDIS_* point elsewhere
        live.append(default)
    for store in live:  # all on the live server
        result = make_result()
        store.save(result)
        assert store.get(result.id) == result


@pytest.mark.parametrize(("options", "message"), [
    ({"hots": "127.0.0.1"}, r"takes no option 'hots' in result_store_options\['redis'\] "
                            r"— did you mean 'host'\?"),
    ("http://127.0.0.1:6379", r"is not a Redis URL; write redis://"),
    (6379, r"must be a dict of redis.Redis options or a URL"),
    ({"decode_responses": True}, r"decode_responses must be False"),
])
def test_bad_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=r"^qhive-store-redis: .*" + message):
        RedisResultStore(redis=options)


def test_a_password_never_shows(make_config):
    url = "redis://:s3cret-pw@127.0.0.1:6379/0"
    store = RedisResultStore(config=make_config(), redis=url)
    assert "s3cret" not in repr(store) and store.address == "127.0.0.1:6379/0"
    with pytest.raises(ConfigError) as raised:
        RedisResultStore(redis="http://:s3cret-pw@127.0.0.1:6379/0")
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize("timeout", [0, -5, True, "60"])
def test_a_bad_timeout_is_a_config_error(timeout):
    with pytest.raises(ConfigError, match=r"qhive-store-redis: timeout must be a number"):
        RedisResultStore(timeout=timeout)


def test_without_a_secret_key_the_first_use_raises():
    store = RedisResultStore(config=Config(name="no-key"), redis=URL)
    message = r"qhive-store-redis: cannot sign stored results: .*needs a secret key"
    with pytest.raises(ConfigError, match=message):
        store.get(uuid.uuid4().hex)
    with pytest.raises(ConfigError, match=message):
        store.save(make_result())


def test_the_entry_point_builds_the_store(make_config):
    from qhive.drivers import build_driver

    store = build_driver("result_store", "redis", {"timeout": 30, "redis": URL},
                         config=make_config())
    assert isinstance(store, RedisResultStore) and store.timeout == 30


# -- errors


def test_an_unreachable_redis_gives_a_clear_error(make_config):
    port = free_port()
    store = RedisResultStore(config=make_config(), redis=f"redis://:s3cret@127.0.0.1:{port}/3")
    with pytest.raises(RedisStoreConnectionError) as raised:
        store.get(uuid.uuid4().hex)
    message = str(raised.value)
    assert message.startswith("qhive-store-redis: get failed: cannot reach Redis at "
                              f"127.0.0.1:{port}/3"), message
    assert "Is redis-server running there?" in message and "s3cret" not in message
    assert isinstance(raised.value, ConnectionError)
    with pytest.raises(RedisStoreConnectionError, match=r"save failed"):
        store.save(make_result())


def test_ping_asks_the_server(make_config):
    """What a cluster asks as it starts and ``qhealth`` on every probe."""
    assert RedisResultStore(config=make_config(), redis=URL).ping() is True
    port = free_port()
    dead = RedisResultStore(config=make_config(), redis=f"redis://127.0.0.1:{port}/0")
    with pytest.raises(RedisStoreConnectionError, match=r"^qhive-store-redis: ping failed: "
                                                        r"cannot reach Redis at 127\.0\.0\.1"):
        dead.ping()


def test_a_redis_error_names_the_store_and_the_server(make_config, raw_redis):
    store = RedisResultStore(config=make_config(), redis=URL)
    task_id = uuid.uuid4().hex
    raw_redis.set(f"{store.prefix}result:{task_id}", "not a hash")
    with pytest.raises(RedisStoreError, match=r"qhive-store-redis: get failed on Redis at "
                       + re.escape(redis_address()) + r": ResponseError: WRONGTYPE"):
        store.get(task_id)


# -- how results are kept


def test_the_key_layout(make_config, raw_redis):
    store = RedisResultStore(config=make_config(save_limit=10), redis=URL, timeout=60)
    result = make_result(group="layout")
    store.save(result)
    p = f"qhive:{{{store.config.name}}}:"
    stored = raw_redis.hgetall(f"{p}result:{result.id}")
    assert stored[b"success"] == b"1" and stored[b"attempts"] == b"1"
    assert (stored[b"g"], stored[b"n"], stored[b"r"]) == (
        f"{p}group:layout".encode(), f"{p}name:{result.name}".encode(), f"{p}successes".encode())
    micros = (result.stopped - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(
        microseconds=1)
    for index in ("group:layout", f"name:{result.name}", "successes"):
        assert raw_redis.zscore(f"{p}{index}", result.id) == micros
        assert 0 < raw_redis.ttl(f"{p}{index}") <= 60, f"{index} expires with its results"
    assert 0 < raw_redis.ttl(f"{p}result:{result.id}") <= 60
    forever = RedisResultStore(config=store.config, redis=URL)
    again = make_result(1, group="layout", success=False)
    forever.save(again)
    assert raw_redis.ttl(f"{p}result:{again.id}") == -1
    assert raw_redis.ttl(f"{p}group:layout") == -1, "a lasting member keeps its group"
    assert store.delete_group("layout") == 2
    assert not list(raw_redis.scan_iter(match=f"{p}*")), "delete_group leaves nothing behind"


def test_a_result_expires_after_the_timeout(make_config, raw_redis):
    config = make_config()
    brief = RedisResultStore(config=config, redis=URL, timeout=1)
    result = make_result(group="brief")
    brief.save(result)
    assert brief.get(result.id) == result
    time.sleep(1.5)
    assert brief.get(result.id) is None and brief.get_by_name(result.name) is None
    assert brief.get_group("brief", failures=True) == [] and brief.count_group("brief") == 0
    assert not raw_redis.exists(f"{brief.prefix}group:brief")


def test_expired_results_leave_the_indexes_on_read(make_config, raw_redis):
    store = RedisResultStore(config=make_config(), redis=URL)
    gone, kept = make_result(1, group="g"), make_result(group="g", name="shared")
    gone = dataclasses.replace(gone, name="shared")
    store.save_many([gone, kept])
    raw_redis.delete(f"{store.prefix}result:{gone.id}")  # as if it had expired
    assert store.get_by_name("shared") == kept, "the newest live result of the name"
    assert store.count_group("g") == 1 and store.get_group("g") == [kept]
    assert raw_redis.zrange(f"{store.prefix}group:g", 0, -1) == [kept.id.encode()]
    store.delete_group("g")


def test_results_of_an_alt_cluster_are_found_by_the_root_cluster(make_config):
    q_cluster = {"name": f"redistest-{uuid.uuid4().hex[:8]}",
                 "ALT_CLUSTERS": {"long": {"timeout": 600}}}
    alt = RedisResultStore(config=make_config(cluster="long", **q_cluster), redis=URL)
    root = RedisResultStore(config=make_config(**q_cluster), redis=URL)
    result = make_result(group="routed", cluster="long")
    alt.save(result)
    assert root.get(result.id) == result and root.get_group("routed") == [result]
    assert root.get_by_name(result.name) == result


def test_an_unreadable_value_reads_as_absent(make_config, raw_redis, caplog):
    store = RedisResultStore(config=make_config(), redis=URL)
    victim, other = make_result(group="tampered"), make_result(1, group="tampered")
    store.save_many([victim, other])
    key = f"{store.prefix}result:{victim.id}"
    blob = raw_redis.hget(key, "blob")
    for what, value in {"altered": blob[:-2] + b"zz",
                        "another task's": raw_redis.hget(f"{store.prefix}result:{other.id}",
                                                         "blob")}.items():
        raw_redis.hset(key, "blob", value)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="qhive.store.redis"):
            assert store.get(victim.id) is None, f"an {what} blob must read as absent"
            assert store.get_group("tampered") == [other]
        assert victim.id in caplog.text and "treated as absent" in caplog.text


def test_a_pickled_copy_leaves_the_connection_behind(make_config):
    store = RedisResultStore(config=make_config(), redis=URL, timeout=60)
    result = make_result()
    store.save(result)
    state = store.__getstate__()
    assert not {"_client", "_scripts", "_codec"} & set(state)
    copy = pickle.loads(pickle.dumps(store))
    assert copy._client is None and copy.get(result.id) == result
    assert copy.timeout == 60 and copy.address == store.address


def test_save_many_is_one_script_call(make_config):
    store = RedisResultStore(config=make_config(save_limit=3), redis=URL)
    calls = []
    scripts = store._script()
    original = scripts.direct.evalsha
    scripts.direct.evalsha = lambda script, *a: calls.append(script) or original(script, *a)
    batch = [make_result(n, group="batch", success=n % 4 != 0) for n in range(50)]
    saved = store.save_many(batch)
    assert calls == [scripts.save] and len(saved) == 50
    assert store.count_group("batch") == 3 + len(range(0, 50, 4)), "3 successes + failures"


def test_save_limit_per_name_and_func(make_config):
    by_name = RedisResultStore(config=make_config(save_limit=1, save_limit_per="name"),
                               redis=URL)
    a = [make_result(n, name="a") for n in range(3)]
    b = [make_result(n, name="b") for n in range(2)]
    by_name.save_many(a + b)
    assert [by_name.get(r.id) for r in a + b] == [None, None, a[2], None, b[1]]
    by_func = RedisResultStore(config=make_config(save_limit=2, save_limit_per="func"),
                               redis=URL)
    floors = [make_result(n, func="math.floor") for n in range(3)]
    ceils = [make_result(n, func="math.ceil", group=None) for n in range(3)]
    for r in floors + ceils:
        by_func.save(r)
    assert [by_func.get(r.id) is not None for r in floors + ceils] == [False, True, True] * 2


def test_save_limit_per_group_counts_results_without_a_group_together(make_config):
    store = RedisResultStore(config=make_config(save_limit=1, save_limit_per="group"),
                             redis=URL)
    loose = [make_result(n) for n in range(2)]
    grouped = make_result(group="")  # the empty group is a group, not None
    store.save_many([*loose, grouped])
    assert [store.get(r.id) for r in (*loose, grouped)] == [None, loose[1], grouped]


def test_pruned_results_leave_every_index(make_config, raw_redis):
    store = RedisResultStore(config=make_config(save_limit=2), redis=URL)
    made = [make_result(n, group="pruned", name="same") for n in range(5)]
    store.save_many(made)
    p = store.prefix
    kept = [r.id.encode() for r in made[3:]]
    assert raw_redis.zrange(f"{p}group:pruned", 0, -1) == kept
    assert raw_redis.zrange(f"{p}name:same", 0, -1) == kept
    assert raw_redis.zrange(f"{p}successes", 0, -1) == kept
    assert store.get_by_name("same") == made[4]


# -- several processes


@pytest.mark.slow
def test_processes_racing_keep_the_save_rules(make_config):
    processes, contested, failing, limited, limit = 4, 30, 30, 25, 5
    name = make_config().name
    contested_ids = [f"{name}-contested-{n}" for n in range(contested)]
    failing_ids = [f"{name}-failing-{n}" for n in range(failing)]
    racers = []
    for p in range(processes):
        spec = {"name": name, "secret": "qhive-store-redis-test-secret", "redis": URL,
                "process": p, "succeeds": p == 0, "contested": contested_ids, "rounds": 6,
                "failing": failing_ids, "limited": limited, "save_limit": limit}
        racers.append(subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("racer.py")), json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        for racer in racers:
            line = racer.stdout.readline()
            assert line == "ready\n", f"racer did not start: {line}{racer.stderr.read()}"
        for racer in racers:  # all at once
            racer.stdin.write("go\n")
            racer.stdin.flush()
        for racer in racers:
            out, err = racer.communicate(timeout=120)
            assert racer.returncode == 0 and out == "done\n", err
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
    store = RedisResultStore(config=make_config(name=name), redis=URL)
    lost = [i for i in contested_ids if not (r := store.get(i)) or not r.success]
    assert not lost, f"{len(lost)} successes were replaced by later failures"
    counts = {store.get(i).attempt_count for i in failing_ids}
    assert counts == {processes}, f"each of {processes} failures counts once, got {counts}"
    assert store.count_group("contested") == contested
    assert store.count_group("failing", failures=True) == failing
    survivors = store.get_group("limited")
    newest = [f"{name}-limited-{m}" for m in range(processes * limited - 1,
                                                    processes * limited - 1 - limit, -1)]
    assert [r.id for r in survivors] == newest, "save_limit keeps exactly the newest"

"""What the cache store does beyond the contract: timeouts, the key layout, ALT
clusters, unreadable values, the secret key, odd names and concurrent processes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import pickle
import subprocess
import time
import uuid
import warnings

import pytest
from qhive.config import Config
from qhive.contracts import TaskResult
from qhive.errors import ConfigError
from qhive_store_cache.store import CacheResultStore

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def make_result(n: int = 0, **fields) -> TaskResult:
    stopped = NOW + dt.timedelta(seconds=n)
    defaults = {"id": uuid.uuid4().hex, "name": f"cachetest-task-{uuid.uuid4().hex[:8]}",
                "func": "math.floor", "started": stopped - dt.timedelta(seconds=1),
                "stopped": stopped, "success": True, "result": n}
    return TaskResult(**{**defaults, **fields})


def raw_cache(backend):
    from django.core.cache import caches

    return caches[backend.alias]


# -- building


def test_timeout_comes_from_config_cached_when_not_given():
    assert CacheResultStore(config=Config.from_dict({"cached": 30})).timeout == 30
    assert CacheResultStore(config=Config.from_dict({"cached": True})).timeout is None
    assert CacheResultStore(config=Config.from_dict({"cached": False})).timeout is None
    config = Config.from_dict({"cached": 30})
    assert CacheResultStore(config=config, timeout=5).timeout == 5
    assert CacheResultStore(config=config, timeout=None).timeout is None, "None is for ever"
    assert CacheResultStore(config=config, timeout=2.5).timeout == 3, "whole seconds, rounded up"


@pytest.mark.parametrize("timeout", [0, -1, True, "60"])
def test_a_bad_timeout_is_a_config_error(timeout):
    with pytest.raises(ConfigError, match=r"qhive-store-cache: timeout must be a number"):
        CacheResultStore(timeout=timeout)


def test_building_touches_no_cache(django_project):
    # An alias that does not exist: nothing fails until the store is used.
    store = CacheResultStore(config=Config.from_dict({"cache": "nowhere"}, secret_key="k"))
    assert store.cache_alias == "nowhere"
    with pytest.raises(ConfigError, match=r"no cache 'nowhere' in settings.CACHES.*"
                                          r"Q_CLUSTER\['cache'\]"):
        store.get("x")


def test_without_a_secret_key_the_first_use_raises(cache_backend):
    store = CacheResultStore(config=Config(name="no-key"), cache=cache_backend.alias)
    message = r"qhive-store-cache: cannot sign stored results: .*needs a secret key"
    with pytest.raises(ConfigError, match=message):
        store.get(uuid.uuid4().hex)
    with pytest.raises(ConfigError, match=message):
        store.save(make_result())


def test_the_entry_point_builds_the_store_as_the_pipeline_does(make_config):
    from qhive.drivers import build_driver

    config = make_config(cached=60)
    store = build_driver("result_store", "cache", {"timeout": 10}, config=config)
    assert isinstance(store, CacheResultStore) and store.timeout == 10
    assert build_driver("result_store", "cache", {}, config=config).timeout == 60


# -- how results are kept


def test_keys_start_with_the_project_name(cache_backend, make_config):
    store = CacheResultStore(config=make_config(), cache=cache_backend.alias)
    result = make_result(group="layout")
    store.save(result)
    prefix = f"qhive:{store.config.name}:"
    cache = raw_cache(cache_backend)
    assert isinstance(cache.get(f"{prefix}success:{result.id}"), bytes)
    assert cache.get(f"{prefix}group:layout:1") == result.id
    assert cache.get(f"{prefix}group:layout:member:{result.id}") == 1
    assert cache.get(f"{prefix}name:{result.name}").endswith(f":{result.id}")
    if cache_backend.name == "database":  # really on PostgreSQL
        from django.db import connections

        with connections["postgres"].cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {cache._table} WHERE cache_key LIKE %s",
                           [f"%{prefix}success:{result.id}"])
            assert cursor.fetchone()[0] == 1
    store.delete_group("layout")
    assert cache.get(f"{prefix}group:layout:1") is None
    assert cache.get(f"{prefix}group:layout:n") is None
    assert cache.get(f"{prefix}group:layout:member:{result.id}") is None


def test_a_result_expires_after_the_timeout(cache_backend, make_config):
    config = make_config()
    # The database cache cuts expiry times to whole seconds: a timeout of n seconds
    # keeps a result n-1 to n seconds there.
    timeout = 2 if cache_backend.name == "database" else 1
    brief = CacheResultStore(config=config, cache=cache_backend.alias, timeout=timeout)
    lasting = CacheResultStore(config=config, cache=cache_backend.alias, timeout=None)
    short = make_result(group="brief")
    long = make_result(group="lasting")
    brief.save(short)
    lasting.save(long)
    assert brief.get(short.id) == short and brief.get_by_name(short.name) == short
    time.sleep(timeout + 0.3)
    assert brief.get(short.id) is None
    assert brief.get_by_name(short.name) is None
    assert brief.get_group("brief", failures=True) == [] and brief.count_group("brief") == 0
    assert raw_cache(cache_backend).get(f"{brief.prefix}group:brief:n") is None, (
        "the group's index keys expire with its results")
    assert lasting.get(long.id) == long and lasting.get_group("lasting") == [long]
    lasting.delete_group("lasting")


def test_results_of_an_alt_cluster_are_found_by_the_root_cluster(cache_backend, make_config):
    q_cluster = {"name": f"cachetest-{uuid.uuid4().hex[:8]}",
                 "ALT_CLUSTERS": {"long": {"timeout": 600}}}
    alt_config = make_config(cluster="long", **q_cluster)
    assert alt_config.cluster_name == "long" and alt_config.name == q_cluster["name"]
    alt = CacheResultStore(config=alt_config, cache=cache_backend.alias)
    root = CacheResultStore(config=make_config(**q_cluster), cache=cache_backend.alias)
    result = make_result(group="routed", cluster="long")
    alt.save(result)
    assert root.get(result.id) == result
    assert root.get_by_name(result.name) == result
    assert root.get_group("routed") == [result]
    other_project = CacheResultStore(config=make_config(), cache=cache_backend.alias)
    assert other_project.get(result.id) is None, "another project name sees nothing"
    root.delete_group("routed")


def test_an_unreadable_value_reads_as_absent(cache_backend, make_config, caplog):
    config = make_config()
    store = CacheResultStore(config=config, cache=cache_backend.alias)
    victim, other = make_result(group="tampered"), make_result(1, group="tampered")
    store.save_many([victim, other])
    key = f"{store.prefix}success:{victim.id}"
    cache = raw_cache(cache_backend)
    signed_elsewhere = CacheResultStore(config=dataclasses.replace(config, secret_key="other"))
    packages = {
        "altered bytes": cache.get(key)[:-3] + b"xyz",
        "another secret key": signed_elsewhere.codec.encode({"qhive_result": 1}),
        "another task's result": cache.get(f"{store.prefix}success:{other.id}"),
        "a task package, not a result": store.codec.encode({"func": "os.system"}),
        "not bytes": "a string",
    }
    for what, value in packages.items():
        cache.set(key, value)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="qhive.store.cache"):
            assert store.get(victim.id) is None, f"{what} must read as absent"
        assert victim.id in caplog.text and "treated as absent" in caplog.text, what
        assert store.get_group("tampered") == [other], what
    assert store.save(victim) == victim, "a save replaces an unreadable value"
    assert store.get(victim.id) == victim
    store.delete_group("tampered")


def test_a_pickled_copy_leaves_the_codec_behind(cache_backend, make_config):
    store = CacheResultStore(config=make_config(), cache=cache_backend.alias, timeout=60)
    result = make_result()
    store.save(result)
    assert "_codec" not in store.__getstate__()
    copy = pickle.loads(pickle.dumps(store))
    assert (copy.timeout, copy.cache_alias, copy.prefix) == (60, store.cache_alias, store.prefix)
    assert copy.get(result.id) == result
    store.delete(result.id)


def test_a_value_the_serializer_cannot_encode_keeps_the_task(cache_backend, make_config):
    store = CacheResultStore(config=make_config(serializer="json"), cache=cache_backend.alias)
    bad_result = make_result(result=object())
    saved = store.save(bad_result)
    assert not saved.success and "qhive could not store the result" in saved.result
    assert store.get(bad_result.id) == saved
    bad_args = make_result(1, success=False, args=(object(),), result="boom")
    saved = store.save(bad_args)
    assert saved.args[0].startswith("<object object") and saved.result == "boom"
    assert store.get(bad_args.id) == saved
    for r in (bad_result, bad_args):
        store.delete(r.id)


def test_groups_and_names_of_any_shape(cache_backend, make_config):
    from django.core.cache import CacheKeyWarning

    store = CacheResultStore(config=make_config(name="a project/with spaces"),
                             cache=cache_backend.alias)
    group, name = "grüppe mit Leerzeichen: 日本 " * 20, "name\twith\ncontrol " * 30
    result = make_result(group=group, name=name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheKeyWarning)  # keys fit Memcached too
        store.save(result)
        assert store.get_group(group) == [result] and store.get_by_name(name) == result
        assert store.get_group(group[:-1]) == []
        assert store.delete_group(group) == 1


def test_deleted_members_are_skipped_and_a_resave_is_not_listed_twice(cache_backend,
                                                                       make_config):
    store = CacheResultStore(config=make_config(), cache=cache_backend.alias)
    first, second = make_result(group="g"), make_result(1, group="g", success=False)
    store.save_many([first, second])
    assert store.delete(first.id) is True and store.delete(first.id) is False
    assert store.get_group("g", failures=True) == [second]
    retried = dataclasses.replace(second, stopped=second.stopped + dt.timedelta(seconds=5),
                                  result="error 2")
    assert store.save(retried).attempt_count == 2
    store.save(first)
    assert [r.id for r in store.get_group("g", failures=True)] == [second.id, first.id]
    assert store.count_group("g") == 2 and store.count_group("g", failures=True) == 1
    assert store.delete_group("g") == 2


@pytest.mark.parametrize("success", [True, False])
def test_a_result_readable_by_id_is_readable_by_name_and_in_its_group(cache_backend, make_config,
                                                                      monkeypatch, success):
    # A waiter woken by the result looks it up by name next: the indexes come first.
    store = CacheResultStore(config=make_config(), cache=cache_backend.alias)
    result = make_result(group=f"g-{uuid.uuid4().hex[:6]}", success=success)
    seen = []
    cache = raw_cache(cache_backend)
    key = store._success_key(result.id) if success else store._failure_key(result.id)
    original_get = cache.get
    for method in ("add", "set"):
        original = getattr(cache, method)

        def writing(k, *args, _original=original, **kwargs):
            if k == key:  # the indexes as they are when the result's own key is written
                seen.append((original_get(store._name_key(result.name)),
                             original_get(store._member_key(result.group, result.id)),
                             store.get_by_name(result.name)))
            return _original(k, *args, **kwargs)

        monkeypatch.setattr(cache, method, writing)
    monkeypatch.setattr(store, "_cache", lambda: cache)
    store.save(result)
    # The name and the group point at the result already, which reads as absent until
    # its key is written.
    [(name_index, member_slot, by_name)] = seen
    assert name_index.endswith(f":{result.id}") and member_slot == 1 and by_name is None
    monkeypatch.undo()
    assert store.get_by_name(result.name) == result
    assert store.get_group(result.group, failures=True) == [result]


# -- several processes


@pytest.mark.slow
def test_concurrent_saves_of_one_group_lose_no_member(shared_backend, make_config,
                                                       django_project):
    processes, each = 4, 40
    name, group = make_config().name, f"crowd-{uuid.uuid4().hex[:8]}"
    savers = []
    for p in range(processes):
        spec = {"backend": shared_backend.name, "token": shared_backend.token, "name": name,
                "group": group, "count": each, "prefix": f"p{p}-{uuid.uuid4().hex[:6]}-"}
        savers.append((spec, subprocess.Popen(
            [*shared_backend.saver(), json.dumps(spec)], env=django_project.env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    try:
        for _, saver in savers:
            line = saver.stdout.readline()
            assert line == "ready\n", f"saver did not start: {line}{saver.stderr.read()}"
        for _, saver in savers:  # all at once
            saver.stdin.write("go\n")
            saver.stdin.flush()
        for _, saver in savers:
            out, err = saver.communicate(timeout=120)
            assert saver.returncode == 0 and out == "done\n", err
    finally:
        for _, saver in savers:
            if saver.poll() is None:
                saver.kill()
    store = CacheResultStore(config=make_config(name=name), cache=shared_backend.alias)
    expected = {f"{spec['prefix']}{n:05d}" for spec, _ in savers for n in range(each)}
    listed = store.get_group(group, failures=True)
    assert {r.id for r in listed} == expected, f"{len(expected - {r.id for r in listed})} lost"
    assert len(listed) == len(expected), "no member is listed twice"
    assert store.count_group(group) == processes * each
    assert store.count_group(group, failures=True) == processes * len(range(0, each, 3))
    assert store.delete_group(group) == processes * each

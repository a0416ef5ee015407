"""Where cluster statistics live (``choose_store``) and why they can be trusted:
signed with the cluster's signer, so a stat of another ``SECRET_KEY`` or an
altered one is never shown (issue 11, items 14 and 18)."""

import logging
import uuid

import pytest
from qhive import plugins
from qhive.builtin.memory import MemoryBroker, MemoryResultStore
from qhive.cluster import Cluster, Stat
from qhive.cluster.stat import StatStore, choose_store
from qhive.codec import build_codec
from qhive.config import Config
from qhive.contracts import Capabilities


def config(key="stat-key", name=None, fallbacks=()):
    return Config.from_dict({"name": name or f"p{uuid.uuid4().hex[:10]}"}, secret_key=key,
                            secret_key_fallbacks=fallbacks)


def store_of(broker, cfg):
    return StatStore(broker, build_codec(cfg).signer, cfg.name, where="the broker")


def make(cfg, **fields):
    return Stat(uuid.uuid4().hex, cfg.name, "h1", 321, **fields)


# --------------------------------------------------------------------------- signing


def test_a_stat_saved_with_another_key_is_not_listed():
    mine = config("the-right-key")
    theirs = config("another-key", name=mine.name)  # same project, another SECRET_KEY
    broker = MemoryBroker("q")
    good, stranger = make(mine), make(theirs)
    store_of(broker, mine).save(good, ttl=60)
    store_of(broker, theirs).save(stranger, ttl=60)

    reader = store_of(broker, mine)
    assert [s.cluster_id for s in reader.get_all()] == [good.cluster_id]
    assert reader.get(good.cluster_id) == good
    assert reader.get(stranger.cluster_id) is None
    # and the other way round: without our key, our cluster is invisible
    assert [s.cluster_id for s in store_of(broker, theirs).get_all()] == [stranger.cluster_id]


def test_a_tampered_stat_is_not_listed():
    cfg, broker = config(), MemoryBroker("q")
    store = store_of(broker, cfg)
    honest, forged = make(cfg), make(cfg, workers=[1])
    store.save(honest, ttl=60)
    store.save(forged, ttl=60)
    key = Stat.key_prefix(cfg.name) + forged.cluster_id
    raw = broker.get_stat(key)
    assert b'"workers": [1]' in raw  # JSON inside, readable: never a pickle
    broker.set_stat(key, raw.replace(b'"workers": [1]', b'"workers": [7]'), 60)

    assert [s.cluster_id for s in store.get_all()] == [honest.cluster_id]
    assert store.get(forged.cluster_id) is None


def test_an_unsigned_stat_is_not_listed():
    cfg, broker = config(), MemoryBroker("q")
    stat = make(cfg)
    broker.set_stat(Stat.key_prefix(cfg.name) + stat.cluster_id, stat.dumps(), 60)
    assert store_of(broker, cfg).get_all() == []


def test_a_stat_of_another_project_copied_here_is_not_listed():
    mine, other = config(), config()  # same key, another name (the salt)
    broker, stat = MemoryBroker("q"), make(other)
    store_of(broker, other).save(stat, ttl=60)
    raw = broker.get_stat(Stat.key_prefix(other.name) + stat.cluster_id)
    broker.set_stat(Stat.key_prefix(mine.name) + stat.cluster_id, raw, 60)
    assert store_of(broker, mine).get_all() == []


def test_a_signed_task_package_is_not_a_stat():
    cfg, broker = config(), MemoryBroker("q")
    package = build_codec(cfg).encode({"id": "x", "func": "math.floor"})
    broker.set_stat(Stat.key_prefix(cfg.name) + "x", package, 60)
    assert store_of(broker, cfg).get_all() == []


def test_an_old_key_in_the_fallbacks_still_verifies():
    old = config("old-key")
    rotated = config("new-key", name=old.name, fallbacks=["old-key"])
    broker, stat = MemoryBroker("q"), make(old)
    store_of(broker, old).save(stat, ttl=60)
    assert store_of(broker, rotated).get(stat.cluster_id) == stat


def test_the_stat_helpers_of_a_broker_sign_with_its_key():
    cfg = config()
    broker = MemoryBroker("q", config=cfg)
    stat = make(cfg)
    stat.save(broker, cfg.name, ttl=60)
    assert Stat.get_all(broker, cfg.name) == [stat]
    stranger = MemoryBroker("q", config=config("another-key", name=cfg.name))
    assert Stat.get_all(stranger, cfg.name) == []
    assert Stat.get(stranger, cfg.name, stat.cluster_id) is None


# --------------------------------------------------------------------------- where


class NoStatsBroker(MemoryBroker):
    """A third-party broker with no place for statistics (SQS, IronMQ)."""

    capabilities = Capabilities(receipts=True, bulk=True, blocking=True, stats=False)


class StatsStore(MemoryResultStore):
    """A result store that keeps statistics (in this process)."""

    keeps_stats = True
    kept: dict = {}

    def set_stat(self, key, value, ttl):
        self.kept[key] = value

    def get_stat(self, key):
        return self.kept.get(key)

    def get_stats(self, prefix):
        return [v for k, v in self.kept.items() if k.startswith(prefix)]


def never():
    raise AssertionError("the result store was built although the broker keeps statistics")


def test_the_broker_keeps_them_when_it_can():
    cfg, broker = config(), MemoryBroker("q")
    chosen = choose_store(broker, never, build_codec(cfg).signer, cfg.name)
    assert chosen.keeper is broker and "MemoryBroker" in chosen.where


def test_else_the_result_store_when_it_can():
    cfg, store = config(), StatsStore()
    chosen = choose_store(NoStatsBroker("q"), lambda: store, build_codec(cfg).signer, cfg.name)
    assert chosen.keeper is store and "StatsStore" in chosen.where
    stat = make(cfg)
    chosen.save(stat, ttl=60)
    assert chosen.get_all() == [stat]


def test_else_nowhere_saying_why():
    cfg = config()
    chosen = choose_store(NoStatsBroker("q"), MemoryResultStore, build_codec(cfg).signer,
                          cfg.name)
    assert chosen.keeper is None
    for words in ("NoStatsBroker", "Capabilities.stats", "MemoryResultStore", "keeps_stats",
                  "'orm', 'redis'"):
        assert words in chosen.reason
    chosen.save(make(cfg), ttl=60)  # does nothing, raises nothing
    assert chosen.get_all() == [] and chosen.get("x") is None


def test_a_result_store_keeps_no_stats_unless_it_says_so():
    store = MemoryResultStore()
    assert store.keeps_stats is False
    with pytest.raises(NotImplementedError, match="MemoryResultStore keeps no statistics"):
        store.set_stat("k", b"v", 1)


@pytest.fixture
def registered(fresh_plugins):
    class Registrar:
        @plugins.hookimpl
        def qhive_register_drivers(self, registry):
            registry.add("broker", "nostats", NoStatsBroker)
            registry.add("result_store", "statsmemory", StatsStore)
            registry.add("result_store", "plainmemory", MemoryResultStore)

    plugins.get_plugin_manager().register_checked(Registrar())


def test_the_cluster_saves_its_stat_in_the_result_store_when_the_broker_cannot(registered,
                                                                             caplog):
    cfg = Config.from_dict({"name": f"p{uuid.uuid4().hex[:10]}", "broker": "nostats",
                            "result_store": "statsmemory"}, secret_key="stat-key")
    cluster = Cluster(cfg)
    with caplog.at_level(logging.INFO, logger="qhive.cluster"):
        cluster._save_stat()
        cluster._save_stat()
    found = Stat.store_for(cluster.pipeline).get_all()
    assert [s.cluster_id for s in found] == [cluster.cluster_id]
    said = [r.getMessage() for r in caplog.records if "statistics" in r.getMessage()]
    assert len(said) == 1 and "the result store (StatsStore" in said[0], said


def test_a_cluster_that_can_keep_no_stats_says_why_once(registered, caplog):
    cfg = Config.from_dict({"name": f"p{uuid.uuid4().hex[:10]}", "broker": "nostats",
                            "result_store": "plainmemory"}, secret_key="stat-key")
    cluster = Cluster(cfg)
    with caplog.at_level(logging.INFO, logger="qhive.cluster"):
        for _ in range(3):
            cluster._save_stat()
    said = [r for r in caplog.records if "statistics" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert "no cluster statistics can be kept" in said[0].getMessage()
    assert "NoStatsBroker" in said[0].getMessage()

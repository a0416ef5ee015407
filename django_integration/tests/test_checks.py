"""System checks: config errors naming the key, drivers that do not load, missing apps."""

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from qhive.builtin.memory import MemoryBroker
from qhive.plugins import hookimpl
from qhive_django.conf import plugin_manager


class NeedsAnAppBroker(MemoryBroker):
    """A broker whose models live in a Django app this project lacks."""

    django_app = "qhive_broker_missing"


def qhive_messages():
    return [(m.id, m.msg, m.hint) for m in run_checks(tags=["qhive"])]


def test_a_good_config_passes(q_cluster):
    q_cluster()
    assert qhive_messages() == []


def test_unknown_key_is_an_error_naming_it(q_cluster):
    q_cluster(timout=30, workers="four")
    messages = qhive_messages()
    assert [m[0] for m in messages] == ["qhive.E001", "qhive.E001"]
    assert "unknown Q_CLUSTER key 'timout' — did you mean 'timeout'?" in messages[0][1]
    assert "Q_CLUSTER['workers'] must be an int >= 1" in messages[1][1]


def test_unknown_broker_suggests_the_installed_one(q_cluster):
    q_cluster(broker="memroy")
    [(code, message, hint)] = qhive_messages()
    assert code == "qhive.E002"
    assert "unknown broker 'memroy'" in message and "did you mean 'memory'?" in message
    assert hint is None  # a typo, not a package to install


def test_broken_driver_in_an_alt_cluster_is_found(q_cluster):
    q_cluster(ALT_CLUSTERS={"long": {"result_store": "no_such_module.Store"}})
    [(code, message, _)] = qhive_messages()
    assert code == "qhive.E002" and "no_such_module" in message


def test_plugin_app_missing_from_installed_apps(q_cluster):
    q_cluster(broker=f"{__name__}:NeedsAnAppBroker")
    [(code, message, hint)] = qhive_messages()
    assert code == "qhive.E003"
    assert "'qhive_broker_missing', which is not in INSTALLED_APPS" in message
    assert hint == "add 'qhive_broker_missing' to INSTALLED_APPS and run manage.py migrate"


def test_plugin_check_config_hook_is_reported(q_cluster):
    class Strict:
        @hookimpl
        def qhive_check_config(self, config):
            return [f"Q_CLUSTER['workers'] is {config.workers}; this plugin wants 8"]

    q_cluster(workers=2)
    pm = plugin_manager()
    plugin = Strict()
    pm.register(plugin)
    try:
        assert qhive_messages() == [
            ("qhive.E004", "Q_CLUSTER['workers'] is 2; this plugin wants 8", None)]
    finally:
        pm.unregister(plugin)


def test_warnings_for_legal_but_doubtful_settings(q_cluster):
    q_cluster(timeout=90, retry=60)
    [(code, message, _)] = qhive_messages()
    assert code == "qhive.W001" and "retry" in message


def test_manage_py_check_fails_on_a_bad_config(q_cluster):
    q_cluster(broker="memroy")
    with pytest.raises(SystemCheckError, match=r"qhive\.E002"):
        call_command("check")


def test_hooks_are_registered_again_after_a_manager_reset(q_cluster, fresh_plugins):
    from qhive.plugins import get_plugin_manager
    from qhive_django import hooks

    q_cluster()
    assert plugin_manager().is_registered(hooks)
    assert get_plugin_manager().is_registered(hooks)


# --------------------------------------------------------------------------- issue 11


class NeedsAPath(MemoryBroker):
    """A broker class with a required option of its own."""

    def __init__(self, queue="default", *, config=None, path):
        super().__init__(queue, config=config)


class DjangoQ2Broker:
    def __init__(self, list_key=None):
        self.list_key = list_key


def by_class(q_cluster, broker_class, **settings):
    return q_cluster(memory=False, result_store="memory", broker_class=broker_class, **settings)


def test_a_good_broker_class_passes(q_cluster):
    by_class(q_cluster, "qhive.builtin.memory.MemoryBroker")
    assert qhive_messages() == []


def test_a_broker_class_that_cannot_be_imported(q_cluster):
    by_class(q_cluster, "no_such_module.brokers.Custom")
    [(code, message, hint)] = qhive_messages()
    assert code == "qhive.E002"
    assert message.startswith("Q_CLUSTER['broker_class']: broker 'no_such_module.brokers.Custom'"
                              " cannot be imported: ModuleNotFoundError")
    assert "pip install" not in (hint or "") and "qhive.contracts.Broker subclass" in hint


def test_a_broker_class_that_cannot_be_built(q_cluster):
    by_class(q_cluster, f"{__name__}:NeedsAPath")
    [(code, message, _)] = qhive_messages()
    assert code == "qhive.E002"
    assert "of Q_CLUSTER['broker_class'] cannot be built" in message and "'path'" in message
    by_class(q_cluster, f"{__name__}:NeedsAPath", broker_options={"path": "q.db", "colour": 1})
    [(code, message, _)] = qhive_messages()
    assert "does not take option(s) 'colour' in Q_CLUSTER['broker_options']" in message
    by_class(q_cluster, f"{__name__}:NeedsAPath", broker_options={"path": "q.db"})
    assert qhive_messages() == []


def test_a_broker_class_that_is_not_a_qhive_broker(q_cluster):
    by_class(q_cluster, f"{__name__}:DjangoQ2Broker")
    [(code, message, _)] = qhive_messages()
    assert code == "qhive.E002" and "must name a subclass of qhive.contracts.Broker" in message


def test_pip_hint_only_for_first_party_names(q_cluster, monkeypatch):
    # Names of first-party packages that are not installed here (every real one may be).
    from qhive_django import checks as qhive_checks

    for kind, name in (("broker", "nats"), ("reporter", "pagerduty")):
        prefix, names = qhive_checks._FIRST_PARTY[kind]
        monkeypatch.setitem(qhive_checks._FIRST_PARTY, kind, (prefix, (*names, name)))
    q_cluster(broker="memroy")  # a typo of an installed broker: "did you mean" says it all
    [(_, message, hint)] = qhive_messages()
    assert "did you mean 'memory'?" in message and hint is None
    q_cluster(broker="nats")
    [(_, message, hint)] = qhive_messages()
    assert "unknown broker 'nats'" in message
    assert hint == "install the package that provides it, e.g. pip install qhive-broker-nats"
    q_cluster(broker="acme")  # no such package of ours
    [(_, message, hint)] = qhive_messages()
    assert "unknown broker 'acme'" in message and hint is None
    q_cluster(error_reporter={"pagerduty": {"key": "k"}})
    [(code, message, hint)] = qhive_messages()
    # A warning: the cluster runs without that reporter, the others still report.
    assert code == "qhive.W003" and "task errors will not be sent to 'pagerduty'" in message
    assert hint.endswith("pip install qhive-reporter-pagerduty")


LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
SHARED = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache",
                      "LOCATION": "qhive_cache"}}
DUMMY = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}


@pytest.mark.parametrize(("caches", "settings", "expected"), [
    (LOCMEM, {"cached": True}, "qhive.W002"),
    (LOCMEM, {"cached": 60}, "qhive.W002"),
    (LOCMEM, {"result_store": "cache"}, "qhive.W002"),
    (DUMMY, {"cached": True, "sync": True}, "qhive.W002"),  # keeps nothing, even in-process
    (LOCMEM, {"cached": True, "sync": True}, None),  # one process: it sees its own cache
    (SHARED, {"cached": True}, None),
    (LOCMEM, {}, None),  # caching not configured: nothing to say
    (LOCMEM, {"cached": True, "cache": "results"}, "qhive.E006"),
    (SHARED, {"result_store": "cache", "result_store_options": {"cache": "gone"}}, "qhive.E006"),
])
def test_cached_results_need_a_cache_processes_share(q_cluster, caches, settings, expected):
    from django.test import override_settings

    q_cluster(**settings)
    with override_settings(CACHES=caches):
        messages = qhive_messages()
    assert [m[0] for m in messages] == ([expected] if expected else [])


def test_the_cache_warning_says_why_and_what_to_do(q_cluster):
    from django.test import override_settings

    q_cluster(cached=True)
    with override_settings(CACHES=LOCMEM):
        [(_, message, hint)] = qhive_messages()
    assert message.startswith("Q_CLUSTER['cached'] keeps results in the cache 'default' "
                              "(LocMemCache), which each process keeps to itself")
    assert "Redis" in hint and "Q_CLUSTER['cache']" in hint
    q_cluster(cached=True, cache="results")
    with override_settings(CACHES=LOCMEM):
        [(_, message, _)] = qhive_messages()
    assert message == ("Q_CLUSTER['cache'] names the cache 'results', which is not in "
                       "settings.CACHES (it has: 'default'); Q_CLUSTER['cached'] keeps "
                       "results there")


def test_the_extras_named_in_hints_are_the_packages_extras():
    """``pip install "qhive-django[x]"`` in a hint is only as good as pyproject.toml's extras."""
    import re
    import tomllib
    from pathlib import Path

    from qhive_django import checks as qhive_checks

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    named = set()
    for extra, requirements in extras.items():
        for requirement in requirements:
            dist = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
            for kind, (prefix, _names) in qhive_checks._FIRST_PARTY.items():
                if dist == f"{prefix}-{extra}":
                    named.add((kind, extra))
    assert named == qhive_checks._EXTRAS

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
    assert "pip install qhive-broker-memroy" in hint


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

"""The pluggy plugin manager: lazy, guarded loading, switches, tracing."""

import inspect
import logging

import pytest
from qhive import hookspecs, plugins
from qhive.config import Config
from qhive.errors import PluginError

GOOD = """
from qhive.plugins import hookimpl
seen = []

@hookimpl
def qhive_pre_enqueue(task):
    task["stamped"] = True
"""

BROKEN = "raise RuntimeError('plugin exploded at import')\n"

WRONG_HOOK = """
from qhive.plugins import hookimpl

@hookimpl
def qhive_no_such_hook(task):
    pass
"""


@pytest.fixture
def three_plugins(fake_dist):
    fake_dist("qhive-good", {"qhive_good.py": GOOD}, {"qhive.plugins": {"good": "qhive_good"}})
    fake_dist("qhive-broken", {"qhive_broken.py": BROKEN},
              {"qhive.plugins": {"broken": "qhive_broken"}}, version="2.0")
    fake_dist("qhive-wrong", {"qhive_wrong.py": WRONG_HOOK},
              {"qhive.plugins": {"wrong": "qhive_wrong"}})


def statuses(pm):
    return {s.name: s for s in pm.statuses}


def test_manager_is_built_once_and_lazily(fresh_plugins):
    assert plugins._manager is None
    pm = plugins.get_plugin_manager()
    assert plugins.get_plugin_manager() is pm


def test_broken_plugins_are_skipped_and_reported(three_plugins, caplog):
    pm = plugins.get_plugin_manager()
    found = statuses(pm)
    assert found["good"].status == "ok"
    assert found["broken"].status == "failed"
    assert "plugin exploded at import" in found["broken"].error
    assert found["wrong"].status == "failed"
    assert "qhive_no_such_hook" in found["wrong"].error
    # the good one works
    task = {}
    pm.hook.qhive_pre_enqueue(task=task)
    assert task == {"stamped": True}
    # logged once, naming the distribution and how to disable it
    errors = [r.getMessage() for r in caplog.records if r.name == "qhive.plugins"]
    assert sum("qhive-broken 2.0" in m for m in errors) == 1
    assert any("QHIVE_DISABLED_PLUGINS=broken" in m for m in errors)


def test_strict_mode_raises_naming_the_plugin(three_plugins):
    config = Config.from_dict({"plugins": {"strict": True, "disabled": ["wrong"]}})
    with pytest.raises(PluginError, match=r"'broken' from qhive-broken 2.0 failed to load"):
        plugins.get_plugin_manager(config)


def test_strict_from_environment(three_plugins, monkeypatch):
    monkeypatch.setenv("QHIVE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError):
        plugins.get_plugin_manager()


def test_disable_by_config_and_distribution_name(three_plugins):
    import sys

    config = Config.from_dict({"plugins": {"disabled": ["broken", "qhive-wrong"]}})
    pm = plugins.get_plugin_manager(config)
    found = statuses(pm)
    assert found["broken"].status == "disabled"
    assert found["wrong"].status == "disabled"
    assert "qhive_wrong" not in sys.modules


def test_environment_disable_list_wins(three_plugins, monkeypatch):
    monkeypatch.setenv("QHIVE_DISABLED_PLUGINS", "good, broken")
    config = Config.from_dict({"plugins": {"disabled": ["wrong"]}})
    found = statuses(plugins.get_plugin_manager(config))
    assert (found["good"].status, found["broken"].status, found["wrong"].status) == (
        "disabled", "disabled", "failed")


def test_trace_logs_hook_calls(fresh_plugins, monkeypatch, caplog):
    monkeypatch.setenv("QHIVE_TRACE_PLUGINS", "1")
    pm = plugins.get_plugin_manager()
    with caplog.at_level(logging.INFO, logger="qhive.trace"):
        pm.hook.qhive_pre_enqueue(task={"id": "abc"})
    traced = [r.getMessage() for r in caplog.records if r.name == "qhive.trace"]
    assert any("qhive_pre_enqueue" in m and "abc" in m for m in traced), traced


def test_drivers_registered_from_code(fresh_plugins):
    from qhive.builtin.memory import MemoryBroker

    class LocalBroker(MemoryBroker):
        pass

    class Registrar:
        @plugins.hookimpl
        def qhive_register_drivers(self, registry):
            registry.add("broker", "local", LocalBroker)

    pm = plugins.get_plugin_manager()
    pm.register_checked(Registrar())
    from qhive.drivers import load_driver

    assert load_driver("broker", "local", pm.driver_registry) is LocalBroker


def test_every_hookspec_is_documented():
    specs = [f for name, f in vars(hookspecs).items() if name.startswith("qhive_")]
    assert len(specs) >= 13
    for spec in specs:
        doc = inspect.getdoc(spec) or ""
        assert doc, f"{spec.__name__} has no docstring"
        for param in inspect.signature(spec).parameters:
            assert f":param {param}:" in doc, f"{spec.__name__} does not document {param}"


def test_every_hookspec_says_where_it_runs():
    # What the hookspec marker puts on a function: a new hook is found without a list.
    mark = f"{hookspecs.hookspec.project_name}_spec"
    specs = [f for f in vars(hookspecs).values() if inspect.isfunction(f) and hasattr(f, mark)]
    assert len(specs) >= 15, [spec.__name__ for spec in specs]
    for spec in specs:
        lines = (inspect.getdoc(spec) or "").splitlines()
        assert any(line.startswith("Runs in: ") for line in lines), (
            f"{spec.__name__}: add a docstring line 'Runs in: ...' naming the process (and "
            f"thread) its implementations run in, so that plugin authors know what may block"
        )

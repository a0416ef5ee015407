"""Finding and loading named drivers: entry points, dotted paths, code."""

import subprocess
import sys

import pytest
from qhive import drivers
from qhive.builtin.serializers import JsonSerializer, PickleSerializer
from qhive.contracts import Serializer
from qhive.errors import ConfigError, DriverConflictError, DriverLoadError, UnknownDriverError


def test_builtin_entry_points_load(fresh_plugins):
    assert drivers.load_driver("serializer", "pickle") is PickleSerializer
    assert drivers.load_driver("serializer", "json") is JsonSerializer


def test_unknown_name_lists_installed_and_suggests(fresh_plugins):
    with pytest.raises(UnknownDriverError) as err:
        drivers.load_driver("serializer", "pickel")
    message = str(err.value)
    assert "unknown serializer 'pickel'" in message
    assert "installed: json, pickle" in message
    assert "did you mean 'pickle'?" in message


def test_unknown_name_without_close_match_has_no_suggestion(fresh_plugins):
    with pytest.raises(UnknownDriverError) as err:
        drivers.load_driver("signer", "zzzzzz")
    assert "did you mean" not in str(err.value)


@pytest.mark.parametrize(
    "path", ["qhive.builtin.serializers:JsonSerializer", "qhive.builtin.serializers.JsonSerializer"]
)
def test_dotted_paths(path):
    assert drivers.load_driver("serializer", path) is JsonSerializer


def test_bad_dotted_path_names_it():
    with pytest.raises(DriverLoadError, match=r"broker 'nowhere.Broker' cannot be imported"):
        drivers.load_driver("broker", "nowhere.Broker")


def test_code_registered_driver_wins_over_entry_point():
    class Mine(Serializer):
        def dumps(self, obj):
            return b""

        def loads(self, data):
            return None

    registry = drivers.DriverRegistry()
    registry.add("serializer", "pickle", Mine)
    assert drivers.load_driver("serializer", "pickle", registry) is Mine
    info = [i for i in drivers.list_drivers("serializer", registry) if i.source == "code"]
    assert [(i.name, i.target) for i in info] == [("pickle", f"{__name__}:{Mine.__qualname__}")]


def test_registry_rejects_unknown_kind():
    with pytest.raises(ValueError, match=r"unknown driver kind 'brokr'"):
        drivers.DriverRegistry().add("brokr", "x", object)


def test_import_failure_names_distribution_version_and_cause(fake_dist):
    fake_dist(
        "qhive-broker-broken",
        {"broken_broker.py": "import not_a_real_module_xyz\n"},
        {"qhive.brokers": {"broken": "broken_broker:Broker"}},
        version="0.3.1",
    )
    with pytest.raises(DriverLoadError) as err:
        drivers.load_driver("broker", "broken")
    assert str(err.value) == (
        "broker 'broken' from qhive-broker-broken 0.3.1 failed to import: "
        "ModuleNotFoundError: No module named 'not_a_real_module_xyz'"
    )


def test_two_distributions_claiming_one_name(fake_dist):
    for dist in ("acme-one", "acme-two"):
        module = dist.replace("-", "_")
        fake_dist(dist, {f"{module}.py": "class B: pass\n"},
                  {"qhive.brokers": {"acme": f"{module}:B"}})
    with pytest.raises(DriverConflictError) as err:
        drivers.load_driver("broker", "acme")
    assert "acme-one 1.0 (acme_one:B)" in str(err.value)
    assert "acme-two 1.0 (acme_two:B)" in str(err.value)


def test_listing_imports_nothing(tmp_path):
    marker = tmp_path / "imported"
    code = f"""
import sys
from qhive import drivers
infos = drivers.list_drivers()
assert any(i.name == "memory" and i.kind == "broker" for i in infos), infos
leaked = [m for m in sys.modules if m.startswith("qhive.builtin.")]
assert not leaked, leaked
open({str(marker)!r}, "w").write("ok")
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    assert marker.read_text() == "ok"


def test_list_reports_distribution_and_version(fresh_plugins):
    info = {(i.kind, i.name): i for i in drivers.list_drivers()}
    pickle_info = info["serializer", "pickle"]
    assert pickle_info.distribution == "qhive"
    assert pickle_info.target == "qhive.builtin.serializers:PickleSerializer"
    assert pickle_info.version


def test_unknown_option_is_a_config_error(fresh_plugins):
    with pytest.raises(ConfigError) as err:
        drivers.build_driver("signer", "hmac", {"colour": "red"}, key="k",
                             option_key="signer_options")
    assert "signer 'hmac' does not take option(s) 'colour'" in str(err.value)
    assert "Q_CLUSTER['signer_options']" in str(err.value)
    assert err.value.key == "signer_options"


def test_misspelt_broker_in_q_cluster_suggests_the_installed_one(fake_dist):
    from qhive.config import Config
    from qhive.pipeline import Pipeline

    fake_dist("qhive-broker-redis", {},
              {"qhive.brokers": {"redis": "qhive_broker_redis:RedisBroker"}})
    pipeline = Pipeline(Config.from_dict({"broker": "redsi"}, secret_key="k"))
    with pytest.raises(UnknownDriverError) as err:
        pipeline.broker  # noqa: B018
    message = str(err.value)
    assert message.startswith("unknown broker 'redsi'; installed: ")
    assert "memory" in message and message.endswith(" — did you mean 'redis'?")

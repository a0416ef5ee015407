"""A third party's broker, installed like any package: found, selected, proven.

Two throw-away packages from tests/fixtures are installed with pip into a
folder that the test's processes put on their path:

* qhive-broker-sqlitefile: a working broker (one SQLite file);
* qhive-broker-explodes: a broker whose import raises.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from qhive import drivers
from qhive.config import Config
from qhive.errors import DriverLoadError
from qhive.pipeline import Pipeline

FIXTURES = Path(__file__).parent / "fixtures"
QPLUGINS = Path(sys.executable).parent / "qplugins"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    for name in ("qhive-broker-sqlitefile", "qhive-broker-explodes"):
        source = tmp_path_factory.mktemp("src") / name
        shutil.copytree(FIXTURES / name, source)  # pip builds in the source tree
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
            check=True,
        )
    return target


@pytest.fixture
def on_path(site, monkeypatch, fresh_plugins):
    monkeypatch.syspath_prepend(str(site))
    drivers.reset_caches()
    return site


def qplugins(site, *args, marker=None):
    env = {**os.environ, "PYTHONPATH": str(site)}
    if marker:
        env["QHIVE_EXPLODES_MARKER"] = str(marker)
    return subprocess.run([str(QPLUGINS), *args], env=env, capture_output=True, text=True)


def by_name(stdout):
    return {(row["kind"], row["name"]): row for row in json.loads(stdout)}


def test_list_shows_both_without_importing_them(site, tmp_path):
    marker = tmp_path / "imported"
    config = tmp_path / "q_cluster.json"
    config.write_text(json.dumps({"broker": "sqlitefile", "broker_options": {"path": "x"}}))
    done = qplugins(site, "list", "--json", "--config", str(config), marker=marker)
    assert done.returncode == 0, done.stderr
    rows = by_name(done.stdout)
    ours = rows["broker", "sqlitefile"]
    assert ours["distribution"] == "qhive-broker-sqlitefile"
    assert ours["version"] == "0.2.0"
    assert ours["target"] == "qhive_broker_sqlitefile:SqliteFileBroker"
    assert ours["status"] == "installed"
    assert ours["selected"] is True
    assert rows["broker", "explodes"]["selected"] is False
    assert rows["broker", "memory"]["distribution"] == "qhive"
    assert not marker.exists(), "qplugins list imported a plugin"


def test_check_imports_everything_and_reports_the_failure(site, tmp_path):
    marker = tmp_path / "imported"
    done = qplugins(site, "check", "--json", marker=marker)
    assert done.returncode == 1
    rows = by_name(done.stdout)
    assert rows["broker", "sqlitefile"]["status"] == "ok"
    failed = rows["broker", "explodes"]
    assert failed["status"] == "failed"
    assert "qhive-broker-explodes 9.9.9 failed to import" in failed["error"]
    assert "needs libexplode" in failed["error"]
    assert "problem: broker 'explodes' from qhive-broker-explodes 9.9.9" in done.stderr
    assert marker.exists()


def test_table_output(site):
    done = qplugins(site, "list", "--kind", "broker")
    assert done.returncode == 0
    header, *lines = done.stdout.splitlines()
    assert header.split() == ["KIND", "NAME", "DISTRIBUTION", "VERSION", "TARGET", "STATUS",
                              "SELECTED"]
    assert any(line.split()[:4] == ["broker", "sqlitefile", "qhive-broker-sqlitefile", "0.2.0"]
               for line in lines)


def test_config_selects_it_and_tasks_run_through_it(on_path, tmp_path):
    config = Config.from_dict(
        {"broker": "sqlitefile", "broker_options": {"path": str(tmp_path / "q.db")},
         "result_store": "memory", "name": "third-party"},
        secret_key="s3cret",
    )
    pipeline = Pipeline(config)
    assert type(pipeline.broker).__name__ == "SqliteFileBroker"
    task_id = pipeline.enqueue("math.factorial", (6,))
    assert pipeline.broker.queue_size() == 1
    [result] = pipeline.drain()
    assert (result.id, result.success, result.result) == (task_id, True, 720)
    assert pipeline.result_store.get(task_id).result == 720
    assert pipeline.broker.queue_size() == 0 and pipeline.broker.lock_size() == 0
    pipeline.close()


def test_selecting_the_broken_one_names_it(on_path):
    config = Config.from_dict({"broker": "explodes"}, secret_key="s3cret")
    with pytest.raises(DriverLoadError) as err:
        Pipeline(config).broker  # noqa: B018
    assert str(err.value) == (
        "broker 'explodes' from qhive-broker-explodes 9.9.9 failed to import: "
        "ImportError: qhive-broker-explodes needs libexplode, which is not installed"
    )


def test_it_passes_the_broker_contract(site, tmp_path):
    (tmp_path / "test_contract.py").write_text(textwrap.dedent("""
        import pytest
        from qhive.config import Config
        from qhive.drivers import build_driver
        from qhive_testkit import BrokerContract


        class TestSqliteFileBroker(BrokerContract):
            @pytest.fixture
            def make_broker(self, tmp_path):
                def make(queue, config):
                    return build_driver("broker", "sqlitefile", {"path": str(tmp_path / "q.db")},
                                        queue=queue, config=config)
                return make
    """))
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "test_contract.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, summary

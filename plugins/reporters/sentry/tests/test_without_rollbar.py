"""Acceptance: with the Rollbar reporter's package really uninstalled, Sentry still
receives the task errors, and the cluster's log names the missing reporter once.

"Uninstalled" is a virtual environment of its own that never had it: qhive, the Django
app, the ORM broker and store and this package are installed there from their source
folders (copies: the checkout gets no build files) with ``pip install --no-deps``, and
their third-party requirements at the versions of the test run's environment (from
pip's cache or the package index) — neither ``rollbar`` nor ``qhive-reporter-rollbar``.
A small Django project there configures both reporters; its ``qcluster`` runs a failing
task; the recording server of this test receives the Sentry event. The sentinel says
"error reporter 'rollbar' is not installed" once; workers say it only at DEBUG.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest
from qhive_testkit.services import require_package_index

ROOT = Path(__file__).resolve().parents[4]
#: The qhive packages a Django project with the Sentry reporter needs.
LOCAL = ["core", "django_integration", "plugins/brokers/orm", "plugins/result_stores/orm",
         "plugins/reporters/sentry"]
#: The test run's, not the new environment's.
FOREIGN = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE",
           "QHIVE_TEST_Q_CLUSTER"}

SETTINGS = """
import json, os
SECRET_KEY = "qhive-acceptance"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "qhive_django",
                  "qhive_broker_orm", "qhive_store_orm"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "OPTIONS": {"timeout": 30},
                         "NAME": os.path.join(os.path.dirname(__file__), "db.sqlite3")}}
Q_CLUSTER = json.loads(os.environ["SITE_Q_CLUSTER"])
"""

TASKS = """
def charge(order):
    raise ValueError(f"card declined for order {order}")
"""

ENQUEUE = """
import importlib.metadata, importlib.util, json
import django

django.setup()
from qhive_django.tasks import async_task

names = {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
print(json.dumps({"task_id": async_task("shop_tasks.charge", 42, task_name="charge-42"),
                  "rollbar": importlib.util.find_spec("rollbar") is not None,
                  "distributions": sorted(n for n in names if "rollbar" in n or "qhive" in n)}))
"""


def third_party_requirements() -> list[str]:
    """The local packages' requirements that are not qhive's, pinned to this run's
    versions (pip's cache has them) where installed here."""
    found = set()
    for package in LOCAL:
        project = tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]
        for requirement in project.get("dependencies", []):
            name = re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0]
            if not name.lower().startswith("qhive"):
                found.add(name)
    pinned = []
    for name in sorted(found):
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pinned.append(name)
    return pinned


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n" \
                                 f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_sentry_still_receives_and_the_log_names_the_missing_rollbar_once(tmp_path,
                                                                          recording_server):
    require_package_index()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]

    sources = tmp_path / "src"
    for package in LOCAL:  # copies: pip builds in the folder it installs from
        shutil.copytree(ROOT / package, sources / package, ignore=shutil.ignore_patterns(
            "*.egg-info", "__pycache__", "build", "tests"))
    run([*pip, "setuptools>=77", *third_party_requirements()], tmp_path, env)
    run([*pip, "--no-deps", "--no-build-isolation", *(str(sources / p) for p in LOCAL)],
        tmp_path, env)

    site = tmp_path / "site"
    site.mkdir()
    (site / "site_settings.py").write_text(textwrap.dedent(SETTINGS))
    (site / "shop_tasks.py").write_text(textwrap.dedent(TASKS))
    q_cluster = {"name": "shop", "orm": "default", "workers": 2, "poll": 0.05,
                 "guard_cycle": 0.2, "ack_failures": True, "error_reporter": {
                     "sentry": {"dsn": recording_server.sentry_dsn()},
                     "rollbar": {"access_token": "never-used", "environment": "production"}}}
    env.update(DJANGO_SETTINGS_MODULE="site_settings", PYTHONPATH=str(site),
               SITE_Q_CLUSTER=json.dumps(q_cluster))
    # migrate and qcluster run Django's system checks first, and refuse on an error
    check = subprocess.run([python, "-m", "django", "check"], cwd=site, env=env,
                           capture_output=True, text=True, timeout=120)
    # A warning, not an error: qhive's reporting leaves the reporter out and runs on.
    assert check.returncode == 0, f"{check.stdout}{check.stderr}"
    assert "qhive.W003" in check.stderr, check.stderr
    run([python, "-m", "django", "migrate", "-v", "0"], site, env)

    log = site / "qcluster.log"
    with log.open("w") as out:
        cluster = subprocess.Popen([python, "-m", "django", "qcluster"], cwd=site, env=env,
                                   stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 120  # a hang guard, not a timing assertion
        while "running (pid" not in log.read_text():
            assert cluster.poll() is None, f"qcluster exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"qcluster did not start:\n{log.read_text()}"
            time.sleep(0.1)
        enqueued = json.loads(run([python, "-c", textwrap.dedent(ENQUEUE)], site, env))
        [event] = recording_server.wait_for(lambda requests: recording_server.sentry_events(),
                                            timeout=120, what="the task's Sentry event")
        cluster.send_signal(signal.SIGTERM)
        assert cluster.wait(120) == 0, log.read_text()
    finally:
        if cluster.poll() is None:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()

    # really uninstalled: neither the SDK nor the reporter's distribution is there
    assert enqueued["rollbar"] is False
    assert enqueued["distributions"] == sorted(
        ["qhive", "qhive-django", "qhive-broker-orm", "qhive-store-orm",
         "qhive-reporter-sentry"])
    assert event["tags"]["qhive.task_id"] == enqueued["task_id"]
    assert event["tags"]["qhive.func"] == "shop_tasks.charge"
    [error] = event["exception"]["values"]
    assert error["value"] == "card declined for order 42"
    assert (error["stacktrace"]["frames"][-1]["module"],
            error["stacktrace"]["frames"][-1]["function"]) == ("shop_tasks", "charge")

    text = log.read_text()
    # Django's system checks, run by qcluster before it starts, warn (not refuse) ...
    assert "(qhive.W003) unknown reporter 'rollbar'" in text, text
    assert 'pip install "qhive-django[rollbar]"' in text, text
    # ... and the cluster's own log names it once: the sentinel, not each worker.
    named = [line for line in text.splitlines() if "[Q]" in line and "rollbar" in line]
    assert len(named) == 1, text
    assert "error reporter 'rollbar' is not installed" in named[0], text
    assert "the other reporters still report" in named[0], text
    assert "stopped (1 processed, 1 failed)" in text, text

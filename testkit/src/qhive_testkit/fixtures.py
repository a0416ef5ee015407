"""Opt-in pytest fixtures for testing plugin discovery, and error reporters.

Import the ones you need in your ``conftest.py``::

    from qhive_testkit.fixtures import fake_dist, fresh_plugins  # noqa: F401
    from qhive_testkit.fixtures import recording_server  # noqa: F401

The repository's own test run loads this module as a pytest plugin (``-p``).
"""

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest
from qhive import drivers, plugins
from qhive.config import Config
from qhive.pipeline import Pipeline

from qhive_testkit.recording_server import RecordingServer
from qhive_testkit.services import redis_server as redis_server  # a fixture: loaded with these


@pytest.fixture
def fresh_plugins():
    """A clean plugin manager and entry-point caches before and after the test."""
    drivers.reset_caches()
    plugins.reset_plugin_manager()
    yield
    drivers.reset_caches()
    plugins.reset_plugin_manager()


@pytest.fixture
def fake_dist(tmp_path, monkeypatch, fresh_plugins):
    """Make an installed distribution from source texts, without pip.

    ``fake_dist("acme", {"acme.py": "..."}, {"qhive.brokers": {"acme": "acme:AcmeBroker"}})``
    writes the modules and a ``*.dist-info`` with those entry points into a
    folder on ``sys.path``, as an installed package would look.
    """
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    modules = set()

    def make(name, files, groups, version="1.0"):
        for path, text in files.items():
            modules.add(path.split("/")[0].removesuffix(".py"))
            (root / path).write_text(textwrap.dedent(text))
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = []
        for group, entries in groups.items():
            lines.append(f"[{group}]")
            lines.extend(f"{k} = {v}" for k, v in entries.items())
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        drivers.reset_caches()

    yield make
    for module in modules:  # the next test's fake of the same name must import afresh
        sys.modules.pop(module, None)


@pytest.fixture
def recording_server():
    """A started :class:`~qhive_testkit.recording_server.RecordingServer` of this test's
    own (Sentry DSN: ``recording_server.sentry_dsn()``, Rollbar: ``.rollbar_endpoint``);
    stopped at the end."""
    with RecordingServer() as server:
        yield server


@pytest.fixture
def make_pipeline(fresh_plugins):
    """``make_pipeline(**settings)``: a :class:`~qhive.pipeline.Pipeline` of a project of
    its own (a unique ``name``) on the in-memory broker and result store unless
    ``settings`` choose others; it runs tasks in this process with ``drain()``. Purged
    and closed at the end (closing flushes its error reporters)."""
    made = []

    def make(**settings):
        q_cluster = {"name": f"t{uuid.uuid4().hex[:8]}", "broker": "memory",
                     "result_store": "memory", **settings}
        made.append(Pipeline(Config.from_dict(q_cluster, secret_key="test-secret")))
        return made[-1]

    yield make
    for pipeline in made:
        pipeline.broker.purge_queue()
        pipeline.close()


@pytest.fixture
def run_python():
    """``run_python(code, **env)``: run ``code`` in a new interpreter of this environment
    (for what changes process-wide state, such as an SDK's one set-up per process);
    returns the JSON its last output line holds, and its stderr."""

    def run(code: str, **env: str):
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                              env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr

    return run

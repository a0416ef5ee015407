"""Opt-in pytest fixtures for testing plugin discovery.

Import the ones you need in your ``conftest.py``::

    from qhive_testkit.fixtures import fake_dist, fresh_plugins  # noqa: F401
"""

import sys
import textwrap

import pytest
from qhive import drivers, plugins


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

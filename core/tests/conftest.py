import pytest
from qhive import plugins


@pytest.fixture(autouse=True)
def core_plugins_only(monkeypatch):
    """The core's tests build plugin managers of the core alone: in a test session that
    also set Django up, the Django apps' hook modules are default plugins of this process
    (``qhive.plugins.add_default_plugin``) and would answer the core's hooks."""
    monkeypatch.setattr(plugins, "DEFAULT_PLUGINS", {"qhive.core": plugins.builtin_hooks.__name__})

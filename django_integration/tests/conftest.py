import contextlib
import uuid

import pytest
from qhive.errors import ConfigError


@pytest.fixture
def q_cluster(django_project):
    """``q_cluster(**settings)`` sets ``Q_CLUSTER`` for the test: the in-memory broker and
    result store (unless ``memory=False``), under a unique ``name`` so that the test's
    queues and results are its own. Returns the dict."""
    from django.test import override_settings
    from qhive_django.conf import get_config, get_pipeline

    applied = []

    def apply(memory=True, **settings):
        q = {"name": f"t{uuid.uuid4().hex[:12]}"}
        if memory:
            q.update(broker="memory", result_store="memory")
        q.update(settings)
        override = override_settings(Q_CLUSTER=q)
        override.enable()
        applied.append(override)
        return q

    yield apply
    for override in reversed(applied):
        with contextlib.suppress(ConfigError):  # the test may have set a bad Q_CLUSTER
            config = get_config()
            for cluster in (None, *config.alt_cluster_names):  # memory queues outlive the test
                if get_config(cluster).broker == "memory":
                    get_pipeline(cluster).broker.purge_queue()
        override.disable()

"""The MongoDB test server (``qhive_testkit.mongo_server``, or the real MongoDB at
``$QHIVE_TEST_MONGO_URL``) for the MongoDB broker's tests; the cluster tests take
``cluster_settings`` and ``qcluster`` from the testkit."""

from qhive_testkit.mongo_server import (  # noqa: F401 (fixtures)
    mongo_server_process,
    mongo_test_server,
)

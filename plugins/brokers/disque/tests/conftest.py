"""The Disque servers of the tests (``qhive_testkit.disque_server``): one per test session
(per xdist worker) shared through queue names of each test's own, and servers a test
starts for itself to stop, kill or freeze."""

from qhive_testkit.disque_server import disque_server, disque_servers  # noqa: F401 (fixtures)

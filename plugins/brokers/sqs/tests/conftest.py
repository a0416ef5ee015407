"""moto's SQS over real HTTP, one server per test session (per xdist worker): every test
uses queues named for itself."""

from qhive_testkit.services import moto_server  # noqa: F401 (a session fixture)

"""qhive-testkit: contract test suites for qhive plugins.

A plugin proves its driver by subclassing the matching contract in a test module
and supplying one factory fixture::

    from qhive_testkit import BrokerContract

    class TestMyBroker(BrokerContract):
        @pytest.fixture
        def make_broker(self):
            return lambda queue, config: MyBroker(queue, config=config)

=====================  ========================================================
contract               fixture
=====================  ========================================================
BrokerContract         ``make_broker(queue: str, config: Config) -> Broker``
ResultStoreContract    ``make_result_store(config: Config) -> ResultStore``
SerializerContract     ``make_serializer() -> Serializer``
SignerContract         ``make_signer(key, salt="default", fallback_keys=()) -> Signer``
ReporterContract       ``make_reporter() -> Reporter``
=====================  ========================================================
"""

import pytest

# The suites' plain asserts get pytest's detailed failure messages.
pytest.register_assert_rewrite(
    "qhive_testkit.broker",
    "qhive_testkit.result_store",
    "qhive_testkit.serializer",
    "qhive_testkit.signer",
    "qhive_testkit.reporter",
)

from qhive_testkit.broker import BrokerContract  # noqa: E402
from qhive_testkit.reporter import ReporterContract  # noqa: E402
from qhive_testkit.result_store import ResultStoreContract  # noqa: E402
from qhive_testkit.serializer import SerializerContract  # noqa: E402
from qhive_testkit.signer import SignerContract  # noqa: E402

__all__ = [
    "BrokerContract",
    "ReporterContract",
    "ResultStoreContract",
    "SerializerContract",
    "SignerContract",
]

"""The MongoDB broker passes qhive's broker contract twice: on mongomock inside this
process (no server), and with the real pymongo client over the wire to the MongoDB test
server of ``qhive_testkit.mongo_server`` (the real MongoDB at ``$QHIVE_TEST_MONGO_URL``
when that is set). Every test uses collections of its own and drops them afterwards."""

import pytest
from qhive_broker_mongo.broker import MongoBroker
from qhive_testkit import BrokerContract
from qhive_testkit.mongo_server import mongomock_client

DATABASE = "qhive_contract"


class TestMongoBroker(BrokerContract):
    @pytest.fixture(params=["mongomock", "wire"])
    def make_broker(self, request):
        if request.param == "mongomock":
            return lambda queue, config: MongoBroker(queue, config=config, mongo_db=DATABASE,
                                                     client_factory=mongomock_client)
        server = request.getfixturevalue("mongo_test_server")
        return lambda queue, config: MongoBroker(queue, config=config,
                                                 mongo={"host": server.url}, mongo_db=DATABASE)

    # The two tests below hand the broker to other processes: mongomock's data lives in
    # the memory of this one, so only the "wire" run can take them.

    def test_pickled_copy_works_in_a_child_process(self, broker, request):
        _needs_a_server(request)
        super().test_pickled_copy_works_in_a_child_process(broker)

    def test_concurrent_consumers_never_share_a_message(self, broker, request):
        _needs_a_server(request)
        super().test_concurrent_consumers_never_share_a_message(broker)


def _needs_a_server(request) -> None:
    if request.node.callspec.params.get("make_broker") == "mongomock":
        pytest.skip("mongomock keeps its data in this process's memory; the 'wire' run "
                    "of this test covers other processes")

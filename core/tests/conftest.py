from qhive_testkit.fixtures import fake_dist, fresh_plugins  # noqa: F401

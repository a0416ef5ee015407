"""The Redis client helpers that qhive's two Redis plugins share.

``qhive-broker-redis`` and ``qhive-store-redis`` both read Django Q2's
``Q_CLUSTER["redis"]``; both get their clients from :mod:`qhive_redis_client.client`:
the options checked (a ``ConfigError`` with a did-you-mean, Django Q2's renamed keys
mapped), the client built (short timeouts, one immediate retry) and its address for
logs and errors, never with a password. One copy, so that either plugin installs
without the other. Sentinel and Cluster support, when it comes, goes here: both
plugins get it at once.

Not a plugin: no entry point. Importing this package imports nothing.
"""

__all__: list[str] = []

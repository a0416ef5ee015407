"""qhive's Redis result store: signed results in Redis, with expiry and save_limit.

:class:`qhive_store_redis.store.RedisResultStore` is the ``redis`` driver of the
``qhive.result_stores`` entry-point group. It needs no Django. Importing this
package opens no connection.
"""

__all__: list[str] = []

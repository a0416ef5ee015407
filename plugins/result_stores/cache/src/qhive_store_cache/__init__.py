"""qhive's cache result store: where ``cached=True`` / ``cached=<seconds>`` results go.

:class:`qhive_store_cache.store.CacheResultStore` is the ``cache`` driver of the
``qhive.result_stores`` entry-point group. It keeps each result as one signed
package in a Django cache, keyed by the project ``name`` so that every cluster of
the project finds it, with group indexes that never rewrite a list. Importing
this package touches neither Django's settings nor any cache.
"""

__all__: list[str] = []

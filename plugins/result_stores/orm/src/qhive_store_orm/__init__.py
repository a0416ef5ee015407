"""qhive's ORM result store: the ``Task`` model of Django Q with its ``Success`` and
``Failure`` proxies, and :class:`qhive_store_orm.store.OrmResultStore`, the
``orm`` driver of the ``qhive.result_stores`` entry-point group.

Add ``"qhive_store_orm"`` to ``INSTALLED_APPS`` and run ``migrate``. Importing
this package imports no model, so the entry point can be listed without Django
being set up.
"""

__all__: list[str] = []

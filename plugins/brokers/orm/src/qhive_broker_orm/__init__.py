"""qhive's ORM broker: the task queue in a table of a Django database.

Add ``"qhive_broker_orm"`` to ``INSTALLED_APPS`` and run ``migrate``. The broker
itself is :class:`qhive_broker_orm.broker.OrmBroker`, selected with
``Q_CLUSTER = {"orm": "default"}`` (or by default when no broker is configured).

Nothing is imported here: the package is a Django app, and loading it must not
touch Django's app registry or a database.
"""

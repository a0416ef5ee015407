"""qhive's Django app: ``Q_CLUSTER`` as qhive config, the task API (:mod:`qhive_django.tasks`),
signals, system checks and the ``qcluster`` / ``qplugins`` management commands.

Importing it does no work: settings are read, and plugins loaded, on first use.
"""

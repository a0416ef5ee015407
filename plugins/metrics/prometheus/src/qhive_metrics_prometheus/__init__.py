"""Prometheus metrics of a qhive cluster: counted by its workers (and its sentinel, for
tasks whose worker died) in ``prometheus_client``'s multiprocess mode, served by its
sentinel.

A hook-only plugin (entry point ``prometheus`` of ``qhive.plugins``:
:mod:`qhive_metrics_prometheus.hooks`), switched on per cluster by
``Q_CLUSTER["plugins"]["prometheus"] = {"port": 9191}``. Importing this package imports
neither ``prometheus_client`` nor Django.
"""

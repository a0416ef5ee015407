"""Fixtures of the end-to-end tests come from the testkit, a plugin of the whole run:
``cluster_settings`` and ``qcluster`` (``qhive_testkit.qcluster``), ``redis_server``,
``make_pipeline`` and the rest (``qhive_testkit.fixtures``)."""

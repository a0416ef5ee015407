"""The IronMQ emulator (``qhive_testkit.ironmq_emulator``) for the IronMQ broker's tests;
the cluster tests take ``cluster_settings`` and ``qcluster`` from the testkit."""

from qhive_testkit.ironmq_emulator import (  # noqa: F401 (fixtures)
    ironmq_emulator,
    ironmq_emulator_process,
)

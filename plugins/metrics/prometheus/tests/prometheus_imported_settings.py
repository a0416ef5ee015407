"""The test project's settings in a project that imports ``prometheus_client`` as Django
sets up (as ``django-prometheus`` does): before the cluster starts, so in-process mode in
the sentinel and in the zygote that forks the workers. A cluster test passes it as
``DJANGO_SETTINGS_MODULE``; importable as :mod:`prometheus_gate` is."""

import prometheus_client  # noqa: F401 -- imported without PROMETHEUS_MULTIPROC_DIR
from qhive_test_settings import *  # noqa: F403 -- the test project's, as generated

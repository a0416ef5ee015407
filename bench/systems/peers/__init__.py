"""Peers on Redis, for context in the benchmark: Celery, RQ, Huey and Dramatiq.

Each module (``celery_system``, ``rq_system``, ``huey_system``, ``dramatiq_system``)
defines one adapter and its ``SYSTEMS`` list, which the harness discovers; ``PEERS`` is
the same instances in one list. ``clients/`` holds the client scripts, which run inside
each peer's own venv and are copied into its work directory by ``prepare``.
"""

from .celery_system import SYSTEMS as _CELERY
from .dramatiq_system import SYSTEMS as _DRAMATIQ
from .huey_system import SYSTEMS as _HUEY
from .rq_system import SYSTEMS as _RQ

PEERS = [*_CELERY, *_RQ, *_HUEY, *_DRAMATIQ]

__all__ = ["PEERS"]

"""Imported once by the forkserver, before it forks the first worker.

It runs the workers' set-up there (``QHIVE_WORKER_SETUP``: ``django.setup()``
under Django) and reads the plugin entry points, so that every worker — and
every replacement of a recycled or dead one — starts as a fork of a process
that has done that work, sharing its memory, instead of doing it again.
Import-time work is the whole point of this module; nothing else imports it.
"""

import logging
import os
import signal

from qhive import drivers
from qhive.task import resolve_func

# SIGTERM to the process group must not kill the forkserver: the sentinel stops
# gracefully and may still start workers; the server exits when the sentinel does.
signal.signal(signal.SIGTERM, signal.SIG_IGN)

_setup = os.environ.get("QHIVE_WORKER_SETUP")
if _setup:
    try:
        resolve_func(_setup)()
    except Exception:  # each worker runs the set-up again and reports what fails
        logging.getLogger("qhive.cluster").debug("worker set-up failed in the forkserver",
                                                 exc_info=True)
for _group, _contract in drivers.KINDS.values():
    drivers.entry_points(_group)  # stevedore keeps the scan in memory for the forks

import qhive.pipeline  # noqa: E402, F401 -- what every worker imports next

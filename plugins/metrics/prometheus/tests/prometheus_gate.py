"""A task that holds its worker until the test opens the gate (creates a file), so that
a test sees a busy worker and tasks waiting in the broker without relying on timing.
Importable by the cluster's workers: the tests put this folder on their PYTHONPATH."""

import os
import time


def wait_for(path, within=300.0):
    deadline = time.monotonic() + within
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was never created")
        time.sleep(0.05)
    return True

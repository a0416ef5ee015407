"""Set-up of cluster worker processes."""

import subprocess
import sys

from django.db import connections
from qhive_django import runtime


def test_setup_makes_a_fresh_process_a_django_process(django_project):
    code = """
from qhive_django.runtime import setup
setup()
setup()  # twice is harmless
from django.apps import apps
from qhive.plugins import get_plugin_manager
from qhive_django import hooks
assert apps.ready
assert get_plugin_manager().is_registered(hooks)
"""
    done = subprocess.run([sys.executable, "-c", code], env=django_project.env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_inherited_connections_are_dropped_not_closed(database):
    conn = connections[database]
    conn.ensure_connection()
    inherited = conn.connection
    runtime.setup()  # as in a worker forked from a Django process
    try:
        assert conn.connection is None
        assert any(c is inherited for c in runtime._inherited)  # not closed for the parent
        with conn.cursor() as cursor:  # this process opens its own
            cursor.execute("SELECT 1")
        assert conn.connection is not inherited
    finally:
        while runtime._inherited:
            runtime._inherited.pop().close()

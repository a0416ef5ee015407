"""The core never imports Django, a broker client or a reporter SDK."""

import subprocess
import sys

FORBIDDEN = ("django", "redis", "boto3", "botocore", "pymongo", "sentry_sdk", "rollbar", "iron_mq")


def test_importing_every_core_module_pulls_in_no_framework_or_client():
    code = f"""
import importlib, pkgutil, sys
import qhive
names = [m.name for m in pkgutil.walk_packages(qhive.__path__, "qhive.")]
for name in names:
    importlib.import_module(name)
assert len(names) >= 12, names
leaked = sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r})
print(len(names), "modules;", "leaked:", leaked)
sys.exit(1 if leaked else 0)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_importing_qhive_does_no_work():
    code = """
import sys
import qhive
heavy = [m for m in ("pluggy", "stevedore", "qhive.plugins", "qhive.drivers") if m in sys.modules]
assert not heavy, heavy
"""
    subprocess.run([sys.executable, "-c", code], check=True)

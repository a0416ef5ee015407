"""A bad ``Q_CLUSTER["mongo"]`` is one clear line in ``manage.py check`` (qhive.E004, from
the package's ``qhive_check_config`` hook), before any cluster starts and without
reaching for a server."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: How ``manage.py check`` starts the line of a ``qhive_check_config`` problem.
E004 = "settings.Q_CLUSTER: (qhive.E004) MongoDB broker: "


def manage_check(django_project, q_cluster: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "django", "check"],
                          env=django_project.env(q_cluster), capture_output=True, text=True,
                          timeout=120)


def test_a_good_setting_passes(django_project):
    done = manage_check(django_project, {"name": "mongocheck", "mongo": {
        "host": "mongodb://127.0.0.1:1/queues"}})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


@pytest.mark.parametrize(("setting", "says"), [
    ({"mongo": {"hots": "mongodb://127.0.0.1:27017"}},
     E004 + "pymongo.MongoClient takes no option 'hots' in "
     "Q_CLUSTER['mongo'] — did you mean 'host'?"),
    ({"mongo": {"host": "mongodb//127.0.0.1"}},
     E004 + "Q_CLUSTER['mongo'] is not usable: "),
    ({"mongo": {"host": "127.0.0.1"}, "mongo_db": "my.queues"},
     E004 + "Q_CLUSTER['mongo_db'] must be a MongoDB database name"),
])
def test_a_bad_setting_is_one_clear_line(django_project, setting, says):
    done = manage_check(django_project, {"name": "mongocheck", **setting})
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    [line] = [x for x in output.splitlines() if "MongoDB broker" in x]
    assert line.startswith(says), output

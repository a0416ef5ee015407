"""The ``qplugins`` console script as an operator runs it (issue 11, item 16):
every ``--kind`` it offers, piped into ``head``, and outside ``manage.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

QPLUGINS = Path(sys.executable).parent / "qplugins"


def qplugins(*args: str, cwd: Path | None = None, **env: str | None):
    environ = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    return subprocess.run([str(QPLUGINS), *args], env=environ, cwd=cwd, capture_output=True,
                          text=True)


def selected(stdout: str) -> dict[tuple[str, str], bool | None]:
    return {(row["kind"], row["name"]): row["selected"] for row in json.loads(stdout)}


def test_every_kind_it_offers_works():
    for kind in ("broker", "result_store", "serializer", "signer", "reporter", "plugin"):
        done = qplugins("list", "--kind", kind, DJANGO_SETTINGS_MODULE=None)
        assert done.returncode == 0, (kind, done.stderr)
        assert "Traceback" not in done.stderr
        assert all(line.startswith(kind) for line in done.stdout.splitlines()[1:]), done.stdout
    done = qplugins("check", "--kind", "plugin", DJANGO_SETTINGS_MODULE=None)
    assert "Traceback" not in done.stderr


def test_a_closed_pipe_ends_it_quietly():
    """`qplugins list --json | head`: the reader is gone before anything is written."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([str(QPLUGINS), "list", "--json"], stdout=write,
                              stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == 1


def write_settings(folder: Path, text: str, name: str = "qp_settings") -> str:
    (folder / f"{name}.py").write_text(textwrap.dedent(text))
    return name


def test_it_reads_the_project_settings(tmp_path):
    name = write_settings(tmp_path, """
        SECRET_KEY = "x"
        Q_CLUSTER = {"name": "mysite", "redis": "redis://:pw@127.0.0.1:6379/0"}
    """)
    done = qplugins("list", "--json", DJANGO_SETTINGS_MODULE=name, PYTHONPATH=str(tmp_path))
    assert done.returncode == 0, done.stderr
    rows = selected(done.stdout)
    assert rows["broker", "redis"] is True
    assert rows["broker", "orm"] is False
    assert rows["result_store", "orm"] is True
    # run from the project's folder, as manage.py is, without PYTHONPATH
    done = qplugins("list", "--json", cwd=tmp_path, DJANGO_SETTINGS_MODULE=name, PYTHONPATH=None)
    assert done.returncode == 0, done.stderr
    assert selected(done.stdout)["broker", "redis"] is True


def test_a_project_without_q_cluster_uses_the_defaults(tmp_path):
    name = write_settings(tmp_path, "SECRET_KEY = 'x'\n")
    done = qplugins("list", "--json", DJANGO_SETTINGS_MODULE=name, PYTHONPATH=str(tmp_path))
    assert selected(done.stdout)["broker", "orm"] is True


def test_without_a_config_it_says_it_does_not_know():
    done = qplugins("list", DJANGO_SETTINGS_MODULE=None)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()[1:]
    assert lines and all(line.rstrip().endswith(" ?") for line in lines), done.stdout
    assert "SELECTED is unknown: no --config and DJANGO_SETTINGS_MODULE is not set" in done.stderr
    done = qplugins("list", "--json", DJANGO_SETTINGS_MODULE=None)
    assert set(selected(done.stdout).values()) == {None}


def test_unreadable_settings_are_named(tmp_path):
    name = write_settings(tmp_path, "import os\nSECRET_KEY = os.environ['NO_SUCH_VAR']\n")
    done = qplugins("list", DJANGO_SETTINGS_MODULE=name, PYTHONPATH=str(tmp_path))
    assert done.returncode == 0 and "Traceback" not in done.stderr
    assert f"DJANGO_SETTINGS_MODULE {name!r} cannot be imported (KeyError: 'NO_SUCH_VAR')" \
        in done.stderr
    done = qplugins("list", DJANGO_SETTINGS_MODULE="no_such_settings")
    assert "DJANGO_SETTINGS_MODULE 'no_such_settings' cannot be imported" in done.stderr
    bad = write_settings(tmp_path, "Q_CLUSTER = {'timout': 3}\n", name="qp_bad")
    done = qplugins("list", DJANGO_SETTINGS_MODULE=bad, PYTHONPATH=str(tmp_path))
    assert done.returncode == 0
    assert "unknown Q_CLUSTER key 'timout'" in done.stderr
    done = qplugins("check", "--kind", "signer", DJANGO_SETTINGS_MODULE=bad,
                    PYTHONPATH=str(tmp_path))
    assert done.returncode == 1 and "problem: " in done.stderr

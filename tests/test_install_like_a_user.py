"""qhive installed as a user installs it (issue 12): no editable install, no source tree.

One test, because every step needs the one before (and so that a parallel run never builds
``dist/`` twice at once):

1. every ``sh`` block of the README's "Install" section runs as written, each in a new
   virtual environment, from the repository root (the clone). ``make dist`` runs first; a
   block naming packages as on PyPI gets ``dist/`` as an extra find-links location, the
   stand-in for PyPI until they are published. Third-party packages (Django, ...) come
   from the package index, through pip's cache;
2. each environment holds exactly the qhive distributions its block asked for:
   ``"qhive-django[redis]"`` is qhive, qhive-django, the ORM broker and store, the
   Redis broker and its client helpers, nothing else (acceptance point 3);
3. the wheels in ``dist/`` carry every file of their package (migrations, ``py.typed``);
4. in the environment of ``pip install --find-links dist "qhive-django[redis]"``, from a
   temporary folder: ``django-admin startproject``, the tour's settings from the README,
   ``migrate``, a real ``qcluster`` stopped by SIGTERM (exit 0), tasks and their results,
   ``cached=`` failing with the name of the extra, and the admin's qhive pages.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from qhive_testkit.services import require_package_index

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DIST = ROOT / "dist"
VERSION = (ROOT / "VERSION").read_text().strip()
SET_VERSION = ROOT / "scripts" / "set_version.py"
#: The qhive distributions `pip install "qhive-django[redis]"` brings, and nothing else.
WITH_REDIS = {"qhive", "qhive-django", "qhive-broker-orm", "qhive-store-orm",
              "qhive-broker-redis", "qhive-redis-client"}
#: ... and those of plain `qhive-django`.
PLAIN = WITH_REDIS - {"qhive-broker-redis", "qhive-redis-client"}
#: Packages whose Django app has migrations.
MIGRATIONS = {"qhive_django", "qhive_broker_orm", "qhive_store_orm"}
#: The test run's, not a user's shell's (`make test` passes MAKEFLAGS on).
FOREIGN = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE",
           "Q_CLUSTER_NAME", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}


def load_set_version():
    spec = importlib.util.spec_from_file_location("set_version", SET_VERSION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def install_blocks() -> list[str]:
    section = re.search(r"^## Install\n(.*?)^## ", README.read_text(), re.M | re.S)
    assert section, "README.md has no '## Install' section"
    blocks = re.findall(r"^```sh\n(.*?)^```", section[1], re.M | re.S)
    assert blocks, "the README's Install section has no sh block"
    return sorted(blocks, key=lambda block: "make dist" not in block)  # dist/ first




class Venv:
    """A new virtual environment, and a shell environment in which it is active."""

    def __init__(self, path: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        self.path = path
        self.python = path / "bin" / "python"
        self.env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
        self.env.update(VIRTUAL_ENV=str(path),
                        PATH=f"{path / 'bin'}{os.pathsep}{os.environ['PATH']}")
        if sys.prefix != sys.base_prefix:  # make dist's build tools: the test run's venv
            self.env["VENV"] = sys.prefix

    def run(self, argv: list[str] | str, cwd: Path, *, check: bool = True,
            **env: str) -> subprocess.CompletedProcess:
        argv = ["bash", "-euxo", "pipefail", "-c", argv] if isinstance(argv, str) else argv
        done = subprocess.run(argv, cwd=cwd, env={**self.env, **env}, capture_output=True,
                              text=True, timeout=900)
        if check:
            assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{output(done)}"
        return done

    def qhive_distributions(self, cwd: Path) -> dict[str, str]:
        code = ("import importlib.metadata as m, json; "
                "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
        found = json.loads(self.run([str(self.python), "-c", code], cwd).stdout)
        names = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in found.items()}
        return {n: v for n, v in names.items() if n == "qhive" or n.startswith("qhive-")}


def output(done: subprocess.CompletedProcess) -> str:
    return f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


@pytest.mark.slow
def test_the_readme_install_then_a_new_project_with_a_real_cluster(tmp_path):
    require_package_index()
    blocks = install_blocks()
    venvs = []
    leftovers = [p.parent / "build" for p in load_set_version().pyprojects()
                 if not (p.parent / "build").exists()]
    for number, block in enumerate(blocks):
        venv = Venv(tmp_path / f"venv{number}")
        as_on_pypi = not re.search(r"make dist|--find-links|\./", block)
        links = f"{DIST} {os.environ.get('PIP_FIND_LINKS', '')}".strip()
        try:
            venv.run(block, ROOT, **({"PIP_FIND_LINKS": links} if as_on_pypi else {}))
        finally:  # pip builds a package folder in place: leave the checkout as it was
            for folder in leftovers:
                shutil.rmtree(folder, ignore_errors=True)
        want = WITH_REDIS if '"qhive-django[redis]"' in block else PLAIN
        assert venv.qhive_distributions(tmp_path) == dict.fromkeys(want, VERSION), block
        venvs.append((block, venv))

    check_the_built_packages()

    [user] = [venv for block, venv in venvs if "--find-links dist" in block]
    follow_the_tour(user, tmp_path / "site")


def check_the_built_packages() -> None:
    """A wheel and an sdist per package, at VERSION; each wheel holds every file of its
    package's source folder (migrations, py.typed, templates...)."""
    packages = [path.parent for path in load_set_version().pyprojects()]
    built = sorted(p.name for p in DIST.iterdir())
    assert len(built) == 2 * len(packages), built
    for package in packages:
        [source] = [d for d in (package / "src").iterdir()
                    if d.is_dir() and not d.name.endswith(".egg-info")]
        stem = f"{source.name}-{VERSION}"  # the import name is the normalized dist name
        assert f"{stem}.tar.gz" in built and f"{stem}-py3-none-any.whl" in built, package
        with zipfile.ZipFile(DIST / f"{stem}-py3-none-any.whl") as wheel:
            files = set(wheel.namelist())
            metadata = wheel.read(f"{stem}.dist-info/METADATA").decode()
        expected = {f.relative_to(source.parent).as_posix() for f in source.rglob("*")
                    if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"}
        assert expected <= files, f"{package.name}: missing from the wheel: {expected - files}"
        assert f"{source.name}/py.typed" in files
        if source.name in MIGRATIONS:
            assert f"{source.name}/migrations/0001_initial.py" in files
        if source.name == "qhive_django":  # the cache store is an extra, not a dependency
            requires = re.findall(r"^Requires-Dist: (.*)$", metadata, re.M)
            assert [r for r in requires if "extra ==" not in r and "qhive" in r] == [
                f"{name}<0.2,>={VERSION}" for name in ("qhive", "qhive-broker-orm",
                                                       "qhive-store-orm")], requires
            assert {"redis", "cache", "all"} <= set(re.findall(r"^Provides-Extra: (.*)$",
                                                               metadata, re.M))


def follow_the_tour(venv: Venv, site: Path) -> None:
    site.mkdir()
    venv.run(["django-admin", "startproject", "mysite"], site)
    project = site / "mysite"
    [settings] = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
                  if b.startswith("# settings.py")]
    with (project / "mysite" / "settings.py").open("a") as f:
        f.write("\n" + settings)  # the README's lines, as a user pastes them
    (project / "mysite" / "settings_cached.py").write_text(
        "from mysite.settings import *  # noqa\nQ_CLUSTER = {**Q_CLUSTER, 'cached': 60}\n")
    (project / "myapp").mkdir()
    (project / "myapp" / "__init__.py").write_text("")
    (project / "myapp" / "hooks.py").write_text(textwrap.dedent("""
        from pathlib import Path

        def done(task):  # the tour's hook="myapp.hooks.done"
            Path(__file__).with_name("hook.txt").write_text(f"{task.id} {task.result}")
    """))
    python = str(venv.python)

    where = venv.run([python, "-c", textwrap.dedent(f"""
        import sys, qhive, qhive_django, qhive_broker_orm, qhive_store_orm, qhive_broker_redis
        assert not any(p.startswith({str(ROOT)!r}) for p in sys.path), sys.path
        for module in (qhive, qhive_django, qhive_broker_orm, qhive_store_orm,
                       qhive_broker_redis):
            print(module.__file__)
    """)], project).stdout.split()
    site_packages = venv.path / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert all(Path(f).is_relative_to(site_packages / "site-packages") for f in where), where

    venv.run([python, "manage.py", "migrate"], project)
    check = venv.run([python, "manage.py", "check"], project, check=False,
                     DJANGO_SETTINGS_MODULE="mysite.settings_cached")
    assert check.returncode == 1 and "qhive.E002" in check.stderr, output(check)
    assert 'HINT: pip install "qhive-django[cache]"' in check.stderr, output(check)

    log = site / "qcluster.log"
    with log.open("w") as out:  # its own session: on a failure, its workers go with it
        cluster = subprocess.Popen([python, "manage.py", "qcluster"], cwd=project,
                                   env=venv.env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_for(lambda: "running (pid" in log.read_text(), cluster, log)
        tasks = venv.run([python, "-c", TASKS], project)
        assert "tasks OK" in tasks.stdout, output(tasks)
        hook = project / "myapp" / "hook.txt"
        wait_for(hook.exists, cluster, log)
        assert hook.read_text().endswith(" 3628800")
        cluster.send_signal(signal.SIGTERM)
        assert cluster.wait(120) == 0, log.read_text()
    finally:
        if cluster.poll() is None:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()
    assert re.search(r"stopped \(2 processed, 1 failed\)", log.read_text()), log.read_text()

    pages = json.loads(venv.run([python, "-c", ADMIN], project).stdout)
    assert {"qhive_django.schedule", "qhive_broker_orm.queuedtask", "qhive_store_orm.success",
            "qhive_store_orm.failure"} <= set(pages), pages
    assert set(pages.values()) == {200}, pages


def wait_for(condition, cluster: subprocess.Popen, log: Path, within: float = 180.0) -> None:
    """Until ``condition()``: a guard against a hang, not a timing assertion."""
    deadline = time.monotonic() + within
    while not condition():
        assert cluster.poll() is None, f"qcluster exited {cluster.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"still waiting after {within} s:\n{log.read_text()}"
        time.sleep(0.1)


SETUP = """
import os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django.setup()
"""

#: The tour's calls, from a script in the user's project, against the running cluster.
TASKS = SETUP + """
from qhive.errors import UnknownDriverError
from qhive_django.tasks import async_task, fetch, result

task_id = async_task("math.factorial", 10, group="maths", hook="myapp.hooks.done")
assert result(task_id, wait=180_000) == 3628800  # a hang guard
assert fetch(task_id).time_taken() >= 0
failed = async_task("math.sqrt", -1)
assert fetch(failed, wait=180_000).success is False
try:
    async_task("math.floor", 2.5, cached=60)  # the cache store is an extra, not installed
except UnknownDriverError as exc:
    assert str(exc).endswith('pip install "qhive-django[cache]"'), exc
else:
    raise AssertionError("cached=60 without qhive-store-cache did not fail")
print("tasks OK")
"""

#: Django's test client as a superuser: the changelist of every qhive model.
ADMIN = SETUP + """
import json
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.test.utils import setup_test_environment
from django.urls import reverse

setup_test_environment()  # allows the client's host, testserver
client = Client()
client.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))
pages = {}
for model in admin.site._registry:
    meta = model._meta
    if meta.app_label.startswith("qhive"):
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        pages[f"{meta.app_label}.{meta.model_name}"] = client.get(url).status_code
print(json.dumps(pages))
"""

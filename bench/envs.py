"""Virtual environments under ``bench/.envs/``: one for the harness, one per ``venv_name``.

A venv is reused while its requirements are unchanged: a hash of the requirement lines,
the Python version and the ``pyproject.toml`` of every editable (``-e PATH``) requirement
is kept in the venv as ``.bench-requirements``; when it differs the venv is rebuilt.
Editable installs follow source changes without a rebuild.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

ENVS_DIR = Path(__file__).resolve().parent / ".envs"
STAMP = ".bench-requirements"
REPO_DIR = Path(__file__).resolve().parent.parent
HARNESS_REQUIREMENTS = [
    "psutil>=5.9", "matplotlib>=3.8", "psycopg[binary]>=3.2", "redis>=5",
    # The test servers of the brokers no package gives a server for (bench/services.py):
    # moto's SQS server, and the IronMQ emulator and MongoDB test server of qhive-testkit.
    "moto[server]>=5.0", "pymongo>=4.9,<5", "mongomock>=4.3", "mockupdb>=1.8",
    f"-e {REPO_DIR / 'core'}", f"-e {REPO_DIR / 'testkit'}",
]


def requirements_hash(requirements: list[str]) -> str:
    digest = hashlib.sha256(sys.version.encode())
    for line in requirements:
        digest.update(line.encode() + b"\n")
        if line.startswith("-e "):
            pyproject = Path(line[3:].strip()) / "pyproject.toml"
            if pyproject.exists():
                digest.update(pyproject.read_bytes())
    return digest.hexdigest()


def venv_python(name: str) -> Path:
    return ENVS_DIR / name / "bin" / "python"


def ensure_venv(name: str, requirements: list[str], log=print) -> Path:
    """The python of venv ``name``, created (or rebuilt) to hold ``requirements``."""
    path = ENVS_DIR / name
    wanted = requirements_hash(requirements)
    stamp = path / STAMP
    python = venv_python(name)
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        _compile_editables(python, requirements)
        return python
    log(f"venv {name}: installing {', '.join(requirements)} (pip, a minute or two) ...")
    if path.exists():
        shutil.rmtree(path)
    # The machine's python3 (the one running this), not some venv it may sit in.
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(path)], check=True)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    args = []
    for line in requirements:
        args += ["-e", line[3:].strip()] if line.startswith("-e ") else [line]
    result = subprocess.run([*pip, "install", *args], capture_output=True, text=True)
    if result.returncode:
        shutil.rmtree(path, ignore_errors=True)
        raise RuntimeError(f"pip install into {path} failed:\n{result.stdout}\n{result.stderr}")
    stamp.write_text(wanted + "\n")
    _compile_editables(python, requirements)
    return python


def _compile_editables(python: Path, requirements: list[str]) -> None:
    """Byte-compile the editable sources, as pip does for a wheel at install: without it a
    process of an editable system compiles them at every start when the environment says
    ``PYTHONDONTWRITEBYTECODE`` (tens of ms more than a system installed from PyPI)."""
    paths = [line[3:].strip() for line in requirements if line.startswith("-e ")]
    if paths:  # compileall skips what is up to date
        subprocess.run([str(python), "-m", "compileall", "-q", "-j", "0", *paths],
                       check=True, stdout=subprocess.DEVNULL)


def freeze(python: Path) -> list[str]:
    """``pip freeze`` of a venv (editable installs shown as their project name)."""
    out = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", "list",
                          "--format=freeze"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if line.strip()]

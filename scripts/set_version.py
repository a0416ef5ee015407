"""Write the version in ``VERSION`` into every package's ``pyproject.toml``.

``VERSION`` (repository root) is the one place the version is set: every package is
released at it. This script writes it into each ``[project] version`` and into every
requirement on another package of this repository (``qhive``, ``qhive-*``), as the range
``>=VERSION,<MAJOR.MINOR+1``: packages of one minor series work together, and a
bug-fix release of one package needs no release of the others.

``make dist`` runs it before building. ``--check`` only reports what disagrees (exit 1);
``tests/test_packaging.py`` runs the same comparison.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The folders that hold a package's pyproject.toml (the Makefile's PACKAGES too).
PACKAGE_GLOBS = ("core", "testkit", "django_integration", "plugins/*/*")
_VERSION = re.compile(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?(?:\.post\d+)?(?:\.dev\d+)?")
_REQUIREMENT = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?P<extras>\[[^\]]*\])?(?P<rest>.*)")


def read_version(root: Path = ROOT) -> str:
    version = (root / "VERSION").read_text().strip()
    if not _VERSION.fullmatch(version):
        raise SystemExit(f"VERSION: {version!r} is not a version such as 1.2.3 or 1.2.3rc1")
    return version


def pyprojects(root: Path = ROOT) -> list[Path]:
    return sorted(p for pattern in PACKAGE_GLOBS for p in root.glob(f"{pattern}/pyproject.toml"))


def version_range(version: str) -> str:
    major, minor = (int(part) for part in version.split(".")[:2])
    return f">={version},<{major}.{minor + 1}"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(project: dict) -> list[str]:
    found = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        found.extend(extra)
    return found


def expected(path: Path, version: str, ours: set[str]) -> tuple[str, list[tuple[str, str]]]:
    """``path``'s text as it should be, and its (found, expected) disagreements."""
    text = path.read_text()
    project = tomllib.loads(text)["project"]
    wrong: list[tuple[str, str]] = []
    if project.get("version") != version:
        wrong.append((f'version = "{project.get("version")}"', f'version = "{version}"'))
        text = re.sub(r'(?m)^version = "[^"]*"$', f'version = "{version}"', text, count=1)
    for requirement in _requirements(project):
        match = _REQUIREMENT.fullmatch(requirement)
        if not match or _normalize(match["name"]) not in ours:
            continue
        marker = match["rest"].partition(";")[2]  # keep an environment marker, if any
        want = f'{match["name"]}{match["extras"] or ""}{version_range(version)}'
        want += f"; {marker.strip()}" if marker else ""
        if requirement != want:
            wrong.append((requirement, want))
            # a quoted requirement, not the package's own `name = "qhive"`
            text = re.sub(rf'(?<!name = )"{re.escape(requirement)}"', f'"{want}"', text)
    return text, wrong


def _ours(paths: list[Path]) -> set[str]:
    return {_normalize(tomllib.loads(p.read_text())["project"]["name"]) for p in paths}


def mismatches(root: Path = ROOT) -> list[str]:
    """Every place a pyproject.toml disagrees with ``VERSION``, as readable lines."""
    version, paths = read_version(root), pyprojects(root)
    return [f"{p.relative_to(root)}: {found!r} should be {want!r}"
            for p in paths for found, want in expected(p, version, _ours(paths))[1]]


def write(root: Path = ROOT) -> int:
    """Bring every pyproject.toml in line with ``VERSION``; return how many changed."""
    version, paths = read_version(root), pyprojects(root)
    ours, changed = _ours(paths), 0
    for path in paths:
        text, wrong = expected(path, version, ours)
        if wrong:  # untouched files keep their mtime: the Makefile's env stamp depends on them
            path.write_text(text)
            changed += 1
            print(f"{path.relative_to(root)}: {len(wrong)} change(s)")
    return changed


def main(argv: list[str]) -> int:
    if "--check" in argv:
        wrong = mismatches()
        print("\n".join(wrong) or f"every pyproject.toml is at {read_version()}")
        return 1 if wrong else 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

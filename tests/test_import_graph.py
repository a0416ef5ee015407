"""The shape of the code, checked: no import cycles inside the repo's packages, no
late (function-level) import without a comment saying why it is late, no import of
another qhive distribution that the importing one does not declare, and a
dependency graph between the distributions without cycles.

Imports are read with :mod:`ast` from every module under each distribution's
``src/``, late ones included (a late import is still an edge of the graph: it only
hides a cycle); those under ``if TYPE_CHECKING:`` are not run, so they are not edges.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Distribution:
    name: str
    root: Path
    requires: set[str]  # dependencies: the graph between distributions
    extras: set[str]  # optional dependencies: declared, for an import behind an extra
    packages: set[str]  # top-level import names under src/


@dataclasses.dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module, resolved to a module of the repo where it is one
    path: Path
    line: int
    late: bool
    commented: bool


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions(root: Path) -> list[Distribution]:
    found = []
    for pyproject in sorted(root.glob("**/pyproject.toml")):
        if pyproject.parent == root or ".venv" in pyproject.parts or "build" in pyproject.parts:
            continue
        src = pyproject.parent / "src"
        if not src.is_dir():
            continue
        project = tomllib.loads(pyproject.read_text())["project"]
        requires = {_normal(re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0])
                    for req in project.get("dependencies", [])}
        extras = {_normal(re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0])
                  for reqs in project.get("optional-dependencies", {}).values() for req in reqs}
        packages = {p.name for p in src.iterdir() if (p / "__init__.py").is_file()}
        found.append(Distribution(_normal(project["name"]), pyproject.parent, requires,
                                  extras, packages))
    return found


def _modules(dist: Distribution) -> Iterator[tuple[str, Path]]:
    src = dist.root / "src"
    for path in sorted(src.rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement that runs, and whether it is inside a function."""
    def walk(node: ast.AST, late: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    yield from walk(other, late)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, late
            yield from walk(child, late or isinstance(child, ast.FunctionDef
                                                      | ast.AsyncFunctionDef | ast.Lambda))
    yield from walk(tree, False)


def _commented(lines: list[str], line: int) -> bool:
    """A comment on the import's line, or above the block of imports it belongs to."""
    if "#" in lines[line - 1]:
        return True
    above = line - 1
    while above >= 1 and lines[above - 1].strip().startswith(("import ", "from ")):
        above -= 1
    return above >= 1 and lines[above - 1].strip().startswith("#")


def imports(dists: Iterable[Distribution]) -> list[Import]:
    dists = list(dists)
    known = {name for dist in dists for name, _ in _modules(dist)}
    found = []
    for dist in dists:
        for module, path in _modules(dist):
            source = path.read_text()
            lines = source.splitlines()
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            for node, late in _import_nodes(ast.parse(source, str(path))):
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                else:
                    base = node.module or ""
                    if node.level:
                        parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                        base = ".".join([*parent, *([base] if base else [])])
                    targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known
                               else base for alias in node.names]
                commented = _commented(lines, node.lineno)
                for target in dict.fromkeys(targets):
                    found.append(Import(module, target, path, node.lineno, late, commented))
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def problems(root: Path) -> list[str]:
    """Everything wrong with the import shape of the distributions under ``root``."""
    dists = distributions(root)
    found = imports(dists)
    owner = {package: dist for dist in dists for package in dist.packages}
    known = {name for dist in dists for name, _ in _modules(dist)}
    report = []

    modules: dict[str, set[str]] = {}
    for imp in found:
        if imp.target in known and imp.target != imp.module:
            modules.setdefault(imp.module, set()).add(imp.target)
    report += [f"import cycle: {' <-> '.join(group)}" for group in cycles(modules)]

    for imp in found:
        where = f"{imp.path.relative_to(root)}:{imp.line}"
        if imp.late and not imp.commented:
            report.append(f"{where}: late import of {imp.target} without a comment saying why")
        importer = owner[imp.module.partition(".")[0]]
        target = owner.get(imp.target.partition(".")[0])
        declared = importer.requires | importer.extras
        if target is not None and target is not importer and target.name not in declared:
            report.append(f"{where}: {importer.name} imports {imp.target} from {target.name}, "
                          f"which its pyproject.toml does not declare")

    graph = {d.name: {r for r in d.requires if r in {o.name for o in dists}} for d in dists}
    report += [f"distribution cycle: {' <-> '.join(g)}" for g in cycles(graph)]
    return sorted(set(report))


# --------------------------------------------------------------------------- the repo


def test_the_repo_has_no_import_cycle_late_import_without_reason_or_undeclared_import():
    assert problems(ROOT) == []


def test_every_package_of_the_repo_is_scanned():
    names = {dist.name for dist in distributions(ROOT)}
    assert {"qhive", "qhive-django", "qhive-testkit", "qhive-broker-orm", "qhive-broker-redis",
            "qhive-store-orm", "qhive-store-redis", "qhive-store-cache",
            "qhive-redis-client"} <= names


def test_the_django_app_reaches_result_stores_through_their_contract():
    """No module of qhive_django imports a result store or broker plugin's package
    (the default ORM plugins are dependencies, reached through the contract)."""
    dists = [d for d in distributions(ROOT) if d.name == "qhive-django"]
    reached = {imp.target.partition(".")[0] for imp in imports(dists)}
    assert not reached & {"qhive_store_orm", "qhive_store_redis", "qhive_store_cache",
                          "qhive_broker_redis"}


# --------------------------------------------------------------------------- the test of the test


def _package(root: Path, dist: str, package: str, requires: list[str],
             modules: dict[str, str]) -> None:
    base = root / dist
    (base / "src" / package).mkdir(parents=True)
    (base / "pyproject.toml").write_text(
        f'[project]\nname = "{dist}"\ndependencies = {requires!r}\n'.replace("'", '"'))
    (base / "src" / package / "__init__.py").write_text("")
    for name, text in modules.items():
        (base / "src" / package / f"{name}.py").write_text(text)


def test_the_checker_finds_cycles_late_imports_and_undeclared_distributions(tmp_path):
    _package(tmp_path, "alpha", "alpha", ["beta>=1"], {
        "a": "from alpha import b\n",
        "b": "def f():\n    from alpha import a\n",  # late, no reason: and a cycle
        "c": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from alpha import d\n"
              "def g():\n    # optional: only some users have it\n    import gamma.x\n"),
        "d": "from alpha import c\n",  # c -> d only under TYPE_CHECKING: no cycle
    })
    _package(tmp_path, "beta", "beta", ["alpha"], {"e": "import alpha.a\n"})
    _package(tmp_path, "gamma", "gamma", [], {"x": "from . import y\n", "y": "from .x import *\n"})

    found = problems(tmp_path)

    assert "import cycle: alpha.a <-> alpha.b" in found
    assert "import cycle: gamma.x <-> gamma.y" in found, "relative imports are resolved"
    assert any("alpha/src/alpha/b.py:2: late import of alpha.a without a comment" in p
               for p in found)
    assert any("alpha imports gamma.x from gamma, which its pyproject.toml does not declare"
               in p for p in found)
    assert "distribution cycle: alpha <-> beta" in found
    assert not any("alpha.c <-> alpha.d" in p or "alpha/src/alpha/c.py:6: late" in p
                   for p in found), "TYPE_CHECKING and commented late imports are fine"
    assert len(found) == 5, found


@pytest.mark.parametrize("snippet", ["def f():\n    import os  # why\n",
                                     "def f():\n    # why\n    import os\n",
                                     "def f():\n    # why\n    import os\n    import re\n"])
def test_a_late_import_with_a_reason_passes(tmp_path, snippet):
    _package(tmp_path, "solo", "solo", [], {"m": snippet})
    assert problems(tmp_path) == []

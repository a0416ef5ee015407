"""One version for every package: ``VERSION``, which ``scripts/set_version.py`` (run by
``make dist``) writes into each pyproject.toml. The built wheels themselves are checked by
``test_install_like_a_user.py``."""

import importlib.util
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_set_version():
    path = ROOT / "scripts" / "set_version.py"
    spec = importlib.util.spec_from_file_location("set_version", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


set_version = load_set_version()


def test_every_pyproject_agrees_with_version():
    assert set_version.pyprojects(), "no package found"
    assert set_version.mismatches() == [], "run: python scripts/set_version.py"


def test_a_disagreement_is_found_and_written(tmp_path):
    for path in ("VERSION", "core/pyproject.toml", "plugins/brokers/orm/pyproject.toml"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    (tmp_path / "VERSION").write_text("2.3.0rc1\n")
    assert set_version.mismatches(tmp_path) == [
        'core/pyproject.toml: \'version = "0.1.0"\' should be \'version = "2.3.0rc1"\'',
        "plugins/brokers/orm/pyproject.toml: 'version = \"0.1.0\"' should be "
        "'version = \"2.3.0rc1\"'",
        "plugins/brokers/orm/pyproject.toml: 'qhive>=0.1.0,<0.2' should be "
        "'qhive>=2.3.0rc1,<2.4'",
    ]
    assert set_version.write(tmp_path) == 2
    assert set_version.mismatches(tmp_path) == []
    text = (tmp_path / "plugins/brokers/orm/pyproject.toml").read_text()
    assert 'name = "qhive-broker-orm"' in text and '"qhive>=2.3.0rc1,<2.4"' in text


def test_every_package_is_typed():
    for pyproject in set_version.pyprojects():
        [package] = [d for d in (pyproject.parent / "src").iterdir()
                     if d.is_dir() and not d.name.endswith(".egg-info")]
        assert (package / "py.typed").is_file(), package

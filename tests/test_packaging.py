"""The installed distribution claims only the `lidarseg` import name: the repository's models/ folder is installed
as `lidarseg.models` (setup.cfg), and in a checkout `models` and `lidarseg.models` are the same module objects. A
wheel carries configs/ as lidarseg/configs, where `lidarseg.CONFIG_DIR` finds it outside a checkout."""
import configparser
import shutil
import subprocess
import sys

import pytest

from lidarseg import CONFIG_DIR, PROJECT_ROOT, _locate
from lidarseg.engine.config import ConfigError, load_config


def _options():
    cfg = configparser.ConfigParser()
    cfg.read(PROJECT_ROOT / "setup.cfg")
    packages = [p.strip() for p in cfg["options"]["packages"].split("\n") if p.strip()]
    package_dir = dict(tuple(x.strip() for x in line.split("=")) for line in cfg["options"]["package_dir"].split("\n")
                       if line.strip())
    return packages, package_dir


def test_every_package_is_installed_under_lidarseg():
    packages, package_dir = _options()
    on_disk = sorted(".".join(p.parent.relative_to(PROJECT_ROOT).parts)
                     for p in (PROJECT_ROOT / "lidarseg").rglob("__init__.py"))
    assert sorted(set(packages) - {"lidarseg.models", "lidarseg.configs"}) == on_disk
    assert package_dir == {"lidarseg.models": "models", "lidarseg.configs": "configs"}
    assert all(p == "lidarseg" or p.startswith("lidarseg.") for p in packages)


def test_models_and_lidarseg_models_are_one_module():
    import lidarseg.models
    import models
    from lidarseg.models.rangenet import RangeNet as A
    from models.rangenet import RangeNet as B
    assert models is lidarseg.models and A is B and models.MODELS is lidarseg.models.MODELS
    assert type(lidarseg.models.build_model("rangenet21", 20, 5, width=0.125, blocks=[1] * 5)) is B


def test_locate_checkout_and_wheel_layouts(tmp_path):
    checkout = tmp_path / "repo"
    (checkout / "configs").mkdir(parents=True)
    (checkout / "configs" / "base.yaml").write_text("{}\n")
    (checkout / "lidarseg").mkdir()
    cwd = tmp_path / "work"
    assert _locate(checkout / "lidarseg", cwd) == (checkout, checkout / "configs")
    site = tmp_path / "site-packages"
    (site / "lidarseg" / "configs").mkdir(parents=True)
    assert _locate(site / "lidarseg", cwd) == (cwd, site / "lidarseg" / "configs")
    assert (PROJECT_ROOT / "configs", CONFIG_DIR) == (CONFIG_DIR, PROJECT_ROOT / "configs")  # this checkout


def test_shipped_config_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("configs/demo.yaml", "demo.yaml"):
        assert load_config(name)["train"]["epochs"] == load_config(CONFIG_DIR / "demo.yaml")["train"]["epochs"]
    with pytest.raises(ConfigError, match="not found: .*configs/nope.yaml"):
        load_config("configs/nope.yaml")


def test_wheel_carries_every_config(tmp_path):
    """setuptools' build_py (what a wheel holds) on a copy of the sources: every config lands in lidarseg/configs
    and models/ only as lidarseg/models."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, src / name)
    for name in ("lidarseg", "models", "configs"):
        shutil.copytree(PROJECT_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    lib = tmp_path / "lib"
    done = subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
                           "--build-lib", str(lib)], cwd=src, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    names = {str(p.relative_to(lib)) for p in lib.rglob("*") if p.is_file()}
    configs = sorted(str(p.relative_to(PROJECT_ROOT / "configs")) for p in (PROJECT_ROOT / "configs").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts)
    assert configs and "base.yaml" in configs
    missing = [c for c in configs if f"lidarseg/configs/{c}" not in names]
    assert not missing, f"configs missing from the wheel: {missing}"
    assert "lidarseg/models/__init__.py" in names and not any(n.startswith("models/") for n in names)

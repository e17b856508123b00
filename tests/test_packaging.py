"""The installed distribution claims only the `lidarseg` import name: the repository's models/ folder is installed
as `lidarseg.models` (setup.cfg), and in a checkout `models` and `lidarseg.models` are the same module objects."""
import configparser

from lidarseg import PROJECT_ROOT


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
    assert sorted(set(packages) - {"lidarseg.models"}) == on_disk
    assert package_dir == {"lidarseg.models": "models"}
    assert all(p == "lidarseg" or p.startswith("lidarseg.") for p in packages)


def test_models_and_lidarseg_models_are_one_module():
    import lidarseg.models
    import models
    from lidarseg.models.rangenet import RangeNet as A
    from models.rangenet import RangeNet as B
    assert models is lidarseg.models and A is B and models.MODELS is lidarseg.models.MODELS
    assert type(lidarseg.models.build_model("rangenet21", 20, 5, width=0.125, blocks=[1] * 5)) is B

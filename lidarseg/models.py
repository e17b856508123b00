"""`lidarseg.models`: the networks of the repository's `models/` folder (docs/models.md).

An installed distribution holds them as the package `lidarseg/models/` (setup.cfg maps the folder there, so nothing
claims the top-level name `models` in site-packages), and that package shadows this module. In a checkout whose
install does not map `lidarseg.models` (or with no install: the repository root on sys.path), this module loads the
folder under this name.
"""
import importlib.util as _util
import sys as _sys
from pathlib import Path as _Path

_folder = _Path(__file__).resolve().parent.parent / "models"
if not (_folder / "__init__.py").is_file():
    raise ImportError(f"lidarseg.models: the networks folder {_folder} is missing (reinstall lidarseg)")
_spec = _util.spec_from_file_location(__name__, _folder / "__init__.py", submodule_search_locations=[str(_folder)])
_module = _util.module_from_spec(_spec)
_sys.modules[__name__] = _module
_spec.loader.exec_module(_module)

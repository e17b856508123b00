"""Checks of the output paths given on the command line, so a wrong `--out` or `--json` is a one-line error at
start-up instead of a NotADirectoryError, FileExistsError or IsADirectoryError after the work is done."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def _parents_ok(path: Path, option: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{option} {path}: {parent} is a file, not a directory")
            return


def check_out_dir(path, option: str = "--out") -> Path:
    """`path` will be a directory: it must not be an existing file, nor lie under one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is an existing file; expected a directory (new or existing)")
    _parents_ok(path, option)
    return path


def check_out_file(path, option: str = "--out") -> Path:
    """`path` will be written as a file: it must not be an existing directory, nor lie under a file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is an existing directory; expected a file name")
    _parents_ok(path, option)
    return path

"""Scan sources by name: each dataset format is one module here plus a label config in configs/.

    source = build_source("semantic-kitti", root)          # or "semantic-poss", "nuscenes", "folder"
    for item in source.list_scans(source.resolve("valid"), with_labels=True):
        points = source.read_points(item)                   # float32 [N,4]
        labels = source.read_train_labels(item, len(points))

A new dataset: a module defining a `ScanSource` subclass decorated with `@register_source("name")`, listed in
`_BUILTIN` (so it is imported on first use), and its label config.
"""
from __future__ import annotations

import importlib

from ...errors import ConfigError
from .base import SOURCES, ScanItem, ScanSource, register_source

__all__ = ["SOURCES", "ScanItem", "ScanSource", "register_source", "source_class", "build_source", "source_names",
           "DEFAULT_SOURCE"]

DEFAULT_SOURCE = "semantic-kitti"
#: source name -> module of this package that registers it
_BUILTIN = {"semantic-kitti": "kitti", "semantic-poss": "kitti", "folder": "folder", "nuscenes": "nuscenes"}


def source_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(SOURCES))


def source_class(name: str) -> type:
    if name not in SOURCES and name in _BUILTIN:
        importlib.import_module(f".{_BUILTIN[name]}", __name__)
    if name not in SOURCES:
        raise ConfigError(f"unknown dataset format {name!r}; valid: {source_names()}")
    return SOURCES[name]


def build_source(name: str | None, root, label_map=None, **options) -> ScanSource:
    """The source `name` (None: semantic-kitti) over `root`; `label_map` None = the source's own label config."""
    return source_class(name or DEFAULT_SOURCE)(root, label_map=label_map, **options)

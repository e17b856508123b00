"""The data layer: scan files -> points -> range images -> batches.

Modules: `sources` (datasets by name: layout, readers, label config, prediction format), `representation`
(input families by name: samples, collate, forward inputs, logits -> points), `io` (readers/writers), `labels`
(LabelMap), `projection` (spherical projection, scan unfolding), `dataset` (range-image Dataset and collate),
`augment` (point augmentation), `stats` (dataset statistics),
`synthetic` (the synthetic SemanticKITTI-format generator), `kprnet` (KPRNet's input pipeline).
"""
import importlib

_EXPORTS = {
    "build_source": "sources", "ScanSource": "sources", "ScanItem": "sources",
    "representation_of": "representation", "get_representation": "representation",
    "read_points_file": "io", "rows_projection": "projection",
    "read_scan": "io", "read_label": "io", "split_label": "io", "join_label": "io",
    "write_scan": "io", "write_label": "io", "atomic_write": "io", "atomic_write_bytes": "io",
    "LabelMap": "labels",
    "spherical_projection": "projection", "scan_unfolding": "projection",
    "SemanticKITTI": "dataset", "collate": "dataset",
    "PointAugmentation": "augment",
    "compute_stats": "stats",
    "KPRNetDataset": "kprnet", "collate_kprnet": "kprnet", "KPRNetGeometry": "kprnet",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    # Lazy so that `import lidarseg.data` stays cheap (numba compiles only when a projection is used).
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Synthetic SemanticKITTI-format LiDAR drives: the embedded default dataset (see docs/synthetic.md).

`generate(out_dir, sequences, scans, seed, ...)` writes sequences in SemanticKITTI's layout; `ensure_dataset(root)`
generates the default dataset only when it is absent or incomplete; `generate_scan(...)` returns one scan in memory.
"""
from .generate import (DEFAULT_SCANS, ScanSimulator, dataset_complete, ensure_dataset, generate, generate_scan)
from .sensor import SensorConfig

__all__ = ["DEFAULT_SCANS", "ScanSimulator", "SensorConfig", "dataset_complete", "ensure_dataset", "generate",
           "generate_scan"]

"""Scan and label files in SemanticKITTI's on-disk format.

A scan `.bin` is float32 little-endian [N,4] (x, y, z in metres, remission in [0,1]); a `.label` is uint32 [N] with the
semantic id in the low 16 bits and the instance id in the high 16 bits.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DataError


def _file_size(path: Path, what: str) -> int:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{what} file is empty: {path}")
    return size


def read_scan(path) -> np.ndarray:
    """Read a KITTI velodyne `.bin` file -> float32 [N,4] (x, y, z, remission)."""
    size = _file_size(path, "scan")
    if size % 16:
        raise DataError(f"scan file {path}: size {size} bytes is not a multiple of 16 (4 float32 per point)")
    return np.fromfile(path, dtype="<f4").reshape(-1, 4)


def read_label(path, num_points: int | None = None) -> np.ndarray:
    """Read a SemanticKITTI `.label` file -> raw uint32 [N]. With `num_points`, check it matches the scan."""
    size = _file_size(path, "label")
    if size % 4:
        raise DataError(f"label file {path}: size {size} bytes is not a multiple of 4 (one uint32 per point)")
    label = np.fromfile(path, dtype="<u4")
    if num_points is not None and label.shape[0] != num_points:
        raise DataError(f"label file {path} has {label.shape[0]} labels but its scan has {num_points} points")
    return label


def split_label(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint32 labels -> (semantic id = low 16 bits, instance id = high 16 bits), both uint32 [N]."""
    label = np.asarray(label, dtype=np.uint32)
    return label & np.uint32(0xFFFF), label >> np.uint32(16)


def join_label(semantic: np.ndarray, instance: np.ndarray | None = None) -> np.ndarray:
    """Inverse of `split_label`: semantic | instance << 16, uint32 [N]."""
    semantic = np.asarray(semantic, dtype=np.uint32)
    if np.any(semantic > 0xFFFF):
        raise ValueError("semantic ids must fit in 16 bits")
    if instance is None:
        return semantic.copy()
    return semantic | (np.asarray(instance, dtype=np.uint32) << np.uint32(16))


def _file_mode() -> int:
    """Permissions of a newly created file under the process umask (0o644 for umask 022). mkstemp creates 0o600
    files; without this, every prediction, checkpoint and PNG would be private to its writer."""
    try:
        with open("/proc/self/status") as f:  # Linux: reads the umask without changing it
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path, write, *, fsync: bool = False) -> Path:
    """Call `write(f)` with a binary file `f` open on a temporary file in the directory of `path` (created if
    needed), then rename it to `path`, so an interrupted write never leaves a partial file under the final name; on
    any error the temporary file is removed. With `fsync`, the data reach the disk before the rename. The file gets
    the usual permissions of a new file (0o666 minus the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` with `atomic_write`."""
    atomic_write(path, lambda f: f.write(data))


def write_scan(path, points: np.ndarray) -> None:
    """Write float32 [N,4] points as a KITTI `.bin` file (atomically)."""
    points = np.ascontiguousarray(points, dtype="<f4")
    if points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f"points must be [N,4], got {points.shape}")
    atomic_write_bytes(path, points.tobytes())


def write_label(path, label: np.ndarray) -> None:
    """Write raw uint32 [N] labels as a SemanticKITTI `.label` file (atomically)."""
    atomic_write_bytes(path, np.ascontiguousarray(label, dtype="<u4").tobytes())

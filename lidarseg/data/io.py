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


# ------------------------------------------------------------------------------------------------ other scan formats
#: scan file suffixes `read_points_file` understands (a folder of scans must use one of them throughout)
POINT_SUFFIXES = (".bin", ".pcd", ".npy", ".npz")
_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8",
              ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}


def read_pcd(path) -> np.ndarray:
    """A PCD file (DATA ascii or binary; not binary_compressed) with fields x y z and intensity (or remission,
    or none: 0) -> float32 [N,4]. Other fields are skipped; unsupported headers raise DataError naming the file."""
    path = Path(path)
    _file_size(path, "scan")
    raw = path.read_bytes()
    header, pos = {}, 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise DataError(f"PCD file {path}: header ends before its DATA line")
        line = raw[pos:end].decode("ascii", "replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        header[key.upper()] = value.split()
        if key.upper() == "DATA":
            break
    fields = header.get("FIELDS")
    if not fields:
        raise DataError(f"PCD file {path}: no FIELDS line in the header")
    n_fields = len(fields)
    sizes = [int(v) for v in header.get("SIZE", ["4"] * n_fields)]
    types = header.get("TYPE", ["F"] * n_fields)
    counts = [int(v) for v in header.get("COUNT", ["1"] * n_fields)]
    points = int(header.get("POINTS", header.get("WIDTH", ["0"]))[0])
    data = header["DATA"][0].lower()
    missing = [f for f in ("x", "y", "z") if f not in fields]
    if missing:
        raise DataError(f"PCD file {path}: fields {fields} lack {missing}; expected x y z and intensity")
    if len(sizes) != n_fields or len(types) != n_fields or len(counts) != n_fields:
        raise DataError(f"PCD file {path}: FIELDS, SIZE, TYPE and COUNT have different lengths")
    try:
        dtype = np.dtype([(f"{f}_{i}" if c > 1 else f, "<" + _PCD_TYPES[(t.upper(), s)], (c,) if c > 1 else ())
                          for i, (f, s, t, c) in enumerate(zip(fields, sizes, types, counts))])
    except KeyError:
        raise DataError(f"PCD file {path}: unsupported TYPE/SIZE in {list(zip(types, sizes))}") from None
    if data == "binary":
        need = points * dtype.itemsize
        if len(raw) - pos < need:
            raise DataError(f"PCD file {path}: {len(raw) - pos} data bytes, expected {need} for {points} points")
        rec = np.frombuffer(raw, dtype=dtype, count=points, offset=pos)
    elif data == "ascii":
        try:
            table = np.loadtxt(raw[pos:].decode("ascii").splitlines(), dtype=np.float64, ndmin=2)
        except ValueError as exc:
            raise DataError(f"PCD file {path}: ASCII data not readable ({exc})") from None
        if table.shape[0] != points or table.shape[1] != sum(counts):
            raise DataError(f"PCD file {path}: {table.shape[0]}x{table.shape[1]} values, expected {points} points "
                            f"of {sum(counts)} values")
        cols = np.cumsum([0] + counts)
        rec = {f: table[:, cols[i]] for i, f in enumerate(fields)}
    else:
        raise DataError(f"PCD file {path}: DATA {data} is not supported; expected ascii or binary "
                        "(save binary_compressed files uncompressed)")
    out = np.zeros((points, 4), np.float32)
    for j, f in enumerate(("x", "y", "z")):
        out[:, j] = rec[f]
    for name in ("intensity", "remission", "reflectance", "i"):
        if name in fields:
            out[:, 3] = rec[name]
            break
    return out


def _read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as z:
                if "points" in z.files:
                    keys = ["points"]
                elif len(z.files) == 1:
                    keys = z.files
                else:
                    raise DataError(f"{path}: holds arrays {z.files}; expected one array or one named 'points'")
                arr = z[keys[0]]
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable {path.suffix} file ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] < 3 or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path}: expected a numeric array [N,>=3] (x, y, z[, remission]), got {arr.dtype} "
                        f"{arr.shape}")
    out = np.zeros((arr.shape[0], 4), np.float32)
    out[:, :min(4, arr.shape[1])] = arr[:, :4]
    return out


def read_points_file(path) -> np.ndarray:
    """Any supported scan file -> float32 [N,4] (x, y, z, remission): KITTI `.bin` (float32 [N,4]), `.pcd`
    (ascii or binary), `.npy` / `.npz` (float [N,>=3], x y z first, remission fourth if present)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".bin":
        return read_scan(path)
    if suffix == ".pcd":
        return read_pcd(path)
    if suffix in (".npy", ".npz"):
        _file_size(path, "scan")
        return _read_array(path)
    raise DataError(f"scan file {path}: unsupported format {path.suffix!r}; expected one of {list(POINT_SUFFIXES)}")


def write_pcd(path, points: np.ndarray, binary: bool = True) -> None:
    """float32 [N,4] -> a PCD v0.7 file with fields x y z intensity (DATA binary or ascii), atomically."""
    points = np.ascontiguousarray(points, dtype="<f4")
    n = points.shape[0]
    head = (f"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 4\n"
            f"TYPE F F F F\nCOUNT 1 1 1 1\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\n"
            f"DATA {'binary' if binary else 'ascii'}\n").encode()
    body = points.tobytes() if binary else "".join(
        " ".join(repr(float(v)) for v in row) + "\n" for row in points).encode()
    atomic_write_bytes(path, head + body)

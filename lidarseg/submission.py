"""SemanticKITTI prediction files and the benchmark submission zip.

`write_prediction` writes one uint32 raw id per point (learning_map_inv applied), in the original point order, to
``PRED/sequences/NN/predictions/NNNNNN.label`` through a temporary file and a rename. `build_submission` zips the
predictions of the test sequences with explicit directory entries (``sequences/``, ``sequences/NN/``,
``sequences/NN/predictions/``) and `validate_submission` checks a zip as semantic-kitti-api's
validate_submission.py does: every velodyne scan of every test sequence has a prediction with
``file_size / 4 == velodyne_size / 16``.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .data.io import atomic_write, write_label
from .data.labels import LabelMap
from .errors import DataError


def _seq(sequence) -> str:
    s = str(sequence)
    return f"{int(s):02d}" if s.isdigit() else s


def _scan(scan) -> str:
    s = str(scan)
    if s.endswith(".label") or s.endswith(".bin"):
        s = s.rsplit(".", 1)[0]
    return f"{int(s):06d}" if s.isdigit() else s


def prediction_path(pred_root, sequence, scan) -> Path:
    return Path(pred_root) / "sequences" / _seq(sequence) / "predictions" / f"{_scan(scan)}.label"


def write_prediction(pred_root, sequence, scan, train_ids, label_map: LabelMap) -> Path:
    """Write train ids [N] (numpy or torch) as raw SemanticKITTI ids, uint32, atomically; returns the path."""
    if hasattr(train_ids, "detach"):
        train_ids = train_ids.detach().cpu().numpy()
    train_ids = np.asarray(train_ids)
    if train_ids.ndim != 1 or not np.issubdtype(train_ids.dtype, np.integer):
        raise DataError(f"prediction for sequence {sequence} scan {scan}: expected integer train ids [N], got "
                        f"{train_ids.dtype} {train_ids.shape}")
    path = prediction_path(pred_root, sequence, scan)
    write_label(path, label_map.to_raw(train_ids).astype(np.uint32))
    return path


def test_sequences(data_root, label_map: LabelMap, sequences=None):
    """(present, missing) sequence names: the given ones or the label config's test split, split by whether
    DATA/sequences/NN/velodyne exists."""
    names = [_seq(s) for s in (sequences if sequences is not None else label_map.sequences("test"))]
    present = [s for s in names if (Path(data_root) / "sequences" / s / "velodyne").is_dir()]
    return present, [s for s in names if s not in present]


def _check_predictions(pred_root, data_root, sequences):
    """[(seq, stem, prediction path)] for every velodyne scan; DataError naming missing / wrong-length files."""
    files, problems = [], []
    for seq in sequences:
        velo_dir = Path(data_root) / "sequences" / seq / "velodyne"
        scans = sorted(velo_dir.glob("*.bin"))
        if not scans:
            problems.append(f"no .bin scans in {velo_dir}")
        for bin_path in scans:
            pred = prediction_path(pred_root, seq, bin_path.stem)
            if not pred.is_file():
                problems.append(f"missing prediction {pred} for scan {bin_path}")
                continue
            n_pred, n_pts = pred.stat().st_size / 4, bin_path.stat().st_size / 16
            if n_pred != n_pts:
                problems.append(f"prediction {pred} has {n_pred:g} labels but scan {bin_path} has {n_pts:g} points")
            files.append((seq, bin_path.stem, pred))
    if problems:
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DataError(f"{len(problems)} problem(s) with the predictions in {pred_root}:\n  "
                        + "\n  ".join(problems[:10]) + more)
    return files


def _dir_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = (0o40755 << 16) | 0x10
    return info


def build_submission(pred_root, data_root, out_zip, sequences) -> Path:
    """Check the predictions of `sequences` and write them to `out_zip` (atomically) with explicit directory
    entries. Returns the zip path."""
    out_zip = Path(out_zip)
    if out_zip.suffix != ".zip":
        raise DataError(f"submission file must end with .zip, got {out_zip}")
    files = _check_predictions(pred_root, data_root, sequences)

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(_dir_info("sequences/"), b"")
            for seq in sequences:
                zf.writestr(_dir_info(f"sequences/{seq}/"), b"")
                zf.writestr(_dir_info(f"sequences/{seq}/predictions/"), b"")
                for s, stem, pred in files:
                    if s == seq:
                        zf.write(pred, f"sequences/{seq}/predictions/{stem}.label")

    return atomic_write(out_zip, write)


def validate_submission(zip_path, data_root, sequences) -> list[str]:
    """The checks of validate_submission.py (segmentation task); returns the passed checks, raises DataError on
    the first failure."""
    zip_path = Path(zip_path)
    passed = []
    if not str(zip_path).endswith(".zip"):
        raise DataError(f"submission {zip_path} must be a .zip file")
    passed.append("file is a .zip")
    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist()
        dirs = {i.filename for i in infos if i.is_dir()}
        sizes = {i.filename: i.file_size for i in infos if not i.is_dir()}
    needed = ["sequences/"] + [d for s in sequences for d in (f"sequences/{s}/", f"sequences/{s}/predictions/")]
    for d in needed:
        if d not in dirs:
            raise DataError(f"submission {zip_path}: directory entry {d!r} missing")
    passed.append(f"directory entries for sequences {', '.join(sequences)}")
    for seq in sequences:
        velo_dir = Path(data_root) / "sequences" / seq / "velodyne"
        for bin_path in sorted(velo_dir.glob("*.bin")):
            name = f"sequences/{seq}/predictions/{bin_path.stem}.label"
            if name not in sizes:
                raise DataError(f"submission {zip_path}: {name} missing (scan {bin_path})")
            if sizes[name] / 4 != bin_path.stat().st_size / 16:
                raise DataError(f"submission {zip_path}: {name} has {sizes[name] / 4:g} labels but scan {bin_path} "
                                f"has {bin_path.stat().st_size / 16:g} points")
        passed.append(f"sequence {seq}: every scan has a prediction of the right length")
    return passed

"""SemanticKITTI prediction files and the benchmark submission zip.

`write_prediction` writes one uint32 raw id per point (learning_map_inv applied), in the original point order, to
``PRED/sequences/NN/predictions/NNNNNN.label`` through a temporary file and a rename. `build_submission` zips the
predictions of the test sequences with explicit directory entries (``sequences/``, ``sequences/NN/``,
``sequences/NN/predictions/``) and `validate_submission` checks a zip as semantic-kitti-api's
validate_submission.py does: every velodyne scan of every test sequence has a prediction with
``file_size / 4 == velodyne_size / 16``.

A prediction folder written by `lidarseg infer` carries a manifest, ``PRED/lidarseg-predictions.json``: who wrote
it (checkpoint path, SHA-256, epoch, step, KNN options) and, per split, the limit, whether the run finished
(``complete``, written last) and the files it wrote. `prepare_folder` refuses to add predictions of another
writer or limit to a folder, `check_manifest` lets `evaluate` and `submission` refuse interrupted or mixed folders.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from .data.io import atomic_write, atomic_write_bytes, read_label
from .data.labels import LabelMap
from .errors import DataError


def _kitti(label_map: LabelMap | None = None, data_root="."):
    """The SemanticKITTI source of `data_root`: the one home of the layout (velodyne scans, prediction paths)."""
    from .data.sources.kitti import SemanticKITTISource
    return SemanticKITTISource(data_root, label_map=label_map or LabelMap.from_yaml())


def _seq(sequence) -> str:
    from .data.sources.kitti import kitti_sequence_name
    return kitti_sequence_name(str(sequence))


def _scan(scan) -> str:
    s = str(scan)
    if s.endswith(".label") or s.endswith(".bin"):
        s = s.rsplit(".", 1)[0]
    return f"{int(s):06d}" if s.isdigit() else s


def prediction_path(pred_root, sequence, scan) -> Path:
    """PRED/sequences/NN/predictions/NNNNNN.label (SemanticKITTI; other formats: `ScanSource.prediction_path`)."""
    from .data.sources.kitti import kitti_prediction_path
    return kitti_prediction_path(pred_root, _seq(sequence), _scan(scan))


def write_prediction(pred_root, sequence, scan, train_ids, label_map: LabelMap, source=None, item=None) -> Path:
    """Write train ids [N] (numpy or torch) atomically in the prediction format of `source` (a ScanSource, for
    the scan `item`); without them as raw SemanticKITTI ids, uint32, to PRED/sequences/NN/predictions/NNNNNN.label.
    Returns the path. (`infer` writes every prediction through this function.)"""
    from .data.sources import ScanItem
    if source is None:
        source = _kitti(label_map)
    if item is None:
        item = ScanItem(source.sequence_name(str(sequence)), _scan(scan), Path())
    return source.write_prediction(pred_root, item, train_ids)


def test_sequences(data_root, label_map: LabelMap, sequences=None):
    """(present, missing) sequence names: the given ones or the label config's test split, split by whether
    DATA/sequences/NN/velodyne exists."""
    from .data.sources.kitti import kitti_sequence_dir
    names = [_seq(s) for s in (sequences if sequences is not None else label_map.sequences("test"))]
    present = [s for s in names if (kitti_sequence_dir(data_root, s) / "velodyne").is_dir()]
    return present, [s for s in names if s not in present]


def _known_ids(label_map: LabelMap) -> np.ndarray:
    known = np.zeros(1 << 16, dtype=bool)
    known[[r for r in label_map.learning_map if 0 <= r < (1 << 16)]] = True
    return known


def _check_predictions(pred_root, data_root, sequences, label_map: LabelMap | None = None):
    """[(seq, stem, prediction path)] for every velodyne scan; DataError naming missing / wrong-length files and,
    with `label_map`, files holding ids its learning_map does not know (train ids written instead of raw ids: the
    benchmark would score them as unlabelled)."""
    known = _known_ids(label_map) if label_map is not None else None
    source = _kitti(label_map, data_root)
    files, problems = [], []
    for seq in sequences:
        for item in source.list_scans([seq], with_labels=False):
            bin_path, pred = item.points, source.prediction_path(pred_root, item)
            if not pred.is_file():
                problems.append(f"missing prediction {pred} for scan {bin_path}")
                continue
            n_pred, n_pts = pred.stat().st_size / 4, bin_path.stat().st_size / 16
            if n_pred != n_pts:
                problems.append(f"prediction {pred} has {n_pred:g} labels but scan {bin_path} has {n_pts:g} points")
            elif known is not None:
                ids = read_label(pred) & np.uint32(0xFFFF)
                bad = np.unique(ids[~known[ids]])
                if bad.size:
                    problems.append(f"prediction {pred} holds ids {bad[:8].tolist()} that are not raw SemanticKITTI "
                                    f"ids of {label_map.source} (train ids written instead of raw ids?)")
            files.append((item.sequence, item.scan, pred))
    if problems:
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DataError(f"{len(problems)} problem(s) with the predictions in {pred_root}:\n  "
                        + "\n  ".join(problems[:10]) + more)
    return files


def _dir_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = (0o40755 << 16) | 0x10
    return info


def build_submission(pred_root, data_root, out_zip, sequences, label_map: LabelMap | None = None) -> Path:
    """Check the predictions of `sequences` (lengths; with `label_map`, that every id is a raw id it knows) and
    write them to `out_zip` (atomically) with explicit directory entries. Returns the zip path."""
    out_zip = Path(out_zip)
    if out_zip.suffix != ".zip":
        raise DataError(f"submission file must end with .zip, got {out_zip}")
    files = _check_predictions(pred_root, data_root, sequences, label_map)

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
    source = _kitti(None, data_root)
    for seq in sequences:
        for item in source.list_scans([seq], with_labels=False):
            bin_path, name = item.points, f"sequences/{item.sequence}/predictions/{item.scan}.label"
            if name not in sizes:
                raise DataError(f"submission {zip_path}: {name} missing (scan {bin_path})")
            if sizes[name] / 4 != bin_path.stat().st_size / 16:
                raise DataError(f"submission {zip_path}: {name} has {sizes[name] / 4:g} labels but scan {bin_path} "
                                f"has {bin_path.stat().st_size / 16:g} points")
        passed.append(f"sequence {seq}: every scan has a prediction of the right length")
    return passed


# ------------------------------------------------------------------------------------------------ folder manifest
MANIFEST = "lidarseg-predictions.json"
MANIFEST_FORMAT = "lidarseg-predictions"


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(pred_root) -> dict | None:
    """The manifest of a prediction folder, or None when it has none; DataError when it is unreadable."""
    path = Path(pred_root) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"prediction manifest {path} cannot be read ({exc}); delete the folder and run "
                        "`lidarseg infer` again") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path} is not a lidarseg prediction manifest")
    return data


def _write_manifest(pred_root, manifest: dict) -> None:
    atomic_write_bytes(Path(pred_root) / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


def prediction_files(pred_root, sequences=None, source=None, split: str | None = None) -> dict[str, list[str]]:
    """{sequence: sorted scan names} of the prediction files under `pred_root` (those of `sequences`), in the
    layout of `source` (a ScanSource; default SemanticKITTI's PRED/sequences/*/predictions/*.label)."""
    if source is None:
        from .data.sources.kitti import kitti_prediction_files
        return kitti_prediction_files(pred_root, sequences)
    return source.prediction_files(pred_root, sequences, split)


def prepare_folder(pred_root, split: str, writer: dict, limit, overwrite: bool = False, source=None) -> dict:
    """Before `infer` writes predictions of `split` into `pred_root`: refuse a folder that holds predictions of
    another writer (checkpoint, options), of another limit for this split, or without a manifest, unless
    `overwrite` (then every prediction file, MC-dropout variance file and the manifest are deleted first). Records
    this split as incomplete
    in the manifest and returns the manifest to pass to `finish_folder`."""
    pred_root = Path(pred_root)
    existing = read_manifest(pred_root)
    src = source if source is not None else _kitti()
    present = src.prediction_files(pred_root, None, split)
    if overwrite:
        from .data.sources import ScanItem
        for seq, stems in present.items():
            for stem in stems:
                item = ScanItem(seq, stem, Path(), token=stem, split=split)
                path = src.prediction_path(pred_root, item)
                for f in [path, *src.extra_files(item, path).values()]:
                    if f.is_file():
                        f.unlink()
        present = {}
    if not present:  # nothing to mix with: a manifest left without its files is replaced
        existing = None
    else:
        where = f"{pred_root} already holds predictions"
        hint = "choose another --out, or pass --overwrite to delete them first"
        if existing is None:
            raise DataError(f"{where} without a {MANIFEST} (not written by `lidarseg infer`): {hint}")
        if existing.get("writer") != writer:
            old, new = existing.get("writer", {}), writer
            keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise DataError(f"{where} of another checkpoint or options (differs in {', '.join(keys)}: "
                            f"{old.get('checkpoint')} -> {new.get('checkpoint')}): {hint}")
        old_split = existing.get("splits", {}).get(split)
        if old_split is not None and old_split.get("limit") != limit:
            raise DataError(f"{where} of split {split} with --limit {old_split.get('limit')}; this run has --limit "
                            f"{limit}: {hint}")
    manifest = existing or {"format": MANIFEST_FORMAT, "writer": writer, "splits": {}}
    manifest["splits"][split] = {"limit": limit, "complete": False, "files": {}}
    _write_manifest(pred_root, manifest)
    return manifest


def finish_folder(pred_root, manifest: dict, split: str, files: dict[str, list[str]]) -> None:
    """Record that the run of `split` finished, with the files it wrote ({sequence: [stems]}); written last."""
    manifest["splits"][split] = {**manifest["splits"][split], "complete": True,
                                 "files": {s: sorted(v) for s, v in sorted(files.items())}}
    _write_manifest(pred_root, manifest)


def check_manifest(pred_root, sequences, source=None, split: str | None = None) -> list[str]:
    """Check that the prediction files of `sequences` in `pred_root` come from one finished `infer` run: DataError
    for an interrupted run or files its manifest does not list (a mix of two runs). Returns warnings (no
    manifest: predictions of another tool, nothing to check)."""
    pred_root = Path(pred_root)
    manifest = read_manifest(pred_root)
    if manifest is None:
        return [f"{pred_root} has no {MANIFEST}: cannot check that one complete `lidarseg infer` run wrote these "
                "predictions"]
    written = {}
    for split, entry in manifest.get("splits", {}).items():
        for seq, stems in entry.get("files", {}).items():
            written.setdefault(seq, set()).update(stems)
        if not entry.get("complete"):
            raise DataError(f"the predictions in {pred_root} are incomplete: `lidarseg infer --split {split}` into "
                            f"this folder did not finish (see {pred_root / MANIFEST}); run it again")
    for seq, stems in prediction_files(pred_root, None if sequences is None else set(sequences), source,
                                       split).items():
        foreign = sorted(set(stems) - written.get(seq, set()))
        if foreign:
            raise DataError(f"{len(foreign)} prediction file(s) in {pred_root}/sequences/{seq}/predictions were not "
                            f"written by the run its manifest records ({manifest['writer'].get('checkpoint')}), "
                            f"e.g. {foreign[0]}.label: the folder mixes two runs")
    return []

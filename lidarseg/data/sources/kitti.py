"""SemanticKITTI and SemanticPOSS: `root/sequences/NN/velodyne/NNNNNN.bin` (float32 x, y, z, remission) with
`labels/NNNNNN.label` (uint32: semantic id in the low 16 bits, instance id in the high 16); predictions
`PRED/sequences/NN/predictions/NNNNNN.label`, raw ids of the label config, one uint32 per point."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from ..io import read_label, read_scan
from .base import ScanItem, ScanSource, register_source


def kitti_sequence_name(seq) -> str:
    """Sequence id (8, "8" or "08") -> directory name "08"; other names are kept as given."""
    if isinstance(seq, (int, np.integer)) and not isinstance(seq, bool):
        return f"{int(seq):02d}"
    if isinstance(seq, str) and seq:
        return f"{int(seq):02d}" if seq.isdigit() else seq
    raise ConfigError(f"sequences: expected integers or names like '08', got {seq!r}")


def kitti_sequence_dir(root, sequence) -> Path:
    """root/sequences/NN"""
    return Path(root) / "sequences" / kitti_sequence_name(sequence)


def kitti_scan_path(root, sequence, index: int) -> Path:
    """root/sequences/NN/velodyne/NNNNNN.bin of scan number `index`."""
    return kitti_sequence_dir(root, sequence) / "velodyne" / f"{int(index):06d}.bin"


def kitti_label_path(root, sequence, index: int) -> Path:
    """root/sequences/NN/labels/NNNNNN.label of scan number `index`."""
    return kitti_sequence_dir(root, sequence) / "labels" / f"{int(index):06d}.label"


def kitti_prediction_path(pred_root, sequence: str, scan: str) -> Path:
    return Path(pred_root) / "sequences" / sequence / "predictions" / f"{scan}.label"


def kitti_prediction_files(pred_root, sequences=None) -> dict[str, list[str]]:
    """{sequence: sorted stems} of PRED/sequences/*/predictions/*.label (those of `sequences`)."""
    base = Path(pred_root) / "sequences"
    out = {}
    if not base.is_dir():
        return out
    for d in sorted(base.iterdir()):
        if sequences is not None and d.name not in sequences:
            continue
        stems = sorted(p.stem for p in (d / "predictions").glob("*.label"))
        if stems:
            out[d.name] = stems
    return out


@register_source("semantic-kitti")
class SemanticKITTISource(ScanSource):
    label_config = "semantic-kitti.yaml"
    sensor = "hdl64"

    def sequence_name(self, seq) -> str:
        return kitti_sequence_name(seq)

    def list_scans(self, sequences, with_labels: bool) -> list[ScanItem]:
        root = self.root
        if not (root / "sequences").is_dir():
            raise DataError(f"dataset root {root}: no 'sequences' directory (expected "
                            "root/sequences/NN/velodyne/*.bin)")
        if sequences is None:
            sequences = sorted(p.name for p in (root / "sequences").iterdir() if (p / "velodyne").is_dir())
        items = []
        for seq in sequences:
            name = self.sequence_name(seq)
            seq_dir = kitti_sequence_dir(root, name)
            velo = seq_dir / "velodyne"
            if not seq_dir.is_dir():
                raise DataError(f"no scans in {velo}: sequence directory not found: {seq_dir}")
            scans = sorted(velo.glob("*.bin")) if velo.is_dir() else []
            if not scans:
                raise DataError(f"no scans in {velo} (expected NNNNNN.bin files)")
            if not with_labels:
                items.extend(ScanItem(name, p.stem, p) for p in scans)
                continue
            label_dir = seq_dir / "labels"
            if not label_dir.is_dir():
                raise DataError(f"label directory not found: {label_dir} (needed for labelled splits)")
            labels = {p.stem: p for p in label_dir.glob("*.label")}
            stems = {p.stem for p in scans}
            missing = [p for p in scans if p.stem not in labels]
            if missing:
                raise DataError(f"missing label file {label_dir / (missing[0].stem + '.label')} for scan "
                                f"{missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
            extra = sorted(s for s in labels if s not in stems)
            if extra:
                raise DataError(f"label file {labels[extra[0]]} has no scan {velo / (extra[0] + '.bin')}"
                                + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
            items.extend(ScanItem(name, p.stem, p, labels[p.stem]) for p in scans)
        return items

    def label_items(self, sequences, split=None) -> list[ScanItem]:
        """Every label file of `sequences` (sorted by stem), with its scan path whether or not the scan exists."""
        items = []
        for seq in sequences:
            name = self.sequence_name(seq)
            label_dir = self.root / "sequences" / name / "labels"
            if not label_dir.is_dir():
                raise DataError(f"label directory not found: {label_dir} (expected DATA/sequences/{name}/labels/)")
            labels = sorted(label_dir.glob("*.label"))
            if not labels:
                raise DataError(f"no .label files in {label_dir}")
            items += [ScanItem(name, p.stem, label_dir.parent / "velodyne" / f"{p.stem}.bin", p, split=split)
                      for p in labels]
        return items

    @classmethod
    def write_synthetic(cls, out, sequences=None, scans=None, seed: int = 0, azimuth_steps=None,
                        log=print) -> dict:
        """The synthetic SemanticKITTI dataset (`lidarseg.data.synthetic.generate`)."""
        from ..synthetic import generate
        seqs = [int(s) for s in sequences] if sequences is not None else None
        summary = generate(out, sequences=seqs, scans=scans, seed=seed, azimuth_steps=azimuth_steps, log=log)
        return {k: v["scans"] for k, v in summary["sequences"].items()}

    def labelled(self, sequence: str) -> bool:
        """Whether the sequence has a labels directory (for commands that take whatever labels exist)."""
        return (self.root / "sequences" / self.sequence_name(sequence) / "labels").is_dir()

    def read_points(self, item: ScanItem) -> np.ndarray:
        return read_scan(item.points)

    def read_raw_labels(self, item: ScanItem, num_points: int | None = None) -> np.ndarray:
        return read_label(item.labels, num_points=num_points)

    def num_points(self, item: ScanItem) -> int:
        return item.points.stat().st_size // 16

    def prediction_path(self, pred_root, item: ScanItem) -> Path:
        return kitti_prediction_path(pred_root, self.sequence_name(item.sequence), item.scan)

    def prediction_files(self, pred_root, sequences=None, split=None) -> dict[str, list[str]]:
        return kitti_prediction_files(pred_root, sequences)


@register_source("semantic-poss")
class SemanticPOSSSource(SemanticKITTISource):
    """SemanticPOSS (Hesai Pandora, 40 beams): SemanticKITTI's layout, sequences 00-05 (train 00 01 03 04 05,
    valid 02), remission on a 0-255 scale (kept as stored: the normalisation below is on that scale). The `tag/`
    files of the release are not read. Range image 40 x 1800, fov +7 / -16 degrees; mean/std of (range, x, y, z,
    remission) as CENet's config/arch/poss.yml (measured on SemanticPOSS at 40 x 1800)."""
    label_config = "labels/semantic-poss.yaml"
    sensor = "pandora40"
    normalization = {"mean": [22.26779, 0.51144063, 1.5727469, -0.6350901, 13.875261],
                     "std": [17.735949, 17.422485, 22.217215, 1.6433295, 14.0925865]}

    def split_has_labels(self, split: str) -> bool:
        return True  # SemanticPOSS releases labels for every sequence (its "test" is the valid sequence 02)

    @classmethod
    def write_synthetic(cls, out, sequences=None, scans=None, seed: int = 0, azimuth_steps=None,
                        log=print) -> dict:
        """Simulated Pandora-40 drives in SemanticPOSS' layout: sequences (default 00-05) of `scans` scans (default
        3), remission scaled to 0-255, SemanticPOSS raw ids. Returns {sequence: scans}."""
        from ..io import write_label, write_scan
        from .synthetic import TO_POSS, class_lut, simulate
        lut = class_lut(TO_POSS)
        seqs = [int(s) for s in (sequences if sequences is not None else range(6))]
        n = int(scans or 3)
        out = Path(out)
        if (out / "sequences").exists():
            raise ConfigError(f"{out} already holds sequences/: writing into it would mix two generations; choose "
                              "another --out or delete it")
        for seq in seqs:
            d = kitti_sequence_dir(out, seq)
            for i in range(n):
                points, sem = simulate(seq, i, n, seed, "pandora-40", azimuth_steps)
                points = points.copy()
                points[:, 3] = np.round(points[:, 3] * 255.0)
                write_scan(kitti_scan_path(out, seq, i), points)
                write_label(kitti_label_path(out, seq, i), lut[sem])
            if log:
                log(f"wrote {d}: {n} scans")
        return {f"{s:02d}": n for s in seqs}

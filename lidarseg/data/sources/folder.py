"""Any folder of scans (`folder`): every `.bin`, `.pcd`, `.npy` or `.npz` file under the root (one format per
folder), no labels, no splits. A scan's sequence is its directory relative to the root ("." at the top), its name
the file stem; predictions mirror the tree: `PRED/<relative dir>/<stem>.label` (raw ids of the label config, one
uint32 per point, as SemanticKITTI's)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError
from ..io import POINT_SUFFIXES, read_points_file
from .base import ScanItem, ScanSource, register_source


@register_source("folder")
class FolderSource(ScanSource):
    has_splits = False

    def split_has_labels(self, split: str) -> bool:
        return False

    def split_sequences(self, split: str):
        return None

    def list_scans(self, sequences=None, with_labels: bool = False) -> list[ScanItem]:
        root = self.root
        if root.is_file():
            files = [root]
            base = root.parent
        elif root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in POINT_SUFFIXES)
            base = root
        else:
            raise DataError(f"scan folder not found: {root}")
        if not files:
            raise DataError(f"{root}: no scans (expected files ending in {', '.join(POINT_SUFFIXES)})")
        suffixes = sorted({p.suffix.lower() for p in files})
        if len(suffixes) > 1:
            first = {s: next(p for p in files if p.suffix.lower() == s) for s in suffixes}
            raise DataError(f"{root}: mixed scan formats ({', '.join(f'{s}: {first[s]}' for s in suffixes)}); "
                            "expected one format per folder")
        items = []
        for p in files:
            rel = p.parent.relative_to(base).as_posix()
            items.append(ScanItem(rel or ".", p.stem, p))
        if sequences is not None:
            wanted = set(sequences)
            items = [it for it in items if it.sequence in wanted]
            if not items:
                raise DataError(f"{root}: no scans in the folders {sorted(wanted)}")
        if with_labels:
            raise DataError(f"{root}: a folder of scans has no labels")
        return items

    def read_points(self, item: ScanItem) -> np.ndarray:
        return read_points_file(item.points)

    def read_raw_labels(self, item: ScanItem, num_points=None) -> np.ndarray:
        raise DataError(f"{item.points}: a folder of scans has no labels")

    def prediction_path(self, pred_root, item: ScanItem) -> Path:
        return Path(pred_root) / item.sequence / f"{item.scan}.label"

    def extra_files(self, item: ScanItem, pred_path: Path) -> dict:
        return {"uncert": pred_path.with_suffix(".uncert")}

    def prediction_files(self, pred_root, sequences=None, split=None) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        root = Path(pred_root)
        if not root.is_dir():
            return out
        for p in sorted(root.rglob("*.label")):
            seq = p.parent.relative_to(root).as_posix() or "."
            if sequences is None or seq in sequences:
                out.setdefault(seq, []).append(p.stem)
        return out

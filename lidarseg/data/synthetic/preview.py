"""PNG previews of a scan: the range image coloured by class (rings as rows, as KPRNet unfolds the scan) above a
grey range strip, and a bird's-eye view. PNGs are written by `lidarseg.visualize.write_png` (zlib and struct only)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...visualize import png_bytes, write_png  # noqa: F401 (png_bytes re-exported)


def _raw_colors() -> np.ndarray:
    """RGB uint8 [65536,3] colour of every raw id from the label config (unknown ids black)."""
    import yaml

    from ... import DEFAULT_LABEL_CONFIG

    with open(DEFAULT_LABEL_CONFIG) as f:
        cfg = yaml.safe_load(f)
    lut = np.zeros((1 << 16, 3), np.uint8)
    for k, bgr in cfg["color_map"].items():
        lut[int(k)] = bgr[::-1]
    return lut


def unfold_rows(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KPRNet's scan unfolding (kprnet.md §1.3): u = 0.5*(-atan2(y,-x)/pi + 1) per point and the ring index, +1
    wherever u wraps from > 0.8 to < 0.2 between consecutive points. Returns (ring int64 [N], u float64 [N])."""
    x = points[:, 0].astype(np.float64)
    y = points[:, 1].astype(np.float64)
    u = 0.5 * (-np.arctan2(y, -x) / np.pi + 1.0)
    wrap = np.zeros(len(u), np.int64)
    wrap[1:] = (u[1:] < 0.2) & (u[:-1] > 0.8)
    return np.cumsum(wrap), u


def range_image(points, labels, width: int, rows: int = 64, scale: int = 3) -> np.ndarray:
    """RGB uint8 [(2*rows)*scale, width]: class colours on top, range (near bright, far dark) below; the front is at
    both ends, the rear in the middle (KPRNet's orientation)."""
    ring, u = unfold_rows(points)
    ok = np.isfinite(u) & (ring < rows)
    col = np.clip((u * width).astype(np.int64), 0, width - 1)
    rng = np.linalg.norm(points[:, :3].astype(np.float64), axis=1)
    cls = np.zeros((rows, width, 3), np.uint8)
    dep = np.zeros((rows, width, 3), np.uint8)
    order = np.argsort(-np.where(ok, rng, 0))  # far first, the nearest point wins
    order = order[ok[order]]
    r, c = ring[order], col[order]
    if labels is not None:
        cls[r, c] = _raw_colors()[labels[order] & 0xFFFF]
    else:
        cls[r, c] = 160
    g = np.clip(255 * (1 - np.sqrt(rng[order] / 80.0)), 30, 255).astype(np.uint8)
    dep[r, c] = g[:, None]
    img = np.concatenate([cls, dep], axis=0)
    return np.repeat(img, scale, axis=0)


def birds_eye(points, labels, extent: float = 50.0, resolution: float = 0.1) -> np.ndarray:
    """RGB uint8 bird's-eye view of +-extent metres around the sensor (front up, left to the left), points drawn
    from low to high so roofs and crowns cover the ground."""
    n = int(round(2 * extent / resolution))
    img = np.full((n, n, 3), 235, np.uint8)
    p = points[np.isfinite(points[:, :3]).all(axis=1)]
    lab = labels[np.isfinite(points[:, :3]).all(axis=1)] if labels is not None else None
    row = ((extent - p[:, 0]) / resolution).astype(np.int64)
    col = ((extent - p[:, 1]) / resolution).astype(np.int64)
    ok = (row >= 0) & (row < n) & (col >= 0) & (col < n)
    order = np.argsort(p[:, 2], kind="stable")
    order = order[ok[order]]
    if lab is not None:
        colors = _raw_colors()[lab[order] & 0xFFFF]
    else:
        colors = np.full((len(order), 3), 200, np.uint8)
    img[row[order], col[order]] = colors
    c = n // 2
    img[c - 3:c + 4, c - 3:c + 4] = 0
    return img


def write_previews(stem, points: np.ndarray, labels: np.ndarray | None, width: int = 2048) -> list[Path]:
    """Write `<stem>_range.png` and `<stem>_bev.png`; returns the paths."""
    stem = Path(stem)
    out = [stem.with_name(stem.name + "_range.png"), stem.with_name(stem.name + "_bev.png")]
    write_png(out[0], range_image(points, labels, width))
    write_png(out[1], birds_eye(points, labels))
    return out

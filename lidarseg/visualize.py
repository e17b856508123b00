"""Images without a display: a PNG writer (zlib + struct only), a viridis colour ramp, range-image panels of a scan
and the per-class IoU bar chart (matplotlib's Agg backend, no pyplot state).

- `png_bytes` / `write_png`: RGB uint8 [H,W,3] -> 8-bit RGB PNG (bytes / atomic file).
- `colormap`, `panels`: the range / prediction / ground-truth / weight-map images logged to TensorBoard.
- `scan_strips`, `scan_panel`: one scan projected with RangeNet++'s spherical projection (the nearest point wins each
  pixel): range, prediction, ground truth and an error map stacked top to bottom (`lidarseg visualize`).
- `iou_bar_chart`, `write_iou_chart`: per-class IoU bars in the class colours, ground-truth points per class on a log
  twin axis, the mIoU as a dashed line (`lidarseg visualize`, `lidarseg evaluate --plot`).
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np

from .data.io import atomic_write_bytes

__all__ = ["png_bytes", "write_png", "colormap", "panels", "scan_strips", "scan_panel", "stack_strips",
           "iou_bar_chart", "write_iou_chart", "ERROR_COLORS", "GAP_COLOR"]

# ----------------------------------------------------------------------------------------------------------------
# PNG writer

def png_bytes(rgb: np.ndarray) -> bytes:
    """uint8 [H,W,3] -> the bytes of an 8-bit RGB PNG."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H,W,3], got {rgb.shape}")
    h, w, _ = rgb.shape
    raw = np.zeros((h, w * 3 + 1), np.uint8)  # filter byte 0 (none) per row
    raw[:, 1:] = rgb.reshape(h, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))


def write_png(path, rgb: np.ndarray) -> None:
    """Write RGB uint8 [H,W,3] as a PNG file (temporary file + rename)."""
    atomic_write_bytes(path, png_bytes(rgb))


# ----------------------------------------------------------------------------------------------------------------
# colour ramps and TensorBoard panels

# 9 anchor colours of matplotlib's viridis; enough for a smooth ramp by linear interpolation.
_VIRIDIS = np.array([[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
                     [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]], np.float64)


def colormap(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Float [H,W] -> RGB uint8 [H,W,3] on a viridis ramp, min-max scaled over `mask`; black outside it."""
    v = np.asarray(values, dtype=np.float64)
    m = np.ones(v.shape, bool) if mask is None else np.asarray(mask, bool)
    if m.any():
        lo, hi = v[m].min(), v[m].max()
        v = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    v = np.clip(v, 0, 1) * (len(_VIRIDIS) - 1)
    i = np.minimum(v.astype(int), len(_VIRIDIS) - 2)
    f = (v - i)[..., None]
    rgb = _VIRIDIS[i] * (1 - f) + _VIRIDIS[i + 1] * f
    rgb[~m] = 0
    return rgb.round().astype(np.uint8)


def panels(label_map, input_range: np.ndarray, mask: np.ndarray, pred: np.ndarray, gt: np.ndarray,
           weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """RGB uint8 [H,W,3] images of one scan: the range channel, prediction and ground truth in SemanticKITTI
    colours (black where no point), and the loss weight map when given."""
    mask = np.asarray(mask, bool)
    out = {
        "range": colormap(input_range, mask),
        "prediction": label_map.colorize(np.where(mask, pred, 0)),
        "ground_truth": label_map.colorize(np.where(mask, gt, 0)),
    }
    if weights is not None:
        out["weight_map"] = colormap(weights, mask)
    return out


# ----------------------------------------------------------------------------------------------------------------
# scan panels

#: error-map colours (RGB): prediction equals the label, differs from it, label ignored (class 0); empty pixels black
ERROR_COLORS = {"correct": (40, 200, 60), "wrong": (230, 30, 30), "unlabelled": (150, 150, 150)}
#: colour of the separator rows between strips
GAP_COLOR = (255, 255, 255)


def _to_train(label_map, labels, ids: str, n: int, what: str) -> np.ndarray:
    """Raw (ids="raw": low 16 bits through learning_map, unknown ids -> 0) or train ids [N] -> int64 train ids [N]."""
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"{what}: expected {n} labels (one per point), got shape {list(labels.shape)}")
    if ids == "raw":
        return label_map.to_train(labels, unknown="zero")
    if ids != "train":
        raise ValueError(f"ids must be 'raw' or 'train', got {ids!r}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= label_map.num_classes):
        raise ValueError(f"{what}: train ids must lie in 0..{label_map.num_classes - 1}")
    return labels


def scan_strips(points, pred, label_map, gt=None, sensor=None, ids: str = "raw",
                proj=None) -> dict[str, np.ndarray]:
    """Images RGB uint8 [H,W,3] of one scan, projected with `spherical_projection` (each pixel shows its nearest
    point, as RangeNet++): "range" (viridis of log(1 + range in metres), near dark, far yellow), "prediction" and,
    with `gt`, "ground_truth" in SemanticKITTI colours, and "error" (ERROR_COLORS). Empty pixels are black.

    points float32 [N,4]; pred, gt: labels [N], raw SemanticKITTI ids (ids="raw", instance bits and unknown ids
    allowed; unknown ids count as class 0 as in the official evaluator) or train ids (ids="train"); pred None
    leaves out the prediction and error strips (ground truth or the scan alone). sensor:
    SensorGeometry, preset name, dict or None (HDL-64E, 64 x 2048). proj: a precomputed RangeProjection of `points`.
    """
    from .data.projection import SensorGeometry, spherical_projection

    n = int(np.asarray(points).shape[0])
    if proj is None:
        g = SensorGeometry.from_config(sensor)
        proj = spherical_projection(points, g.height, g.width, g.fov_up, g.fov_down)
    mask = proj.mask
    pix = np.maximum(proj.idx, 0)
    out = {"range": colormap(np.log1p(np.maximum(proj.range, 0)), mask)}
    if pred is not None:
        pred_img = np.where(mask, _to_train(label_map, pred, ids, n, "prediction")[pix], 0)
        out["prediction"] = label_map.colorize(pred_img)
    if gt is not None:
        gt_img = np.where(mask, _to_train(label_map, gt, ids, n, "ground truth")[pix], 0)
        out["ground_truth"] = label_map.colorize(gt_img)
    if gt is not None and pred is not None:
        err = np.zeros(mask.shape + (3,), np.uint8)
        unlabelled = mask & np.isin(gt_img, label_map.ignore)
        correct = mask & ~unlabelled & (pred_img == gt_img)
        wrong = mask & ~unlabelled & ~correct
        for key, where in (("correct", correct), ("wrong", wrong), ("unlabelled", unlabelled)):
            err[where] = ERROR_COLORS[key]
        out["error"] = err
    return out


def stack_strips(strips, row_scale: int = 1, gap: int = 4) -> np.ndarray:
    """Stack images [H,W,3] top to bottom, each row repeated `row_scale` times, separated by `gap` rows of
    GAP_COLOR -> RGB uint8 [len*H*row_scale + (len-1)*gap, W, 3]."""
    if isinstance(row_scale, bool) or int(row_scale) != row_scale or row_scale < 1:
        raise ValueError(f"row_scale must be a positive integer, got {row_scale!r}")
    strips = [np.repeat(np.asarray(s, np.uint8), int(row_scale), axis=0) for s in strips]
    if not strips:
        raise ValueError("no images to stack")
    sep = np.empty((gap, strips[0].shape[1], 3), np.uint8)
    sep[:] = GAP_COLOR
    parts = []
    for i, s in enumerate(strips):
        if i:
            parts.append(sep)
        parts.append(s)
    return np.concatenate(parts, axis=0)


def scan_panel(points, pred, label_map, gt=None, sensor=None, ids: str = "raw", row_scale: int = 2,
               gap: int = 4, proj=None) -> np.ndarray:
    """Panel of one scan -> RGB uint8 [k*H*row_scale + (k-1)*gap, W, 3]: range, prediction, and with `gt` the
    ground truth and the error map (k = 4, else 2), top to bottom; arguments as `scan_strips` and `stack_strips`."""
    strips = scan_strips(points, pred, label_map, gt=gt, sensor=sensor, ids=ids, proj=proj)
    return stack_strips(list(strips.values()), row_scale=row_scale, gap=gap)


def write_prediction_panels(source, pred_root, cfg: dict, label_map, split=None, sequences=None,
                            limit: int | None = None, row_scale: int = 2) -> list:
    """A PNG panel (range, prediction, and with labels ground truth and errors) beside every prediction file that
    `infer` wrote for the scans of `source` (split or sequences, first `limit`); returns the paths. The range
    image uses the geometry of the config (the checkpoint's)."""
    items = source.items(split, sequences) if source.has_splits else source.list_scans(sequences, False)
    if limit:
        items = items[:int(limit)]
    ids = "raw" if source.prediction_ids == "raw" else "train"
    paths = []
    for item in items:
        points = source.read_points(item)
        pred_path = source.prediction_path(pred_root, item)
        pred = source.read_prediction(pred_path)
        gt = None
        if item.labels is not None:
            gt = source.read_train_labels(item, points.shape[0], unknown="zero")
            gt = gt if ids == "train" else label_map.to_raw(gt)
        img = scan_panel(points, pred, label_map, gt=gt, sensor=cfg["data"]["sensor"], ids=ids, row_scale=row_scale)
        path = pred_path.with_name(pred_path.name.rsplit(".", 1)[0] + ".png")
        write_png(path, img)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------------------------
# per-class IoU chart

def iou_bar_chart(names, iou, points, path, title: str = "", colors=None, miou: float | None = None,
                  dpi: int = 120) -> None:
    """Bar chart PNG of per-class IoU (fractions in [0,1], shown in %), one bar per class in `colors` (RGB uint8
    [C,3], grey if None), the ground-truth points per class as black markers on a log-scale right axis, and the mIoU
    (default: mean of `iou`) as a dashed line. names [C], iou [C], points [C]. Written atomically to `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [str(n) for n in names]
    iou = np.asarray(iou, dtype=np.float64).reshape(-1)
    points = np.asarray(points, dtype=np.float64).reshape(-1)
    if not (len(names) == iou.size == points.size) or not names:
        raise ValueError(f"names, iou and points need the same non-zero length, got {len(names)}, {iou.size}, "
                         f"{points.size}")
    if colors is None:
        face = [(0.6, 0.6, 0.6)] * len(names)
    else:
        colors = np.asarray(colors)
        if colors.shape != (len(names), 3):
            raise ValueError(f"colors: expected [{len(names)},3] RGB, got {list(colors.shape)}")
        face = [tuple(c / 255.0) for c in colors.astype(np.float64)]
    if miou is None:
        miou = float(iou.mean())
    x = np.arange(len(names))
    fig = Figure(figsize=(max(6.0, 0.45 * len(names) + 2.0), 4.8), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(x, 100 * iou, color=face, edgecolor="black", linewidth=0.6, zorder=2)
    for xi, v in zip(x, iou):
        ax.text(xi, 100 * v + 1.0, f"{100 * v:.1f}", ha="center", va="bottom", fontsize=6.5, zorder=4)
    ax.axhline(100 * miou, color="black", linestyle="--", linewidth=1.0, zorder=3, label=f"mIoU {100 * miou:.1f}")
    ax.set_ylim(0, 125)   # the band above 100 holds the legend
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("IoU (%)")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    handles = [ax.get_lines()[-1]]
    has = points > 0
    if has.any():
        ax2 = ax.twinx()
        (marker,) = ax2.plot(x[has], points[has], linestyle="none", marker="D", markersize=4.5,
                             markerfacecolor="white", markeredgecolor="black", label="ground-truth points (right axis)")
        ax2.set_yscale("log")
        lo, hi = points[has].min(), points[has].max()
        decades = max(np.log10(hi / lo), 1.0)
        ax2.set_ylim(lo / 10 ** (0.1 * decades), hi * 10 ** (0.35 * decades))   # markers below the legend band
        ax2.set_ylabel("ground-truth points (log)")
        handles.append(marker)
    ax.legend(handles=handles, loc="upper center", ncol=2, fontsize=8, framealpha=0.9)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def write_iou_chart(result, label_map, path, title: str = "") -> None:
    """`iou_bar_chart` of an `evaluation.EvalResult` (its non-ignored classes, its mIoU) in the label colours."""
    cm = result.confusion
    inc = list(cm.include)
    iou = cm.iou()
    counts = cm.gt_counts()
    iou_bar_chart([result.names[c] for c in inc], iou[inc], counts[inc], path, title=title,
                  colors=label_map.colors_rgb[inc], miou=result.miou)

"""Side-by-side statistics of two sets of LiDAR scans (`lidarseg compare-scans A B`).

Each side is a dataset root in SemanticKITTI layout (sequences/NN/velodyne/*.bin, labels used when present), a folder
of scan files (`.bin`: KITTI float32 [N,4]; `.npy`: float [N,>=4], x y z remission first), or one scan file. The
statistics are those of the real-versus-synthetic table in docs/synthetic.md: range and height percentiles, the fill
of a 64 x 2048 range image per row, remission against range and its zeros, per-ring pitch spread and azimuth grids
(rings found by KPRNet's scan unfolding), empty azimuth bins of the top and bottom rings (the ego-body shadow), and
with labels the unlabeled share, per-class remission and the fit of a plane to the road at 4-20 m.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import DataError
from .io import atomic_write_bytes, read_label, read_scan
from .projection import scan_unfolding, spherical_projection

RANGE_BINS = ((0, 10), (5, 10), (10, 20), (20, 30), (30, 50), (50, 80))
#: raw SemanticKITTI ids whose mean remission is reported
CLASSES = {"road": 40, "sidewalk": 48, "parking": 44, "building": 50, "vegetation": 70, "terrain": 72, "car": 10,
           "pole": 80, "trunk": 71, "lane-marking": 60}
SUFFIXES = (".bin", ".npy")


# ------------------------------------------------------------------------------------------------------------------
# input

def find_scans(source, max_scans: int | None = None) -> list[tuple[Path, Path | None]]:
    """Scan files of `source` (a dataset root, a folder of .bin/.npy files or one file) with their label file or
    None, sorted; at most `max_scans`, taken evenly over the list. Raises DataError for an empty or mixed input."""
    src = Path(source)
    if not src.exists():
        raise DataError(f"{src}: no such file or directory")
    if src.is_file():
        files = [src]
    elif (src / "sequences").is_dir():
        files = sorted(p for p in (src / "sequences").glob("*/velodyne/*") if p.suffix in SUFFIXES)
    else:
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    if not files:
        raise DataError(f"{src}: no scan files (.bin or .npy) found")
    bad = [p for p in files if p.suffix not in SUFFIXES]
    if bad:
        raise DataError(f"{bad[0]}: unsupported scan format {bad[0].suffix!r}; expected .bin or .npy")
    kinds = sorted({p.suffix for p in files})
    if len(kinds) > 1:
        first = {k: next(p for p in files if p.suffix == k) for k in kinds}
        raise DataError(f"{src}: mixed point formats ({', '.join(f'{k} e.g. {first[k]}' for k in kinds)}); "
                        "compare one format per input")
    if max_scans is not None:
        if max_scans < 1:
            raise DataError(f"max_scans must be >= 1, got {max_scans}")
        if len(files) > max_scans:
            files = [files[i] for i in np.linspace(0, len(files) - 1, max_scans).round().astype(int)]
    out = []
    for p in files:
        size = p.stat().st_size
        if p.suffix == ".bin" and (size == 0 or size % 16):
            raise DataError(f"{p}: size {size} bytes is not a positive multiple of 16 (KITTI .bin: 4 float32 per "
                            "point); truncated or not a KITTI scan")
        lab = p.parent.parent / "labels" / (p.stem + ".label")
        out.append((p, lab if lab.is_file() else None))
    return out


def load_points(path: Path) -> np.ndarray:
    """float32 [N,4] (x, y, z, remission) from a .bin or .npy file; DataError naming the file when it is not."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({exc})") from None
        if a.ndim != 2 or a.shape[1] < 4 or a.dtype.kind != "f":
            raise DataError(f"{path}: expected a float array [N, >=4] (x, y, z, remission), got {a.dtype} "
                            f"{list(a.shape)}")
        a = np.ascontiguousarray(a[:, :4], dtype=np.float32)
    else:
        a = read_scan(path)
    if len(a) == 0:
        raise DataError(f"{path}: holds no points")
    return a


# ------------------------------------------------------------------------------------------------------------------
# statistics

def _pct(x, qs):
    return [float(v) for v in np.percentile(x, qs)] if len(x) else [math.nan] * len(qs)


def road_plane(pts: np.ndarray, labels: np.ndarray, near: float = 4.0, far: float = 20.0):
    """Least-squares plane z = a x + b y + c through the road points (raw id 40) at near..far metres of one scan:
    (residual std in metres, tilt atan(hypot(a, b)) in degrees), or None under 100 such points."""
    r = np.linalg.norm(pts[:, :3].astype(np.float64), axis=1)
    m = (labels == CLASSES["road"]) & (r >= near) & (r <= far)
    if m.sum() < 100:
        return None
    q = pts[m, :3].astype(np.float64)
    A = np.column_stack([q[:, 0], q[:, 1], np.ones(len(q))])
    coef, *_ = np.linalg.lstsq(A, q[:, 2], rcond=None)
    return float(np.std(q[:, 2] - A @ coef)), float(np.degrees(np.arctan(np.hypot(coef[0], coef[1]))))


def _ring_stats(pts: np.ndarray, width: int) -> dict:
    """Per-ring pitch (deg) and azimuth figures of one scan, rings from KPRNet's scan unfolding."""
    unf = scan_unfolding(pts, height=1024, width=width)
    ok = unf.row >= 0
    ring = unf.row[ok]
    xyz = pts[ok, :3].astype(np.float64)
    r = np.linalg.norm(xyz, axis=1)
    pitch = np.degrees(np.arcsin(np.clip(xyz[:, 2] / np.maximum(r, 1e-9), -1, 1)))
    az = np.degrees(np.mod(np.arctan2(xyz[:, 1], xyz[:, 0]), 2 * np.pi))
    nr = int(unf.num_rings)
    med, spread, phase, empty, steps = [], [], [], [], []
    step = 360.0 / width
    for k in range(nr):
        sel = ring == k
        if sel.sum() < 10:
            med.append(math.nan)
            spread.append(math.nan)
            phase.append(math.nan)
            empty.append(math.nan)
            continue
        p, a = pitch[sel], az[sel]
        med.append(float(np.median(p)))
        spread.append(float(np.std(p)))
        ang = 2 * np.pi * np.mod(a, step) / step
        phase.append(float(np.angle(np.mean(np.exp(1j * ang))) / (2 * np.pi)))   # fraction of a step, -0.5..0.5
        empty.append(1.0 - len(np.unique(np.floor(a / step).astype(np.int64))) / width)
        d = np.diff(a)
        steps.append(d[(d > 0) & (d < 1.0)])
    return {"rings": nr, "median_pitch": med, "pitch_std": spread, "phase": phase, "empty": empty,
            "steps": np.concatenate(steps) if steps else np.zeros(0), "pitch": pitch, "ring": ring}


def scan_set_stats(source, max_scans: int | None = None, width: int = 2048, height: int = 64,
                   fov_up: float = 3.0, fov_down: float = -25.0, azimuth_crop: float | None = None) -> dict:
    """Statistics of the scans of `source` (a path, or the list `find_scans` returned; see module docstring) as a
    JSON-ready dict, plus private arrays under "_arrays" for plotting. azimuth_crop: keep only points within
    +-azimuth_crop degrees of the front (to compare with front-view data); ring and shadow figures are then left
    out."""
    items = source if isinstance(source, list) else find_scans(source, max_scans)
    rng_all, z_all, rem_all, lab_all, planes = [], [], [], [], []
    npts, row_fill, shared, filled = [], [], [], []
    rings, med_p, std_p, phases, top_empty, bottom_empty, steps, off_row = [], [], [], [], [], [], [], []
    for path, lab_path in items:
        pts = load_points(path)
        finite = np.isfinite(pts).all(1) & (np.abs(pts[:, :3]).sum(1) > 0)
        labels = read_label(lab_path, len(pts)) & 0xFFFF if lab_path is not None else None
        if azimuth_crop is None:
            ring = _ring_stats(pts[finite], width)
            rings.append(ring["rings"])
            med_p.append(ring["median_pitch"])
            std_p.append(ring["pitch_std"])
            phases.append(ring["phase"])
            top_empty.append(ring["empty"][0] if ring["empty"] else math.nan)
            bottom_empty.append(ring["empty"][-1] if ring["empty"] else math.nan)
            steps.append(ring["steps"])
            proj_rows = np.floor((1.0 - (ring["pitch"] - fov_down) / (fov_up - fov_down)) * height)
            proj_rows = np.clip(proj_rows, 0, height - 1).astype(np.int64)
            mode = np.zeros(max(ring["rings"], 1), np.int64)
            for k in range(ring["rings"]):
                sel = ring["ring"] == k
                if sel.any():
                    mode[k] = np.bincount(proj_rows[sel]).argmax()
            off_row.append(float(np.mean(proj_rows != mode[ring["ring"]])) if len(proj_rows) else math.nan)
        keep = finite
        if azimuth_crop is not None:
            az = np.degrees(np.arctan2(pts[:, 1], pts[:, 0]))
            keep = keep & (np.abs(az) <= azimuth_crop)
        p = pts[keep]
        npts.append(len(p))
        proj = spherical_projection(p, height, width, fov_up, fov_down)
        occ = proj.idx >= 0
        row_fill.append(occ.mean(1))
        filled.append(occ.sum())
        shared.append(len(p) - occ.sum())
        rng_all.append(np.linalg.norm(p[:, :3].astype(np.float64), axis=1))
        z_all.append(p[:, 2].astype(np.float64))
        rem_all.append(p[:, 3].astype(np.float64))
        lab_all.append(labels[keep] if labels is not None else None)
        if labels is not None:
            planes.append(road_plane(p, labels[keep]))
    r = np.concatenate(rng_all)
    z = np.concatenate(z_all)
    rem = np.concatenate(rem_all)
    fill_rows = np.mean(row_fill, axis=0)
    out = {
        "source": str(source if not isinstance(source, list) else items[0][0].parent), "scans": len(items),
        "labelled_scans": sum(x is not None for x in lab_all),
        "azimuth_crop_deg": azimuth_crop, "image": [height, width], "fov_deg": [fov_up, fov_down],
        "points_per_scan": float(np.mean(npts)),
        "image_filled": float(np.mean(filled) / (height * width)),
        "points_sharing_a_pixel": float(np.sum(shared) / max(np.sum(npts), 1)),
        "rows_under_10pct": [int(i) for i in np.flatnonzero(fill_rows < 0.10)],
        "row_fill": [float(v) for v in fill_rows],
        "bottom_rows_fill": [float(v) for v in fill_rows[-4:]],
        "range_p5_p25_p50_p75_p95": _pct(r, [5, 25, 50, 75, 95]),
        "range_mean_std": [float(r.mean()), float(r.std())],
        "within_3m": float(np.mean(r < 3)), "within_10m": float(np.mean(r < 10)),
        "beyond_50m": float(np.mean(r > 50)),
        "z_p1_p5_p50_p95": _pct(z, [1, 5, 50, 95]),
        "below_z_minus_1.9": float(np.mean(z < -1.9)),
        "remission_mean_p25_p50_p75": [float(rem.mean())] + _pct(rem, [25, 50, 75]),
        "remission_zero": float(np.mean(rem == 0)),
        "remission_range_corr": float(np.corrcoef(rem, r)[0, 1]) if rem.std() > 0 and r.std() > 0 else math.nan,
    }
    for lo, hi in RANGE_BINS:
        m = (r >= lo) & (r < hi)
        out[f"remission_mean_{lo}_{hi}m"] = float(rem[m].mean()) if m.any() else math.nan
        out[f"remission_zero_{lo}_{hi}m"] = float(np.mean(rem[m] == 0)) if m.any() else math.nan
        out[f"points_{lo}_{hi}m"] = float(np.mean(m))
    if rings:
        nr = int(np.median(rings))
        same = [i for i, k in enumerate(rings) if k == nr]
        mp = np.nanmedian(np.array([med_p[i] for i in same]), axis=0)
        sp = np.array([std_p[i] for i in same])
        ph = np.array([phases[i] for i in same])
        allp = np.concatenate(med_p)
        spacing = -np.diff(mp)
        st = np.concatenate(steps) if steps else np.zeros(0)
        ring_phase = np.angle(np.nanmean(np.exp(2j * np.pi * ph), axis=0)) / (2 * np.pi)
        d = np.abs((ring_phase - ring_phase[np.nanargmax(np.isfinite(ring_phase))] + 0.5) % 1.0 - 0.5)
        out.update({
            "rings_found_median": nr,
            "ring_median_pitch_min_max": [float(np.nanmin(allp)), float(np.nanmax(allp))],
            "top_bottom_ring_median_pitch": [float(mp[0]), float(mp[-1])],
            "ring_spacing_min_max": [float(np.nanmin(spacing)), float(np.nanmax(spacing))] if nr > 1 else [],
            "pitch_spread_in_ring_median_max": [float(np.nanmedian(sp)), float(np.nanmax(np.nanmedian(sp, 0)))],
            "points_off_their_ring_row": float(np.nanmean(off_row)),
            "azimuth_step_p10_p50_p90": _pct(st, [10, 50, 90]),
            "azimuth_grids_distinct": float(np.nanmean(d > 0.05)),
            "empty_azimuth_bins_top_bottom_ring": [float(np.nanmean(top_empty)), float(np.nanmean(bottom_empty))],
        })
    labelled = [i for i, x in enumerate(lab_all) if x is not None]
    if labelled:   # label figures over the labelled scans only (a dataset's test split has none)
        lab = np.concatenate([lab_all[i] for i in labelled])
        rem_l = np.concatenate([rem_all[i] for i in labelled])
        out["unlabeled"] = float(np.mean(lab == 0))
        out["outlier"] = float(np.mean(lab == 1))
        means = {}
        for name, cid in CLASSES.items():
            m = lab == cid
            means[name] = float(rem_l[m].mean()) if m.any() else math.nan
        out["class_remission_mean"] = means
        car = lab == CLASSES["car"]
        out["car_remission_zero"] = float(np.mean(rem_l[car] == 0)) if car.any() else math.nan
        fits = np.array([f for f in planes if f is not None]).reshape(-1, 2)
        out["road_plane_4_20m_residual_std_tilt_deg"] = ([float(v) for v in fits.mean(0)] if len(fits)
                                                         else [math.nan, math.nan])
    out["_arrays"] = {"range": r, "z": z, "remission": rem, "row_fill": fill_rows}
    return out


# ------------------------------------------------------------------------------------------------------------------
# report

def _fmt(v) -> str:
    if isinstance(v, dict):
        return " / ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        if len(v) > 8:
            return f"[{len(v)} values]"
        return " / ".join(_fmt(x) for x in v) if v else "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.4g}"
    return str(v)


def compare_table(a: dict, b: dict, names=("A", "B")) -> str:
    """The two statistics dicts side by side as a Markdown table (keys of either, in order)."""
    keys = [k for k in a if not k.startswith("_") and k not in ("row_fill",)]
    keys += [k for k in b if k not in keys and not k.startswith("_") and k != "row_fill"]
    lines = [f"| statistic | {names[0]} | {names[1]} |", "|---|---|---|"]
    for k in keys:
        lines.append(f"| {k} | {_fmt(a.get(k, math.nan))} | {_fmt(b.get(k, math.nan))} |")
    return "\n".join(lines) + "\n"


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items() if not str(k).startswith("_")}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating, np.integer)):
        return _jsonable(v.item())
    return v


def write_json(path, a: dict, b: dict) -> Path:
    atomic_write_bytes(Path(path), json.dumps({"A": _jsonable(a), "B": _jsonable(b)}, indent=1).encode())
    return Path(path)


def write_png(path, a: dict, b: dict, names=("A", "B")) -> Path:
    """A 2 x 3 figure of the distributions: range, height, remission histograms, mean remission and zero share
    against range, and the fill of each image row."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(14, 7.5))
    for s, name, col in ((a, names[0], "tab:blue"), (b, names[1], "tab:orange")):
        arr = s["_arrays"]
        ax[0, 0].hist(arr["range"], bins=np.linspace(0, 80, 81), density=True, histtype="step", color=col, label=name)
        ax[0, 1].hist(arr["z"], bins=np.linspace(-3.5, 4, 76), density=True, histtype="step", color=col, label=name)
        ax[0, 2].hist(arr["remission"], bins=np.arange(102) * 0.01 - 0.005, density=True, histtype="step", color=col,
                      label=name)   # one bin per 0.01 step of the quantised remission
        edges = np.arange(0, 85, 5)
        k = np.digitize(arr["range"], edges) - 1
        mean = [arr["remission"][k == i].mean() if np.any(k == i) else np.nan for i in range(len(edges) - 1)]
        zero = [np.mean(arr["remission"][k == i] == 0) if np.any(k == i) else np.nan for i in range(len(edges) - 1)]
        mid = edges[:-1] + 2.5
        ax[1, 0].plot(mid, mean, "-o", ms=3, color=col, label=name)
        ax[1, 1].plot(mid, zero, "-o", ms=3, color=col, label=name)
        ax[1, 2].plot(arr["row_fill"], "-", color=col, label=name)
    titles = ["range (m)", "z (m)", "remission", "mean remission vs range (m)", "share of zero remission vs range (m)",
              "fill per image row (row 0 = top)"]
    for axis, title in zip(ax.ravel(), titles):
        axis.set_title(title, fontsize=10)
        axis.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)

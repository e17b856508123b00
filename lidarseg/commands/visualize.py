"""`lidarseg visualize`: PNG range-image panels of prediction files and a per-class IoU chart, with no display.

    lidarseg visualize --data ROOT --pred PRED_ROOT --split valid --scans 3 --out viz/
    lidarseg visualize --data ROOT --pred PRED_ROOT --sequences 08 --index 0 100 200 --out viz/ --row-scale 3

Writes DIR/NN_NNNNNN.png per chosen scan (range, prediction, ground truth, error map; see lidarseg.visualize) and,
where the sequences have labels, DIR/iou.png over all scans of those sequences (lidarseg.evaluation, official
convention). Predictions: PRED_ROOT/sequences/NN/predictions/NNNNNN.label, raw SemanticKITTI ids.
"""
from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(parser):
    from .. import DEFAULT_DATA_ROOT

    parser.add_argument("--data", default=str(DEFAULT_DATA_ROOT), metavar="ROOT",
                        help="dataset root holding sequences/NN/velodyne (and labels) (default: %(default)s)")
    parser.add_argument("--pred", "--predictions", dest="pred", default=None, metavar="PRED_ROOT",
                        help="prediction root holding sequences/NN/predictions/*.label (raw ids); without it the "
                             "panels show the scan and its ground truth only")
    parser.add_argument("--format", default=None, metavar="NAME",
                        help="dataset format: semantic-kitti, semantic-poss, nuscenes, folder (default: the "
                             "--config's data.format, else semantic-kitti)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--split", default="valid", help="split of the label config (default: %(default)s)")
    which.add_argument("--sequences", nargs="+", default=None, metavar="NN", help="these sequences instead of --split")
    scans = parser.add_mutually_exclusive_group()
    scans.add_argument("--scans", type=int, default=3, metavar="N",
                       help="number of panels, spread evenly over the chosen scans (default: %(default)s)")
    scans.add_argument("--index", type=int, nargs="+", default=None, metavar="I",
                       help="positions in the chosen scans (sorted by sequence, then file name; 0-based)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory for NN_NNNNNN.png and iou.png")
    parser.add_argument("--label-config", "--labels", dest="label_config", default=None, metavar="FILE",
                        help="label config YAML (default: the --config's data.labels, else "
                             "configs/semantic-kitti.yaml)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="training config YAML whose data.sensor (and data.labels) to use")
    parser.add_argument("--sensor", default=None, help="sensor preset (hdl64, hdl32, vlp16, os1-128, pandora40; "
                        "default: the format's)")
    parser.add_argument("--height", type=int, default=None, help="range image height (beams; default 64)")
    parser.add_argument("--width", type=int, default=None, help="range image width (default 2048)")
    parser.add_argument("--fov-up", type=float, default=None, help="upper vertical field of view, degrees (3)")
    parser.add_argument("--fov-down", type=float, default=None, help="lower vertical field of view, degrees (-25)")
    parser.add_argument("--row-scale", type=int, default=2, help="repeat each image row this many times (default: "
                        "%(default)s)")
    parser.add_argument("--no-iou", action="store_true", help="panels only, no iou.png")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar while evaluating")


def _sensor(args, cfg):
    """SensorGeometry: the config's data.sensor (or HDL-64E), replaced by --sensor, then single-value overrides."""
    from ..data.projection import SensorGeometry

    sensor = dict(cfg["data"]["sensor"]) if cfg is not None else {}
    if args.sensor:
        sensor = {"preset": args.sensor}
    for key in ("height", "width", "fov_up", "fov_down"):
        if getattr(args, key) is not None:
            sensor[key] = getattr(args, key)
    return SensorGeometry.from_config(sensor or None, source="visualize sensor")


def list_items(source, sequences) -> list:
    """ScanItems of `sequences`, each with its label file where the sequence has labels (any sequence without them
    is listed unlabelled), sorted by sequence then scan."""
    from ..errors import DataError

    items = []
    for name in sequences:
        try:
            items += source.list_scans([name], with_labels=True)
        except DataError:
            items += source.list_scans([name], with_labels=False)
    return items


def choose(n: int, count: int, index, what: str) -> list[int]:
    """Positions of the panels: `index` (checked against n, duplicates dropped) or `count` spread evenly."""
    import numpy as np

    from ..errors import ConfigError

    if index is not None:
        bad = [i for i in index if not 0 <= i < n]
        if bad:
            raise ConfigError(f"--index {' '.join(map(str, bad))}: out of range; {what} has {n} scans "
                              f"(valid positions 0..{n - 1})")
        return list(dict.fromkeys(index))
    if count < 1:
        raise ConfigError(f"--scans must be at least 1, got {count}")
    return sorted({int(i) for i in np.linspace(0, n - 1, min(count, n)).round()})


def run(args) -> int:
    import numpy as np

    from ..data.projection import SENSOR_PRESETS, spherical_projection
    from ..data.sources import build_source
    from ..errors import ConfigError, DataError
    from ..evaluation import evaluate
    from ..visualize import scan_panel, write_iou_chart, write_png
    from .paths import check_out_dir

    check_out_dir(args.out, "--out")
    cfg = None
    if args.config:
        from ..engine.config import load_config
        cfg = load_config(args.config)
    fmt = args.format or (cfg["data"]["format"] if cfg else "semantic-kitti")
    data_root, out = Path(args.data), Path(args.out)
    pred_root = Path(args.pred) if args.pred else None
    source = build_source(fmt, data_root, label_map=args.label_config or (cfg["data"]["labels"] if cfg else None))
    label_map = source.label_map
    if cfg is None and not any(getattr(args, k) is not None for k in ("sensor", "height", "width", "fov_up",
                                                                        "fov_down")):
        geometry = SENSOR_PRESETS[source.sensor]
    else:
        geometry = _sensor(args, cfg)
    if args.row_scale < 1:
        raise ConfigError(f"--row-scale must be at least 1, got {args.row_scale}")
    if fmt in ("semantic-kitti", "semantic-poss") and not (data_root / "sequences").is_dir():
        raise DataError(f"dataset root {data_root}: no 'sequences' directory (expected DATA/sequences/NN/velodyne)")
    if args.sequences:
        seqs = source.resolve(None, args.sequences)
        what = f"sequences {', '.join(seqs)}"
    elif not source.has_splits:
        seqs, what = None, f"scans of {data_root}"
    else:   # as `lidarseg submission`: the split's sequences that exist under DATA
        listed = source.resolve(args.split)
        present = []
        for s in listed:
            try:
                source.list_scans([s], with_labels=False)
                present.append(s)
            except DataError:
                pass
        seqs = present
        if not seqs:
            raise DataError(f"split {args.split}: none of its sequences ({', '.join(listed) or 'none'}) exist "
                            f"under {data_root / 'sequences' if fmt.startswith('semantic') else data_root}")
        if len(seqs) < len(listed):
            print(f"warning: split {args.split}: sequences {', '.join(s for s in listed if s not in seqs)} not found "
                  f"under {data_root}; using {', '.join(seqs)}", file=sys.stderr)
        what = f"split {args.split} (sequences {', '.join(seqs)})"
    items = list_items(source, seqs) if seqs is not None else source.list_scans(None, False)
    chosen = [items[i] for i in choose(len(items), args.scans, args.index, what)]

    # check every file before writing anything (lengths of the prediction and label files against the scan)
    jobs = []
    for item in chosen:
        n = source.num_points(item)
        pred_path = None
        if pred_root is not None:
            pred_path = source.prediction_path(pred_root, item)
            if not pred_path.is_file():
                raise DataError(f"prediction file not found: {pred_path} (for scan {item.points})")
            m = source.read_prediction(pred_path).shape[0]
            if m != n:
                raise DataError(f"prediction {pred_path} has {m} labels but its scan {item.points} has {n} points")
        if item.labels is not None:
            m = source.read_raw_labels(item).shape[0]
            if m != n:
                raise DataError(f"label file {item.labels} has {m} labels but its scan {item.points} has {n} points")
        jobs.append((item, pred_path))
    labelled = sorted({it.sequence for it in items if it.labels is not None}, key=(seqs or []).index)
    result = None
    if labelled and not args.no_iou and pred_root is not None:
        # all scans of the labelled sequences; a missing, extra or wrong-length prediction is an error naming it
        result = evaluate(data_root, pred_root, args.split, sequences=labelled, progress=not args.no_progress,
                          source=source)
        for w in result.warnings:
            print(f"warning: {w}", file=sys.stderr)

    ids = "raw" if source.prediction_ids == "raw" else "train"
    print(f"{what}: {len(items)} scans; panels of {len(jobs)}; sensor {geometry.height}x{geometry.width}, "
          f"fov {geometry.fov_up:+g}/{geometry.fov_down:+g} deg" + ("" if pred_root else "; no predictions"))
    for item, pred_path in jobs:
        points = source.read_points(item)
        pred = source.read_prediction(pred_path) if pred_path is not None else None
        gt = None
        if item.labels is not None:
            gt = source.read_raw_labels(item, num_points=points.shape[0])
            if ids == "train":
                gt = label_map.to_train(gt, unknown="zero")
        proj = spherical_projection(points, geometry.height, geometry.width, geometry.fov_up, geometry.fov_down)
        img = scan_panel(points, pred, label_map, gt=gt, proj=proj, row_scale=args.row_scale, ids=ids)
        stem = f"{item.sequence}_{item.scan}".replace("/", "_").lstrip("._") or item.scan
        path = out / f"{stem}.png"
        write_png(path, img)
        line = f"wrote {path} ({img.shape[1]}x{img.shape[0]}"
        if gt is not None and pred is not None:
            to_train = (lambda a: label_map.to_train(a, unknown="zero")) if ids == "raw" else np.asarray
            g, p = to_train(gt), to_train(pred)
            lab = ~np.isin(g, label_map.ignore)
            if lab.any():
                line += f"; {100 * np.mean(p[lab] == g[lab]):.1f}% of {int(lab.sum())} labelled points correct"
        elif gt is None:
            line += "; no labels"
        print(line + ")")

    if result is None:
        if not args.no_iou and pred_root is not None:
            print(f"{what}: no labels, no iou.png", file=sys.stderr)
        return 0
    title = (f"{pred_root.name or pred_root}: sequences {', '.join(labelled)}, {result.num_scans} scans, "
             f"mIoU {100 * result.miou:.1f}%")
    write_iou_chart(result, label_map, out / "iou.png", title=title)
    print(f"wrote {out / 'iou.png'}: mIoU {100 * result.miou:.2f}% over {result.num_scans} scans "
          f"({result.num_points} points) of sequences {', '.join(labelled)}")
    return 0

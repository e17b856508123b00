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
    parser.add_argument("--pred", "--predictions", dest="pred", required=True, metavar="PRED_ROOT",
                        help="prediction root holding sequences/NN/predictions/*.label (raw ids)")
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
    parser.add_argument("--sensor", default=None, help="sensor preset (hdl64, hdl32, vlp16, os1-128)")
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


def list_items(data_root: Path, sequences) -> list[tuple[str, str, Path, Path | None]]:
    """[(sequence, stem, scan path, label path or None)] sorted by sequence then stem."""
    from ..errors import DataError

    items = []
    for name in sequences:
        velo = data_root / "sequences" / name / "velodyne"
        scans = sorted(velo.glob("*.bin")) if velo.is_dir() else []
        if not scans:
            raise DataError(f"no scans in {velo} (expected DATA/sequences/{name}/velodyne/NNNNNN.bin)")
        label_dir = data_root / "sequences" / name / "labels"
        for p in scans:
            label = label_dir / f"{p.stem}.label"
            items.append((name, p.stem, p, label if label.is_file() else None))
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

    from ..data.io import read_label, read_scan
    from ..data.labels import LabelMap
    from ..data.projection import spherical_projection
    from ..errors import ConfigError, DataError
    from ..evaluation import evaluate, sequence_dir
    from ..visualize import scan_panel, write_iou_chart, write_png
    from .paths import check_out_dir

    check_out_dir(args.out, "--out")
    cfg = None
    if args.config:
        from ..engine.config import load_config
        cfg = load_config(args.config)
    label_map = LabelMap.from_yaml(args.label_config or (cfg["data"]["labels"] if cfg else None))
    geometry = _sensor(args, cfg)
    if args.row_scale < 1:
        raise ConfigError(f"--row-scale must be at least 1, got {args.row_scale}")
    data_root, pred_root, out = Path(args.data), Path(args.pred), Path(args.out)
    if not (data_root / "sequences").is_dir():
        raise DataError(f"dataset root {data_root}: no 'sequences' directory (expected DATA/sequences/NN/velodyne)")
    if args.sequences:
        seqs = [sequence_dir(s) for s in args.sequences]
        what = f"sequences {', '.join(seqs)}"
    else:   # as `lidarseg submission`: the split's sequences that exist under DATA
        listed = [sequence_dir(s) for s in label_map.sequences(args.split)]
        seqs = [s for s in listed if (data_root / "sequences" / s).is_dir()]
        if not seqs:
            raise DataError(f"split {args.split}: none of its sequences ({', '.join(listed) or 'none'}) exist "
                            f"under {data_root / 'sequences'}")
        if len(seqs) < len(listed):
            print(f"warning: split {args.split}: sequences {', '.join(s for s in listed if s not in seqs)} not found "
                  f"under {data_root / 'sequences'}; using {', '.join(seqs)}", file=sys.stderr)
        what = f"split {args.split} (sequences {', '.join(seqs)})"
    items = list_items(data_root, seqs)
    chosen = [items[i] for i in choose(len(items), args.scans, args.index, what)]

    # check every file before writing anything (sizes: 16 bytes per point in a scan, 4 in a label file)
    jobs = []
    for seq, stem, scan_path, label_path in chosen:
        pred_path = pred_root / "sequences" / seq / "predictions" / f"{stem}.label"
        if not pred_path.is_file():
            raise DataError(f"prediction file not found: {pred_path} (for scan {scan_path}; expected "
                            f"PRED/sequences/{seq}/predictions/{stem}.label)")
        n = scan_path.stat().st_size // 16
        for path, kind in ((pred_path, "prediction"), (label_path, "label file")):
            if path is not None and path.stat().st_size // 4 != n:
                raise DataError(f"{kind} {path} has {path.stat().st_size // 4} labels but its scan {scan_path} "
                                f"has {n} points")
        jobs.append((seq, stem, scan_path, label_path, pred_path))
    labelled = [s for s in seqs if (data_root / "sequences" / s / "labels").is_dir()]
    result = None
    if labelled and not args.no_iou:
        # all scans of the labelled sequences; a missing, extra or wrong-length prediction is an error naming it
        result = evaluate(data_root, pred_root, label_map=label_map, sequences=labelled,
                          progress=not args.no_progress)
        for w in result.warnings:
            print(f"warning: {w}", file=sys.stderr)

    print(f"{what}: {len(items)} scans; panels of {len(jobs)}; sensor {geometry.height}x{geometry.width}, "
          f"fov {geometry.fov_up:+g}/{geometry.fov_down:+g} deg")
    for seq, stem, scan_path, label_path, pred_path in jobs:
        points = read_scan(scan_path)
        pred = read_label(pred_path, num_points=points.shape[0])
        gt = read_label(label_path, num_points=points.shape[0]) if label_path is not None else None
        proj = spherical_projection(points, geometry.height, geometry.width, geometry.fov_up, geometry.fov_down)
        img = scan_panel(points, pred, label_map, gt=gt, proj=proj, row_scale=args.row_scale)
        path = out / f"{seq}_{stem}.png"
        write_png(path, img)
        line = f"wrote {path} ({img.shape[1]}x{img.shape[0]}"
        if gt is not None:
            g = label_map.to_train(gt, unknown="zero")
            p = label_map.to_train(pred, unknown="zero")
            lab = ~np.isin(g, label_map.ignore)
            if lab.any():
                line += f"; {100 * np.mean(p[lab] == g[lab]):.1f}% of {int(lab.sum())} labelled points correct"
        else:
            line += "; no labels"
        print(line + ")")

    if result is None:
        if not args.no_iou:
            print(f"{what}: no labels, no iou.png", file=sys.stderr)
        return 0
    title = (f"{pred_root.name or pred_root}: sequences {', '.join(labelled)}, {result.num_scans} scans, "
             f"mIoU {100 * result.miou:.1f}%")
    write_iou_chart(result, label_map, out / "iou.png", title=title)
    print(f"wrote {out / 'iou.png'}: mIoU {100 * result.miou:.2f}% over {result.num_scans} scans "
          f"({result.num_points} points) of sequences {', '.join(labelled)}")
    return 0

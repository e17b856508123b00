"""`lidarseg evaluate`: point-level IoU of prediction files, with the official semantic-kitti-api numbers."""
from __future__ import annotations

import json
import sys


def add_arguments(parser):
    from .. import DEFAULT_DATA_ROOT

    parser.add_argument("--data", default=str(DEFAULT_DATA_ROOT),
                        help="dataset root holding sequences/NN/labels (default: %(default)s)")
    parser.add_argument("--format", default="semantic-kitti", metavar="NAME",
                        help="dataset format of --data and of the predictions: semantic-kitti, semantic-poss, "
                             "nuscenes (default: %(default)s)")
    parser.add_argument("--predictions", default=None,
                        help="root holding sequences/NN/predictions/*.label (default: --data, as the official tool)")
    parser.add_argument("--split", default="valid",
                        help="split of the label config whose sequences are evaluated: train, valid, test, or the "
                             "format's own (nuScenes: mini_val, ...) (default: %(default)s)")
    parser.add_argument("--sequences", nargs="+", default=None, help="evaluate these sequences instead of --split")
    parser.add_argument("--config", default=None, help="label config YAML (default: the format's, "
                        "configs/semantic-kitti.yaml or configs/labels/<format>.yaml)")
    parser.add_argument("--convention", default="api", choices=["api", "bonnetal"],
                        help="api: official (predicted 0 on a labelled point is a false negative); bonnetal: "
                             "lidar-bonnetal's training metric (rows and columns of class 0 dropped)")
    parser.add_argument("--json", default=None, help="also write the report as JSON to this file (atomically)")
    parser.add_argument("--plot", default=None, metavar="FILE.png",
                        help="also write a per-class IoU bar chart (PNG, no display needed) to this file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..data.io import atomic_write_bytes
    from ..data.sources import build_source
    from ..evaluation import evaluate
    from ..submission import check_manifest
    from .paths import check_out_file

    for option in ("json", "plot"):
        if getattr(args, option):
            check_out_file(getattr(args, option), f"--{option}")
    source = build_source(args.format, args.data, label_map=args.config)
    label_map = source.label_map
    pred_root = args.predictions or args.data
    notes = check_manifest(pred_root, source.resolve(args.split, args.sequences), source, args.split)
    result = evaluate(args.data, pred_root, args.split, sequences=args.sequences, convention=args.convention,
                      progress=not args.no_progress, source=source)
    for w in notes:
        print(f"note: {w}", file=sys.stderr)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    what = (f"sequences {', '.join(result.sequences)} (given with --sequences)" if args.sequences else
            f"Split: {args.split} (sequences {', '.join(result.sequences)})")
    from ..submission import read_manifest
    from .infer import protocol_text
    manifest = read_manifest(pred_root)
    protocol = (protocol_text(manifest["writer"]) if manifest is not None and "writer" in manifest
                else "unknown (no lidarseg infer manifest)")
    print(f"Data: {args.data} ({source.name})\nPredictions: {args.predictions or args.data}\n"
          f"Protocol: {protocol}\n{what}, "
          f"{result.num_scans} scans, {result.num_points} points, "
          f"convention {args.convention}, ignoring class(es) {list(result.confusion.ignore)}")
    print(result.table())
    print("\n".join(result.official_lines()))
    if args.json:
        report = result.to_dict()
        if manifest is not None and "writer" in manifest:
            report["protocol"] = {k: manifest["writer"].get(k, False) for k in ("knn", "tta", "mc_samples")}
        atomic_write_bytes(args.json, (json.dumps(report, indent=1) + "\n").encode())
        print(f"wrote {args.json}")
    if args.plot:
        from ..visualize import write_iou_chart
        write_iou_chart(result, label_map, args.plot,
                        title=f"sequences {', '.join(result.sequences)}: {result.num_scans} scans, "
                              f"mIoU {100 * result.miou:.1f}% ({args.convention} convention)")
        print(f"wrote {args.plot}")
    return 0

"""`lidarseg infer`: predict a split (or sequences, or any folder of scans) with a training checkpoint and write
prediction files in the dataset's format.

    lidarseg infer --checkpoint runs/demo/best.pt --split valid --out runs/demo/predictions
    lidarseg infer --checkpoint best.pt --data /data/semantic-kitti --split test --out preds --no-knn
    lidarseg infer --checkpoint best.pt --scans my_drive/ --out preds      # .bin, .pcd, .npy or .npz files

The model is rebuilt from the config inside the checkpoint. Prints the time per scan of each stage (load+project,
network, KNN, write) and, where the split has labels, the point-level IoU per class (official convention).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by `lidarseg train` (last.pt/best.pt)")
    parser.add_argument("--data", help="dataset root (default: the data.root of the checkpoint's config)")
    parser.add_argument("--format", default=None, metavar="NAME",
                        help="dataset format of --data (semantic-kitti, semantic-poss, nuscenes, folder; default: "
                             "the data.format of the checkpoint's config)")
    parser.add_argument("--split", default="valid", help="split of the label config: valid, test or train "
                                                        "(default: %(default)s)")
    parser.add_argument("--sequences", nargs="+", default=None, metavar="NAME",
                        help="these sequences (scenes) instead of --split's")
    parser.add_argument("--scans", default=None, metavar="DIR",
                        help="a folder (or one file) of scans without labels: KITTI .bin, .pcd (ascii or binary), "
                             ".npy/.npz; predictions mirror its tree under --out as .label files (raw ids); the "
                             "sensor geometry comes from the checkpoint")
    parser.add_argument("--png", action="store_true",
                        help="also write a PNG panel (range image and prediction) per scan beside its prediction")
    parser.add_argument("--out", required=True, help="prediction root (SemanticKITTI: "
                                                     "OUT/sequences/NN/predictions/*.label)")
    parser.add_argument("--knn", action=argparse.BooleanOptionalAction, default=None,
                        help="KNN post-processing (default: postproc.knn of the checkpoint's config)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where the network runs; auto = cuda when available (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the config's train.threads, "
                        "else torch's default)")
    parser.add_argument("--limit", type=int, help="only the first N >= 1 scans of the split (default: all)")
    parser.add_argument("--json", help="also write timings and metrics as JSON to this file")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the predictions already in --out first (without it, a folder holding "
                             "predictions of another checkpoint, options or --limit is refused)")
    parser.add_argument("--mc-samples", type=int, default=0, metavar="N",
                        help="MC-dropout: predict the argmax of the mean softmax over N >= 2 passes with dropout "
                             "active and write each point's variance (float32) to sequences/NN/uncert/ (networks "
                             "with dropout, e.g. salsanext; default: off)")
    parser.add_argument("--tta", default="none", metavar="SPEC",
                        help="test-time augmentation of range-image networks: 'flip', 'shift:N' or 'flip,shift:N' "
                             "(softmax averaged over every combination before KNN; flip,shift:4 = 8 votes); "
                             "default: %(default)s (one pass)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def protocol(writer: dict, mc_samples: int = 0) -> dict:
    """Every switch that changes the predicted labels, as written into the infer JSON and the prediction folder's
    manifest (read back by `lidarseg evaluate` for its header): KNN (False or its parameters), the number of
    network passes averaged per scan (`votes`), TTA (False or {votes, flip, shifts}), MC-dropout samples."""
    tta = writer.get("tta", False)
    votes = tta["votes"] if tta else (mc_samples or 1)
    return {"knn": writer["knn"], "votes": votes, "tta": tta, "mc_samples": int(mc_samples or 0)}


def protocol_text(writer: dict) -> str:
    """One line for a header: KNN and TTA of the run that wrote a prediction folder (its manifest's writer)."""
    knn = writer.get("knn")
    knn_text = (f"KNN on (k={knn['k']}, search={knn['search']}, sigma={knn['sigma']}, cutoff={knn['cutoff']})"
                if knn else "KNN off")
    tta = writer.get("tta")
    tta_text = (f"TTA {tta['votes']} votes (flip {'on' if tta['flip'] else 'off'}, {tta['shifts']} shift(s))"
                if tta else "TTA off (1 vote)")
    mc = writer.get("mc_samples")
    return f"{knn_text}; {tta_text}" + (f"; MC-dropout {mc} samples" if mc else "")


def run(args) -> int:
    import torch

    from ..data.io import atomic_write_bytes
    from ..engine.inference import load_model, predict_split, timing_lines, writer_info
    from ..errors import ConfigError
    from .paths import check_out_dir, check_out_file

    check_out_dir(args.out, "--out")
    if args.json:
        check_out_file(args.json, "--json")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1 (a number of scans; omit it for all), got {args.limit}")
    if args.mc_samples and args.mc_samples < 2:
        raise ConfigError(f"--mc-samples must be >= 2 (0 = off), got {args.mc_samples}")
    from ..engine.tta import TTA
    tta = TTA.parse(args.tta)
    if tta.active and args.mc_samples:
        raise ConfigError("--tta and --mc-samples cannot be combined (both average softmax over several passes)")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model, cfg, label_map = load_model(args.checkpoint, torch.device(device))
    threads = args.threads or cfg["train"].get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    if args.scans and (args.data or args.format not in (None, "folder") or args.sequences):
        raise ConfigError("--scans reads a folder of scans: it cannot be combined with --data, --format or "
                          "--sequences")
    data = {**cfg["data"]}
    if args.scans:
        data.update(root=str(Path(args.scans).expanduser().resolve()), format="folder")
    elif args.data:
        data["root"] = str(Path(args.data).expanduser().resolve())
    if args.format:
        from ..data.sources import source_class
        source_class(args.format)
        data["format"] = args.format
    cfg = {**cfg, "data": data}
    split = None if args.scans else args.split
    knn = cfg["postproc"]["knn"] if args.knn is None else args.knn
    p = cfg["postproc"]
    from ..data.representation import representation_of
    rep = representation_of(model)
    mode = rep.name
    knn_text = (f"on (k={p['k']}, search={p['search']}, sigma={p['sigma']}, cutoff={p['cutoff']})" if knn
                else "off (each point takes its pixel's label)")
    if not rep.image_output:
        knn_text = "not used (the network predicts every point)"
    rep.check_tta(tta)
    print(f"checkpoint {args.checkpoint}: {cfg['model']['name']}, {mode} input, device {device}; KNN {knn_text}; "
          f"TTA {tta.describe()}")
    writer = writer_info(args.checkpoint, cfg, knn, mode, tta)
    if args.mc_samples:
        writer["mc_samples"] = args.mc_samples
    result = predict_split(model, cfg, label_map, split, args.out, knn=knn, device=device, limit=args.limit,
                           progress=not args.no_progress, writer=writer, overwrite=args.overwrite,
                           mc_samples=args.mc_samples, sequences=args.sequences, tta=tta)
    src = result["source"]
    print(f"wrote {result['scans']} prediction files under {args.out} ({src.name} format)")
    if args.png:
        from ..visualize import write_prediction_panels
        for path in write_prediction_panels(src, args.out, cfg, label_map, split, args.sequences, args.limit):
            print(f"wrote {path}")
    print("\n".join(timing_lines(result["times"], result["knn"])))
    report = {"scans": result["scans"], "knn": result["knn"], "protocol": protocol(writer, args.mc_samples),
              "seconds_per_scan": {k: v for k, v in result["times"].items()}}
    ev = result["evaluator"]
    if ev is not None:
        from ..evaluation import EvalResult
        kind = "point_knn" if result["knn"] else "point"
        cm = ev.matrix(kind)
        what = f"sequences {' '.join(args.sequences)}" if args.sequences else args.split
        res = EvalResult(confusion=cm, names=label_map.names, split=args.split, sequences=[])
        label = "with KNN" if result["knn"] else "without KNN"
        print(f"point-level IoU on {what} ({label}; official convention):")
        print(res.table())
        report["metrics"] = cm.to_dict(label_map.names)
    elif args.scans:
        print("a folder of scans has no labels: no IoU", file=sys.stderr)
    else:
        print(f"split {args.split} has no labels: no IoU (submit the test predictions with `lidarseg submission`)",
              file=sys.stderr)
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(report, indent=1) + "\n").encode())
    return 0

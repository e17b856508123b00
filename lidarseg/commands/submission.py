"""`lidarseg submission`: build and validate a SemanticKITTI submission zip from prediction files, or (--format
nuscenes) complete and validate a nuScenes-lidarseg submission folder (the meta JSON beside the predictions)."""
from __future__ import annotations

import sys


def add_arguments(parser):
    from .. import DEFAULT_DATA_ROOT

    parser.add_argument("--predictions", required=True, help="root holding sequences/NN/predictions/*.label")
    parser.add_argument("--data", default=str(DEFAULT_DATA_ROOT),
                        help="dataset root holding sequences/NN/velodyne (default: %(default)s)")
    parser.add_argument("--out", default=None, help="the zip to write (atomically); SemanticKITTI only")
    parser.add_argument("--format", default="semantic-kitti", metavar="NAME",
                        help="semantic-kitti (zip) or nuscenes (PRED/<eval set>/submission.json + the checks of "
                             "the lidarseg benchmark) (default: %(default)s)")
    parser.add_argument("--split", default="test", help="nuscenes: the split whose predictions are submitted "
                        "(default: %(default)s)")
    parser.add_argument("--use", nargs="*", default=["lidar"], metavar="INPUT",
                        help="nuscenes meta flags set true: camera lidar radar map external (default: lidar)")
    parser.add_argument("--sequences", nargs="+", default=None,
                        help="sequences to include (default: the label config's test split, 11-21, that exist "
                             "under --data)")
    parser.add_argument("--config", default=None, help="label config YAML (default: configs/semantic-kitti.yaml)")


def run(args) -> int:
    from ..data.labels import LabelMap
    from ..errors import DataError
    from ..submission import build_submission, check_manifest, test_sequences, validate_submission
    from .paths import check_out_file

    if args.format == "nuscenes":
        return _nuscenes(args)
    if args.format != "semantic-kitti":
        raise DataError(f"--format {args.format}: submissions are written for semantic-kitti and nuscenes")
    if not args.out:
        raise DataError("--out: the zip to write is required for a SemanticKITTI submission")
    check_out_file(args.out, "--out")
    label_map = LabelMap.from_yaml(args.config)
    present, missing = test_sequences(args.data, label_map, args.sequences)
    if missing:
        print(f"warning: sequences {', '.join(missing)} have no velodyne directory under {args.data}; they are "
              f"left out (the official benchmark needs all of 11-21)", file=sys.stderr)
    if not present:
        raise DataError(f"none of the sequences {', '.join(missing)} exist under {args.data}/sequences")
    for note in check_manifest(args.predictions, present):
        print(f"note: {note}", file=sys.stderr)
    out = build_submission(args.predictions, args.data, args.out, present, label_map)
    for check in validate_submission(out, args.data, present):
        print(f"\u2713 {check}")
    print(f"wrote {out}")
    return 0


def _nuscenes(args) -> int:
    from ..data.sources import build_source
    from ..data.sources.nuscenes import SUBMISSION_META, check_submission, write_submission_meta
    from ..errors import ConfigError
    from ..submission import check_manifest

    flags = {f"use_{u}" for u in args.use}
    unknown = sorted(flags - set(SUBMISSION_META))
    if unknown:
        raise ConfigError(f"--use {' '.join(args.use)}: unknown inputs {unknown}; valid: camera lidar radar map "
                          "external")
    source = build_source("nuscenes", args.data, label_map=args.config)
    for note in check_manifest(args.predictions, source.resolve(args.split), source, args.split):
        print(f"note: {note}", file=sys.stderr)
    meta = write_submission_meta(args.predictions, args.split, **{k: k in flags for k in SUBMISSION_META})
    print(f"wrote {meta}")
    for check in check_submission(args.predictions, source, args.split):
        print(f"\u2713 {check}")
    return 0

"""`lidarseg submission`: build and validate a SemanticKITTI submission zip from prediction files."""
from __future__ import annotations

import sys


def add_arguments(parser):
    from .. import DEFAULT_DATA_ROOT

    parser.add_argument("--predictions", required=True, help="root holding sequences/NN/predictions/*.label")
    parser.add_argument("--data", default=str(DEFAULT_DATA_ROOT),
                        help="dataset root holding sequences/NN/velodyne (default: %(default)s)")
    parser.add_argument("--out", required=True, help="the zip to write (atomically)")
    parser.add_argument("--sequences", nargs="+", default=None,
                        help="sequences to include (default: the label config's test split, 11-21, that exist "
                             "under --data)")
    parser.add_argument("--config", default=None, help="label config YAML (default: configs/semantic-kitti.yaml)")


def run(args) -> int:
    from ..data.labels import LabelMap
    from ..errors import DataError
    from ..submission import build_submission, check_manifest, test_sequences, validate_submission
    from .paths import check_out_file

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

"""`lidarseg stats --data ROOT --split train [--format NAME] [--out FILE.yaml]`: class frequencies and input
mean/std of a dataset in any registered format, as YAML (printed, or written atomically with --out).
`--instances`: the instance bank of instance paste for the split instead (built and cached as training does)."""
from __future__ import annotations

import sys


def add_arguments(parser):
    from .. import DEFAULT_DATA_ROOT
    parser.add_argument("--data", default=str(DEFAULT_DATA_ROOT), help="dataset root (SemanticKITTI: holding "
                        "sequences/NN/)")
    parser.add_argument("--format", default="semantic-kitti", metavar="NAME",
                        help="dataset format: semantic-kitti, semantic-poss, nuscenes, folder (default: %(default)s)")
    parser.add_argument("--split", default="train", help="split of the label config (default: train)")
    parser.add_argument("--sequences", nargs="+", default=None, help="sequence ids, overriding the split's list")
    parser.add_argument("--labels", default=None, help="label config YAML (default: the format's)")
    parser.add_argument("--sensor", default=None, help="sensor preset (hdl64, hdl32, vlp16, os1-128, pandora40; "
                        "default: the format's)")
    parser.add_argument("--height", type=int, default=None, help="range image height (beams)")
    parser.add_argument("--width", type=int, default=None, help="range image width")
    parser.add_argument("--fov-up", type=float, default=None, help="upper vertical field of view, degrees")
    parser.add_argument("--fov-down", type=float, default=None, help="lower vertical field of view, degrees")
    parser.add_argument("--max-scans", type=int, default=None, help="use only the first N >= 1 scans (default: all)")
    parser.add_argument("--out", default=None, help="write the YAML here (atomically) instead of printing it")
    parser.add_argument("--instances", action="store_true",
                        help="instead: build (or read from its cache) the instance bank of data.augment.instancepaste "
                             "for the split and print its instances per class")
    parser.add_argument("--instance-classes", nargs="+", default=None, metavar="NAME",
                        help="with --instances: these classes (default: those under --rare-fraction of the points)")
    parser.add_argument("--rare-fraction", type=float, default=0.005,
                        help="with --instances: the default classes' upper point fraction (default: %(default)s)")
    parser.add_argument("--min-points", type=int, default=20,
                        help="with --instances: smallest instance kept (default: %(default)s)")
    parser.add_argument("--cache-dir", default=None,
                        help="with --instances: where the bank is cached (default: ROOT/.lidarseg-cache, as training)")


def run(args) -> int:
    from ..data.stats import compute_stats, dump_stats, write_stats
    from ..errors import ConfigError
    from .paths import check_out_file

    if args.max_scans is not None and args.max_scans < 1:
        raise ConfigError(f"--max-scans must be >= 1 (a number of scans; omit it for all), got {args.max_scans}")
    if args.out:
        check_out_file(args.out, "--out")

    sensor = {"preset": args.sensor} if args.sensor else {}
    for key in ("height", "width", "fov_up", "fov_down"):
        if getattr(args, key) is not None:
            sensor[key] = getattr(args, key)
    from ..data.projection import SENSOR_PRESETS
    from ..data.sources import build_source
    source = build_source(args.format, args.data, label_map=args.labels)
    if args.instances:
        return print_instances(args, source)
    if sensor and "preset" not in sensor and source.sensor in SENSOR_PRESETS:
        sensor = {**SENSOR_PRESETS[source.sensor].to_dict(), **sensor}  # single values override the format's
    stats = compute_stats(args.data, args.split, sequences=args.sequences, sensor=sensor or None,
                          max_scans=args.max_scans, progress=args.out is not None and sys.stderr.isatty(),
                          source=source)
    if args.out:
        write_stats(args.out, stats)
        src = stats["source"]
        print(f"wrote {args.out}: {src['scans']} scans, {src['points']} points, {src['pixels']} pixels")
    else:
        sys.stdout.write(dump_stats(stats))
    return 0


def print_instances(args, source) -> int:
    """The instance bank that `data.augment.instancepaste` with these options would use for the split (built and
    cached once, as training does): instances and points per selected class."""
    import numpy as np

    from ..data.instances import InstancePaste
    from ..data.projection import SensorGeometry
    items = source.items(args.split, args.sequences, labels=True)
    if args.max_scans:
        items = items[:args.max_scans]
    cfg = {"classes": args.instance_classes, "rare_fraction": args.rare_fraction, "min_points": args.min_points,
           "cache_dir": args.cache_dir}
    paste = InstancePaste(cfg, source.label_map, SensorGeometry(), source=source, items=items)
    bank, names = paste.bank, source.label_map.names
    total = max(int(bank.class_points[[k for k in range(len(names)) if k not in source.label_map.ignore]].sum()), 1)
    print(f"instance bank of {len(items)} scans ({source.name}, split {args.split}): {len(bank)} instances of "
          f">= {args.min_points} points")
    for k in paste.classes:
        sizes = [bank.instance(i).stop - bank.instance(i).start for i in range(len(bank)) if bank.cls[i] == k]
        print(f"  {names[k]:<16} {len(sizes):6d} instances  {sum(sizes):9d} points  median {int(np.median(sizes)):5d} "
              f"points/instance  ({100 * bank.class_points[k] / total:.3f} % of the labelled points)")
    return 0

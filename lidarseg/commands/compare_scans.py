"""`lidarseg compare-scans A B`: side-by-side statistics of two datasets or folders of scans (range, height,
image-row fill, remission against range, ring geometry, ego shadow, per-class remission), as a Markdown table, a JSON
file and a PNG of the distributions (see docs/synthetic.md)."""
from __future__ import annotations


def add_arguments(parser):
    parser.add_argument("a", metavar="A",
                        help="dataset root (sequences/NN/velodyne), folder of .bin/.npy scans, or a file")
    parser.add_argument("b", metavar="B", help="the second set, as A")
    parser.add_argument("--names", nargs=2, default=None, metavar=("NAME_A", "NAME_B"), help="column names")
    parser.add_argument("--max-scans", type=int, default=20, help="at most N scans per side, spread evenly (20)")
    parser.add_argument("--azimuth-crop", type=float, default=None, metavar="DEG",
                        help="keep only points within +-DEG of the front on both sides (front-view data; ring "
                             "figures are then left out)")
    parser.add_argument("--json", default=None, help="write both statistics here (default: compare-scans.json)")
    parser.add_argument("--png", default=None, help="write the distributions here (default: compare-scans.png)")


def run(args) -> int:
    from ..data.compare import compare_table, find_scans, scan_set_stats, write_json, write_png
    from ..errors import ConfigError

    if args.azimuth_crop is not None and not 0 < args.azimuth_crop <= 180:
        raise ConfigError(f"--azimuth-crop must be in (0, 180] degrees, got {args.azimuth_crop}")
    names = tuple(args.names) if args.names else ("A", "B")
    items_a = find_scans(args.a, args.max_scans)   # both inputs checked before any statistics are computed
    items_b = find_scans(args.b, args.max_scans)
    a = scan_set_stats(items_a, azimuth_crop=args.azimuth_crop)
    b = scan_set_stats(items_b, azimuth_crop=args.azimuth_crop)
    print(compare_table(a, b, names), end="")
    js = write_json(args.json or "compare-scans.json", a, b)
    png = write_png(args.png or "compare-scans.png", a, b, names)
    print(f"wrote {js} and {png}")
    return 0

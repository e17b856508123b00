"""`lidarseg bench eval`: points per second of the evaluate path against the official evaluator's np.add.at
confusion matrix, (1) on the confusion update alone and (2) per scan from files (read, & 0xFFFF, learning_map,
update), on generated scans of ~120k points."""
from __future__ import annotations

import datetime
import platform
import tempfile
from pathlib import Path

import numpy as np

from .common import median_ms, print_table, time_call


def add_arguments(parser):
    parser.add_argument("--scans", type=int, default=8)
    parser.add_argument("--points", type=int, default=120_000)
    parser.add_argument("--repeat", type=int, default=7)


def run(args) -> int:
    from ..data.io import write_label
    from ..data.labels import LabelMap
    from ..evaluation import evaluate
    from ..metrics import ConfusionMatrix

    lm = LabelMap.from_yaml()
    C = lm.num_classes
    rng = np.random.default_rng(0)
    raw = np.array(sorted(lm.learning_map), dtype=np.uint32)
    lut_off = np.zeros(max(lm.learning_map) + 100, dtype=np.int32)
    lut_off[list(lm.learning_map)] = list(lm.learning_map.values())
    n_total = args.scans * args.points
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for s in range(args.scans):
            gt = raw[rng.integers(0, len(raw), args.points)]
            pred = np.where(rng.random(args.points) < 0.8, gt, raw[rng.integers(0, len(raw), args.points)])
            write_label(tmp / "sequences/08/labels" / f"{s:06d}.label", gt | (np.uint32(3) << 16))
            write_label(tmp / "sequences/08/predictions" / f"{s:06d}.label", pred)
        files = sorted((tmp / "sequences/08/labels").glob("*.label"))
        pairs = [(f, tmp / "sequences/08/predictions" / f.name) for f in files]
        gts = [lut_off[np.fromfile(a, np.int32) & 0xFFFF] for a, _ in pairs]
        preds = [lut_off[np.fromfile(b, np.int32) & 0xFFFF] for _, b in pairs]

        def upd_ref():
            conf = np.zeros((C, C), dtype=np.int64)
            for p, g in zip(preds, gts):
                np.add.at(conf, (p, g), 1)
            return conf

        def upd_ours():
            cm = ConfusionMatrix(C)
            for p, g in zip(preds, gts):
                cm.update(p, g)
            return cm.matrix

        def files_ref():
            conf = np.zeros((C, C), dtype=np.int64)
            for a, b in pairs:
                g = lut_off[np.fromfile(a, dtype=np.int32).reshape(-1) & 0xFFFF]
                p = lut_off[np.fromfile(b, dtype=np.int32).reshape(-1) & 0xFFFF]
                np.add.at(conf, (p, g), 1)
            return conf

        def files_ours():
            return evaluate(tmp, tmp, "valid", lm, progress=False).confusion.matrix

        assert np.array_equal(upd_ref(), upd_ours()) and np.array_equal(files_ref(), files_ours())
        rows = []
        for what, ref, ours in (("confusion update", upd_ref, upd_ours), ("evaluate from files", files_ref,
                                                                             files_ours)):
            t_ref = median_ms(time_call(ref, repeat=args.repeat))
            t_ours = median_ms(time_call(ours, repeat=args.repeat))
            rows.append([what, "np.add.at (official)", f"{t_ref:.1f}", f"{n_total / t_ref / 1e3:.1f}", "1.0x"])
            rows.append([what, "lidarseg (bincount)", f"{t_ours:.1f}", f"{n_total / t_ours / 1e3:.1f}",
                         f"{t_ref / t_ours:.1f}x"])
    print(f"{args.scans} scans x {args.points} points; identical confusion matrices")
    print_table(rows, ["path", "implementation", "median ms", "Mpoints/s", "speed-up"])
    print(f"{datetime.date.today()}  python {platform.python_version()}  numpy {np.__version__}")
    return 0

"""`lidarseg bench augment`: per-sample CPU cost of each training augmentation (point augmentation, the
scene-mixing parts, PolarMix, instance paste) on full-resolution synthetic scans (64 x 2048 steps, ~120k points),
alone and inside the whole loading pipeline (`SemanticKITTI.__getitem__`: read, augment, project, normalise,
tensors), against the same pipeline without augmentation in the same process; medians of repeated runs and the
ratio."""
from __future__ import annotations

import datetime
import os
import tempfile

import numpy as np

from .common import median_ms, print_table, time_call

PARTS = {
    "point (rotation, flip, scale, jitter, dropout)": {"rotation": {}, "flip": {}, "scale": {}, "jitter": {},
                                                       "dropout": {}},
    "lasermix": {"lasermix": {"prob": 1.0}},
    "rangemix": {"rangemix": {"prob": 1.0}},
    "rangeunion": {"rangeunion": {"prob": 1.0}},
    "rangeshift": {"rangeshift": {"prob": 1.0}},
    "polarmix (swap and copy)": {"polarmix": {"prob": 1.0, "swap_prob": 1.0}},
    "instancepaste": {"instancepaste": {"prob": 1.0}},
}


def add_arguments(parser):
    parser.add_argument("--scans", type=int, default=4, help="full-resolution synthetic scans generated (sequence "
                        "00; the partners and the instance bank come from them) (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=15, help="timed samples per variant (median reported)")


def run(args) -> int:
    from ..data.augment import rng_for
    from ..data.dataset import SemanticKITTI
    from ..data.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, sequences=[0], scans=args.scans, seed=0, log=None)
        plain = SemanticKITTI(tmp, "train", sequences=[0])
        n = len(plain)
        counter = iter(range(10 ** 9))

        def sample(ds):
            k = next(counter)
            ds.set_epoch(k)
            return ds[k % n]

        base = median_ms(time_call(lambda: sample(plain), repeat=args.repeat, warmup=2))
        points, labels = plain.load(0)
        partner = plain.load(1 % n)
        rows = []
        every = {}
        for name, cfg in PARTS.items():
            every.update(cfg)
            ds = SemanticKITTI(tmp, "train", sequences=[0], augmentation={"seed": 0, **cfg})
            if ds.mixing is not None:
                def alone(ds=ds):
                    k = next(counter)
                    ds.mixing(points, labels, rng_for(0, k, 0), partner=partner)
            else:
                def alone(ds=ds):
                    k = next(counter)
                    ds.augmentation(points, rng_for(0, k, 0))
            t_alone = median_ms(time_call(alone, repeat=args.repeat, warmup=2))
            t_whole = median_ms(time_call(lambda ds=ds: sample(ds), repeat=args.repeat, warmup=2))
            rows.append([name, f"{t_alone:.2f}", f"{t_whole:.2f}", f"{t_whole / base:.2f}x"])
        ds = SemanticKITTI(tmp, "train", sequences=[0], augmentation={"seed": 0, **every})
        t_whole = median_ms(time_call(lambda: sample(ds), repeat=args.repeat, warmup=2))
        rows.append(["all of the above", "-", f"{t_whole:.2f}", f"{t_whole / base:.2f}x"])
    print(f"per-sample cost on {n} synthetic scans of ~{points.shape[0]} points, 64x2048, median of {args.repeat} "
          f"samples ({datetime.date.today().isoformat()}, {os.cpu_count()} cpus); reference: the loading pipeline "
          f"without augmentation, {base:.2f} ms per sample")
    print_table(rows, ["augmentation (prob 1)", "alone ms", "whole sample ms", "vs no augmentation"])
    return 0

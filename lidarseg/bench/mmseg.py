"""`lidarseg bench mmseg` (or `python -m lidarseg.bench.mmseg`): the subclassified loss as registered in
mmsegmentation (lidarseg.integrations.mmseg) against mmseg's own CrossEntropyLoss, forward+backward on Cityscapes-
shaped logits, both normalisations (`avg_non_ignore` False / True), side by side in one process.

Inputs: a label map of rectangles of 19 classes on a background class, with a 5% band of ignore (255) pixels;
network-like logits (class score + smooth field + noise, so that subclasses of many sizes exist). The methods are
timed in `--repeat` rounds after one warm-up round, each round calling every method once (interleaved, so that a
change of machine load affects all methods alike); medians are reported with the ratio to mmseg's CE of the same
normalisation. Needs the mmseg extra (`pip install -e ".[mmseg]"`).
"""
from __future__ import annotations

import datetime
import json
import platform
import sys
import warnings

import torch
import torch.nn.functional as F

from .common import median_ms, print_table, time_call

METHODS = ("ce", "ours", "ce_valid", "ours_valid")
LABELS = {"ce": "mmseg CrossEntropyLoss", "ours": "SubclassifiedCrossEntropyLoss",
          "ce_valid": "mmseg CrossEntropyLoss, avg_non_ignore", "ours_valid": "Subclassified..., avg_non_ignore"}
BASELINE = {"ce": "ce", "ours": "ce", "ce_valid": "ce_valid", "ours_valid": "ce_valid"}


def add_arguments(parser):
    parser.add_argument("--batch", type=int, nargs="+", default=[2, 8], help="batch sizes to time (default 2 8)")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's); on a loaded machine 1 gives steadier figures")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


def cityscapes_like(B, C, H, W, seed=0, device="cpu"):
    """Labels [B,H,W] (rectangles of C classes on class 0, 5% of rows 255) and logits [B,C,H,W]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(B, H, W, dtype=torch.long)
    for b in range(B):
        for _ in range(60):
            h = int(torch.randint(H // 32, H // 4, (1,), generator=g))
            w = int(torch.randint(W // 32, W // 4, (1,), generator=g))
            r, c = int(torch.randint(0, H - h, (1,), generator=g)), int(torch.randint(0, W - w, (1,), generator=g))
            y[b, r:r + h, c:c + w] = int(torch.randint(0, C, (1,), generator=g))
    y[:, : max(1, H // 20)] = 255
    field = F.interpolate(torch.randn(B, C, 8, 16, generator=g), size=(H, W), mode="bilinear", align_corners=False)
    x = 4.0 * F.one_hot(y.clamp(max=C - 1), C).permute(0, 3, 1, 2).float() + 0.3 * field
    x += 0.05 * torch.randn(B, C, H, W, generator=g)
    return x.to(device), y.to(device)


def make_methods():
    from lidarseg.integrations.mmseg import SubclassifiedCrossEntropyLoss
    from mmseg.models.losses import CrossEntropyLoss

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                  # mmseg warns about its avg_non_ignore default
        return {"ce": CrossEntropyLoss(), "ours": SubclassifiedCrossEntropyLoss(),
                "ce_valid": CrossEntropyLoss(avg_non_ignore=True),
                "ours_valid": SubclassifiedCrossEntropyLoss(avg_non_ignore=True)}


def run(args) -> int:
    try:
        methods = make_methods()
    except ImportError as exc:
        print(f"bench mmseg needs the mmseg extra: {exc}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"lidarseg bench mmseg  {datetime.date.today()}  torch {torch.__version__}  device {device}  "
          f"threads {torch.get_num_threads()}  {platform.processor() or platform.machine()}")
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    results = []
    for B in args.batch:
        x, y = cityscapes_like(B, args.classes, args.height, args.width, device=device)
        x.requires_grad_(True)
        calls, values = {}, {}
        for name, loss in methods.items():
            loss.to(device)

            def call(loss=loss):
                x.grad = None
                out = loss(x, y, ignore_index=255)
                out.backward()
                return out

            calls[name] = call
            values[name] = float(call().detach())                  # warm-up round
        times = {n: [] for n in calls}
        for _ in range(args.repeat):                               # rounds interleave the methods, so that a
            for name, call in calls.items():                       # change of machine load hits all alike
                times[name] += time_call(call, repeat=1, warmup=0, sync=sync)
        med = {n: median_ms(t) for n, t in times.items()}
        rows = [[LABELS[n], f"{med[n]:.1f}", f"{med[n] / med[BASELINE[n]]:.2f}x", f"{values[n]:.4f}"]
                for n in METHODS]
        print(f"\nforward+backward, logits [{B},{args.classes},{args.height},{args.width}] on {device}, "
              f"{torch.get_num_threads()} threads, median of {args.repeat}")
        print_table(rows, ["method", "ms", "vs mmseg CE", "loss"])
        results.append({"shape": [B, args.classes, args.height, args.width], "median_ms": med, "loss": values,
                        "ratio": {n: med[n] / med[BASELINE[n]] for n in METHODS}})
    if args.json:
        from lidarseg.data.io import atomic_write_bytes
        meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
                "threads": torch.get_num_threads(), "repeat": args.repeat}
        atomic_write_bytes(args.json, (json.dumps({"meta": meta, "results": results}, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(prog="python -m lidarseg.bench.mmseg", description=__doc__.splitlines()[0])
    add_arguments(p)
    sys.exit(run(p.parse_args()))

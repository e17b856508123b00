"""`lidarseg bench loss`: the subclassified loss (ours: each pair search, and the automatic choice) against the
dense published form (B x N_q x N_r similarity matrix) and plain cross-entropy, forward+backward, side by side in
one process.

Timing: the methods are run in turn, `--repeat` rounds after one warm-up round; medians are reported (wall clock on
CPU, CUDA events on a GPU).
Peak extra memory (CPU): each method runs once more in a fresh subprocess with glibc's mmap threshold pinned
(MALLOC_MMAP_THRESHOLD_), so every large tensor is its own mapping and RSS follows the live tensors; the peak
resident set (VmHWM, reset through /proc/self/clear_refs after the inputs are built) minus the resident set before
the forward is the extra peak of one forward+backward (it includes the logits' gradient, the same for all three).
On CUDA, torch.cuda.max_memory_allocated around the call, in process.
"""
from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import subprocess
import sys

import torch
import torch.nn.functional as F

from .common import median_ms, print_table, time_on

METHODS = ("published", "dense", "ours", "ours_windowed", "ours_dense", "ours_dense_compiled", "ours_valid", "ce")
LABELS = {"published": "dense, published op sequence", "dense": "dense, lean transcription",
          "ours": "subclassified (ours, official, path auto)",
          "ours_windowed": "subclassified (ours, official, windowed)",
          "ours_dense": "subclassified (ours, official, dense)",
          "ours_dense_compiled": "subclassified (ours, official, dense, torch.compile)",
          "ours_valid": "subclassified (ours, valid, path auto)", "ce": "plain cross-entropy"}
TRANSCRIPTIONS = ("published", "dense")


def add_arguments(parser):
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (median reported; at least 10 on CUDA)")
    parser.add_argument("--methods", default="",
                        help=f"comma-separated subset of {list(METHODS)} (default: all; ours_dense_compiled only "
                             "on CUDA)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--logits", choices=("clustered", "random"), default="clustered",
                        help="clustered: class mean vectors + smooth field + noise (network-like); random: N(0,1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-dense", action="store_true",
                        help="skip the two dense transcriptions (they need ~0.5 GB per 64x2048 image)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--_memory-of", dest="memory_of", choices=METHODS, help=argparse_suppress())


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


# ---------------------------------------------------------------- inputs
def range_labels(B, H, W, C=20, seed=0, empty=0.15):
    """A long-tailed range-image layout: empty top rows, vegetation and buildings, sidewalk, road in the bottom
    quarter, a few cars, thin poles, tiny persons/bicyclists/trunks, and ~15% missing returns (label 0)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(B, H, W, dtype=torch.long)

    def ri(a, b):
        return int(torch.randint(a, max(b, a + 1), (1,), generator=g))

    cls = {name: min(c, C - 1) for name, c in dict(car=1, person=6, bicyclist=7, road=9, sidewalk=11, building=13,
                                                    vegetation=15, trunk=16, pole=18).items()}
    for b in range(B):
        top = ri(H // 8, H // 5)
        y[b, top:H // 2] = cls["vegetation"]
        for _ in range(4):
            x0 = ri(0, W)
            y[b, top + ri(0, 4):H // 2, x0:x0 + ri(W // 16, W // 4)] = cls["building"]
        y[b, H // 2:3 * H // 4] = cls["sidewalk"]
        y[b, 3 * H // 4:] = cls["road"]
        for _ in range(6 * max(1, W // 512)):
            x0, r0 = ri(0, W - 8), ri(H // 3, 3 * H // 4)
            y[b, r0:r0 + ri(3, 10), x0:x0 + ri(6, max(7, W // 48))] = cls["car"]
        for _ in range(8 * max(1, W // 512)):
            x0 = ri(0, W)
            y[b, ri(top, H // 2):3 * H // 4, x0:x0 + ri(1, 3)] = cls["pole"]
        for _ in range(3 * max(1, W // 512)):
            for c in (cls["person"], cls["bicyclist"], cls["trunk"]):
                x0, r0 = ri(0, W - 3), ri(H // 3, 3 * H // 4)
                y[b, r0:r0 + ri(2, 6), x0:x0 + ri(1, 4)] = c
        y[b][torch.rand(H, W, generator=g) < empty] = 0
    return y


def make_logits(y, C, kind="clustered", seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    B, H, W = y.shape
    if kind == "random":
        return torch.randn(B, C, H, W, generator=g)
    means = torch.randn(C, C, generator=g) * 3.0
    s = means[y].permute(0, 3, 1, 2).contiguous()
    s += F.interpolate(torch.randn(B, C, H // 8 + 1, W // 8 + 1, generator=g), (H, W), mode="bilinear") * 0.3
    s += torch.randn(B, C, H, W, generator=g) * 0.1
    return s


# ---------------------------------------------------------------- the dense published form (transcribed from the spec)
def _grids(s, y, rs, qs):
    """Step 1 of the published algorithm: logits and labels on the reference (stride rs) and query (stride qs) grids,
    flattened: r [B,C,N_r], q [B,C,N_q], yr [B,N_r], yq [B,N_q]."""
    B, C, H, W = s.shape
    r = F.interpolate(s, (H // rs, W // rs), mode="bilinear").reshape(B, C, -1)
    q = F.interpolate(s, (H // qs, W // qs), mode="bilinear").reshape(B, C, -1)
    yr = F.interpolate(y[:, None].float(), (H // rs, W // rs), mode="nearest").reshape(B, -1).long()
    yq = F.interpolate(y[:, None].float(), (H // qs, W // qs), mode="nearest").reshape(B, -1).long()
    return r, q, yr, yq


def dense_weights(s, y, tau=0.98, eps=10.0, p=0.5, clamp=10.0, rs=8, qs=4):
    with torch.no_grad():
        B, C, H, W = s.shape
        r, q, yr, yq = _grids(s, y, rs, qs)
        rn, qn = torch.sum(r * r, dim=1), torch.sum(q * q, dim=1)
        sim = torch.bmm(q.permute(0, 2, 1), r) / (torch.maximum(qn[:, :, None], rn[:, None, :]) + 1e-5)
        k = ((sim > tau) & (yq[:, :, None] == yr[:, None, :])).sum(2).float()
        del sim
        wq = (k + eps) ** (-p)
        w = F.interpolate(wq.reshape(B, 1, H // qs, W // qs), (H, W), mode="bilinear")
        return torch.clamp(w / w.mean(dim=(2, 3), keepdim=True), max=clamp)[:, 0]


def published_weights(s, y, tau=0.98, eps=10.0, p=0.5, clamp=10.0, rs=8, qs=4):
    """The same algorithm with the published tensor operations: norm matrices repeated to B x N_q x N_r, the max
    taken through a float mask, a float same-label mask built by repeat, and sim * mask > tau."""
    with torch.no_grad():
        B, C, H, W = s.shape
        r, q, yr, yq = _grids(s, y, rs, qs)
        nq, nr = q.shape[2], r.shape[2]
        norm_r = torch.sum(r * r, dim=1, keepdim=True).repeat(1, nq, 1)                  # [B,Nq,Nr]
        norm_q = torch.sum(q * q, dim=1, keepdim=True).permute(0, 2, 1).repeat(1, 1, nr)  # [B,Nq,Nr]
        pick_r = (norm_r > norm_q).float()
        big = norm_r * pick_r + norm_q * (1.0 - pick_r)
        sim = torch.bmm(q.permute(0, 2, 1), r) / (big + 1e-5)
        same = (yq.unsqueeze(2) == yr.unsqueeze(1).repeat(1, nq, 1)).long().float()
        k = torch.sum(sim * same > tau, dim=2).float()
        wq = 1.0 / torch.pow(k + eps, p)
        w = F.interpolate(wq.reshape(B, 1, H // qs, W // qs), (H, W), mode="bilinear")
        return torch.clamp(w / w.mean(dim=(2, 3), keepdim=True), max=clamp)[:, 0]


def published_loss(s, y):
    w = published_weights(s.detach(), y)
    return (F.cross_entropy(s, y, ignore_index=0, reduction="none") * w).mean()


def dense_loss(s, y):
    w = dense_weights(s.detach(), y)
    return (F.cross_entropy(s, y, ignore_index=0, reduction="none") * w).mean()


def make_methods(args):
    from lidarseg.losses.subclassified import SubclassifiedLoss
    return {
        "published": published_loss,
        "dense": dense_loss,
        "ours": SubclassifiedLoss(normalize="official"),
        "ours_windowed": SubclassifiedLoss(normalize="official", path="windowed"),
        "ours_dense": SubclassifiedLoss(normalize="official", path="dense"),
        "ours_dense_compiled": SubclassifiedLoss(normalize="official", path="dense", compile_dense=True),
        "ours_valid": SubclassifiedLoss(normalize="valid"),
        "ce": lambda s, y: F.cross_entropy(s, y, ignore_index=0),
    }


def build_inputs(args):
    y = range_labels(args.batch, args.height, args.width, args.classes, seed=args.seed)
    s = make_logits(y, args.classes, args.logits, seed=args.seed)
    return s.to(args.device), y.to(args.device)


# ---------------------------------------------------------------- memory
def _rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return None


def _memory_child(args):
    s, y = build_inputs(args)
    fn = make_methods(args)[args.memory_of]
    x = s.clone().requires_grad_()
    del s
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                   # reset VmHWM to the current RSS
    before = _rss_kb("VmRSS")
    fn(x, y).backward()
    peak = _rss_kb("VmHWM")
    print(json.dumps({"extra_mb": (peak - before) / 1024}))
    return 0


def measure_memory_cpu(args, method):
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    cmd = [sys.executable, "-m", "lidarseg", "bench", "loss", "--_memory-of", method, "--batch", str(args.batch),
           "--height", str(args.height), "--width", str(args.width), "--classes", str(args.classes),
           "--logits", args.logits, "--device", "cpu", "--seed", str(args.seed)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(f"memory run of {method} failed: {out.stderr.strip()[-500:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_mb"]


def measure_memory_cuda(fn, s, y):
    x = s.clone().requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn(x, y).backward()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


# ---------------------------------------------------------------- main
def selected_methods(args) -> list[str]:
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not chosen:
        chosen = [m for m in METHODS if m != "ours_dense_compiled" or str(args.device).startswith("cuda")]
    bad = sorted(set(chosen) - set(METHODS))
    if bad:
        raise SystemExit(f"--methods: unknown {bad}; expected a subset of {list(METHODS)}")
    if args.no_dense:
        chosen = [m for m in chosen if m not in TRANSCRIPTIONS]
    return [m for m in METHODS if m in chosen or m == "ce"]           # CE is the yardstick: always timed


def measure(args) -> dict:
    """Time (and measure the memory of) every selected method on one input; returns a JSON-ready dict."""
    from lidarseg.losses.subclassified import SubclassifiedLoss, choose_path
    methods = selected_methods(args)
    s, y = build_inputs(args)
    fns = make_methods(args)
    cuda = s.device.type == "cuda"
    repeat = max(args.repeat, 10) if cuda else args.repeat
    B, C, H, W = s.shape
    pairs = (max(1, H // 4) * max(1, W // 4)) * (max(1, H // 8) * max(1, W // 8))
    result = {"shape": [B, C, H, W], "device": str(s.device), "logits": args.logits, "repeat": repeat,
              "auto_path": choose_path("auto", s.device, pairs), "pairs_per_image": pairs, "methods": {}}
    shares = torch.bincount(y.flatten().cpu(), minlength=C).float() / y.numel()
    result["label_shares"] = {c: round(v, 4) for c, v in enumerate(shares.tolist()) if v > 0}

    checks = {}
    ref = SubclassifiedLoss(normalize="official", path="windowed").weights(s, y)
    if "ours_dense" in methods:
        checks["dense_equals_windowed"] = bool(torch.equal(
            SubclassifiedLoss(normalize="official", path="dense").weights(s, y), ref))
    for d, fn in (("dense", dense_weights), ("published", published_weights)):
        if d in methods:
            checks[f"max_abs_diff_vs_{d}"] = float((fn(s, y) - ref).abs().max())
    result["checks"] = checks
    del ref

    def step(name):
        x = s.detach().requires_grad_()

        def call():
            x.grad = None
            fns[name](x, y).backward()
        return call

    calls = {m: step(m) for m in methods}
    times = {m: [] for m in methods}
    for m in methods:                                   # warm-up
        time_on(s.device, calls[m], repeat=1, warmup=1)
    for _ in range(repeat):                              # interleaved rounds: contention hits all methods alike
        for m in methods:
            times[m] += time_on(s.device, calls[m], repeat=1, warmup=0)
    for m in methods:
        mem = None
        if not args.no_memory:
            mem = measure_memory_cuda(fns[m], s, y) if cuda else measure_memory_cpu(args, m)
        result["methods"][m] = {"label": LABELS[m], "median_ms": median_ms(times[m]),
                                "min_ms": 1000 * min(times[m]), "peak_extra_mb": mem}
    ce = result["methods"]["ce"]["median_ms"]
    for m, r in result["methods"].items():
        r["time_over_ce"] = r["median_ms"] / ce
    return result


def print_result(result: dict) -> None:
    B, C, H, W = result["shape"]
    print(f"logits [{B},{C},{H},{W}] ({result['logits']}) on {result['device']}, {result['pairs_per_image']} "
          f"pairs per image (path auto -> {result['auto_path']}), median of {result['repeat']}; label shares: "
          + ", ".join(f"{c}:{100 * v:.1f}%" for c, v in result["label_shares"].items()))
    for k, v in result["checks"].items():
        print(f"  check {k}: {v:.3g}" if isinstance(v, float) else f"  check {k}: {v}")
    rows = []
    for m, r in result["methods"].items():
        mm = r["peak_extra_mb"]
        rows.append([r["label"], f"{r['median_ms']:.2f}", f"{r['min_ms']:.2f}", "-" if mm is None else f"{mm:.0f}",
                     f"{r['time_over_ce']:.2f}x"])
    print()
    print_table(rows, ["method (forward+backward)", "median ms", "min ms", "extra peak MB", "time / CE"])
    print()
    ms = result["methods"]
    for o in ("ours", "ours_valid"):
        if o not in ms:
            continue
        print(f"{o}: time / CE {ms[o]['time_over_ce']:.2f} (target <= 1.2 on CUDA, 1.5 on CPU)", end="")
        for d in TRANSCRIPTIONS:
            if d in ms:
                print(f"; {d} / {o} time {ms[d]['median_ms'] / ms[o]['median_ms']:.1f}x", end="")
                if ms[d]["peak_extra_mb"] and ms[o]["peak_extra_mb"] is not None:
                    print(f", memory {o} / {d} {ms[o]['peak_extra_mb'] / ms[d]['peak_extra_mb']:.3f}", end="")
        print()


def run(args) -> int:
    if args.memory_of:
        return _memory_child(args)
    print(f"lidarseg bench loss  {datetime.date.today()}  torch {torch.__version__}  device {args.device}  "
          f"threads {torch.get_num_threads()}  {platform.processor() or platform.machine()}")
    result = measure(args)
    print_result(result)
    if args.json:
        from lidarseg.data.io import atomic_write_bytes
        atomic_write_bytes(args.json, (json.dumps(result, indent=1) + "\n").encode())
    return 0

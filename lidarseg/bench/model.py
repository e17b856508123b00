"""`lidarseg bench model`: forward (inference, no_grad, eval) and forward+backward+SGD step (train) time per scan of
the networks on this machine, in eager mode, with channels_last memory format and with torch.compile. The train
step of a multi-head network (CENet) sums one cross-entropy per head, as its recipe trains every head.

Defaults are quick (1 warm-up, 1 timed repeat; the 64x2048 RangeNet53 train step alone takes ~10 s on a 2-core
CPU); use --repeat for medians over more runs. Figures are recorded in docs/bench/model.md.
"""
from __future__ import annotations

import platform
import time

import torch

from ..data.representation import representation_of
from .common import median_ms, print_table, time_call

PRESETS = {
    "rangenet21": ("rangenet21", {}),
    "rangenet53": ("rangenet53", {}),
    "rangenet21-small": ("rangenet21", {"width": 0.25, "blocks": [1, 1, 1, 1, 1]}),
    "rangenet53-small": ("rangenet53", {"width": 0.25, "blocks": [1, 1, 1, 1, 1]}),
    "kprnet-small": ("kprnet", {"backbone": "resnext26_32x4d", "width": 0.25, "head_width": 0.25}),
    "kprnet-r50": ("kprnet", {"backbone": "resnext50_32x4d"}),
    "kprnet": ("kprnet", {}),
    "cenet": ("cenet", {}),
    "cenet-small": ("cenet", {"width": 0.25, "layers": [1, 1, 1, 1]}),
    "salsanext": ("salsanext", {}),
    "salsanext-small": ("salsanext", {"width": 0.25}),
}
MODES = ("eager", "channels_last", "compile", "amp")


def add_arguments(parser):
    parser.add_argument("--models", default="rangenet21,rangenet53,rangenet21-small,rangenet53-small",
                        help=f"comma-separated presets from {sorted(PRESETS)}")
    parser.add_argument("--sizes", default="64x512,64x2048",
                        help="range-image sizes HxW for RangeNet (KPRNet uses a 289x1025 training crop and "
                             "289x4097 for inference, with --points points)")
    parser.add_argument("--modes", default="eager,channels_last",
                        help=f"comma-separated from {list(MODES)} (amp: autocast, bfloat16 on CPU, float16 on CUDA)")
    parser.add_argument("--batch", type=int, default=1, help="scans per batch (times are per scan)")
    parser.add_argument("--repeat", type=int, default=1, help="timed repeats per measurement (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--points", type=int, default=30000, help="points per scan for KPRNet")
    parser.add_argument("--skip-train", action="store_true", help="only time inference")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")


def _measure(args, preset, size, mode, device):
    from .. import models

    name, opts = PRESETS[preset]
    opts = dict(opts)
    if name.startswith("rangenet"):
        opts["channels_last"] = mode == "channels_last"   # the RangeNet default is True; the other modes use False
    model = models.build_model(name, 20, None, **opts).to(device)
    if mode == "channels_last" and not name.startswith("rangenet"):
        model = model.to(memory_format=torch.channels_last)
    run_model = torch.compile(model) if mode == "compile" else model
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=(mode == "amp"))
    results = {"params": sum(p.numel() for p in model.parameters())}
    for train in ((False,) if args.skip_train else (False, True)):
        # KPRNet's ASPP image-pooling BatchNorm needs at least 2 samples in training mode (as in the reference)
        batch = max(2, args.batch) if (name == "kprnet" and train) else args.batch
        inputs, y, label = representation_of(model).example_inputs(batch, size, args.points, device, train)
        if mode == "channels_last":
            inputs = (inputs[0].contiguous(memory_format=torch.channels_last),) + inputs[1:]
        if train:
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)

            def step():
                opt.zero_grad(set_to_none=True)
                with autocast():
                    out = run_model(*inputs)   # several logit maps for CENet's auxiliary heads: one CE each
                    heads = out if isinstance(out, (list, tuple)) else [out]
                    loss = sum(torch.nn.functional.cross_entropy(h, y, ignore_index=0) for h in heads)
                loss.backward()
                opt.step()
            fn = step
        else:
            model.eval()

            def infer():
                with torch.no_grad(), autocast():
                    run_model(*inputs)
            fn = infer
        t0 = time.perf_counter()
        times = time_call(fn, repeat=args.repeat, warmup=args.warmup, sync=sync)
        results["train" if train else "infer"] = (median_ms(times) / batch, time.perf_counter() - t0)
        results["label"] = label if "label" not in results or results["label"] == label \
            else f"{results['label']} infer, {label} train"
    return results


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    presets = [p.strip() for p in args.models.split(",") if p.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [p for p in presets if p not in PRESETS] + [m for m in modes if m not in MODES]
    if bad:
        print(f"unknown preset(s)/mode(s) {bad}; presets: {sorted(PRESETS)}, modes: {list(MODES)}")
        return 2
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s.strip()]
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, {platform.processor() or ''}, "
          f"batch {args.batch}, repeat {args.repeat}, warmup {args.warmup}")
    rows = []
    for preset in presets:
        for size in (sizes if not preset.startswith("kprnet") else [None]):
            eager = None
            for mode in modes:
                r = _measure(args, preset, size, mode, device)
                inf, tr = r["infer"][0], r.get("train", (float("nan"),))[0]
                if mode == "eager":
                    eager = (inf, tr)
                ratio = f"{eager[0] / inf:.2f} / {eager[1] / tr:.2f}" if eager and mode != "eager" else "-"
                rows.append([preset, f"{r['params'] / 1e6:.3f}", r["label"], mode, f"{inf:.1f}", f"{tr:.1f}", ratio])
                print("  " + " | ".join(rows[-1]), flush=True)
    print()
    print_table(rows, ["model", "params (M)", "input", "mode", "infer ms/scan", "train-step ms/scan",
                       "speed-up vs eager (inf/train)"])
    return 0

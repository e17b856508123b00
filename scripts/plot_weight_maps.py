"""A figure of subclassified-loss weight maps: for a few validation scans, the range input, the labels in
SemanticKITTI colours and the per-pixel weights that a trained checkpoint's logits give (the paper's Fig. 1 idea:
low weight on easy large regions, high on boundaries and rare appearances).

    python3 scripts/plot_weight_maps.py --checkpoint runs/demo/best.pt --out docs/figures/weight-maps.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", help="dataset root (default: the checkpoint config's)")
    p.add_argument("--split", default="valid")
    p.add_argument("--scans", type=int, nargs="+", default=[0, 7, 14], help="indices in the split")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lidarseg.engine import builders
    from lidarseg.engine.inference import load_model
    from lidarseg.losses import SubclassifiedLoss, find_subclassified

    model, cfg, lm = load_model(args.checkpoint, torch.device("cpu"))
    if args.data:
        cfg = {**cfg, "data": {**cfg["data"], "root": str(Path(args.data).resolve())}}
    loss = find_subclassified(builders.loss(cfg, lm)) or SubclassifiedLoss()
    ds = builders.dataset(cfg, "infer", "range", lm, split=args.split, train=False)
    scans = [i for i in args.scans if i < len(ds)]
    fig, axes = plt.subplots(3 * len(scans), 1, figsize=(14, 2.0 * 3 * len(scans)), squeeze=False)
    for row, i in enumerate(scans):
        sample = ds[i]
        with torch.no_grad():
            logits = model(sample["input"][None])
        weights = loss.weights(logits, sample["label"][None])[0].numpy()
        mask = sample["mask"].numpy()
        rng = np.where(mask, sample["proj_range"].numpy(), np.nan)
        ax_in, ax_lab, ax_w = axes[3 * row:3 * row + 3, 0]
        ax_in.imshow(rng, cmap="viridis", aspect="auto", interpolation="nearest")
        ax_in.set_title(f"seq {sample['sequence']} scan {sample['scan']}: range (m)", fontsize=9)
        ax_lab.imshow(lm.colorize(sample["label"].numpy()), aspect="auto", interpolation="nearest")
        ax_lab.set_title("ground truth", fontsize=9)
        im = ax_w.imshow(np.where(mask, weights, np.nan), cmap="magma", aspect="auto", interpolation="nearest")
        ax_w.set_title(f"subclassified weights (min {np.nanmin(weights[mask]):.2f}, max "
                       f"{np.nanmax(weights[mask]):.2f})", fontsize=9)
        fig.colorbar(im, ax=ax_w, fraction=0.02, pad=0.01)
    for ax in axes[:, 0]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`lidarseg train`: train a network from a YAML config (one process, or one per GPU under torchrun).

    lidarseg train --config configs/demo.yaml
    lidarseg train --config configs/rangenet53.yaml --data /data/semantic-kitti --out runs/rn53 --resume auto
    torchrun --nproc_per_node 4 -m lidarseg train --config configs/kprnet.yaml --data /data/semantic-kitti
"""
from __future__ import annotations

import sys
from pathlib import Path

from lidarseg import PROJECT_ROOT


def add_arguments(parser):
    parser.add_argument("--config", required=True, help="training config YAML (composes with configs/base.yaml)")
    parser.add_argument("--data", help="dataset root in SemanticKITTI layout (sets data.root)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=0.005 (repeatable; YAML values)")
    parser.add_argument("--out", help="run directory (default: runs/<config name>)")
    parser.add_argument("--resume", metavar="auto|PATH",
                        help="continue a run exactly: 'auto' = <out>/last.pt when it exists, or a checkpoint path; "
                             "only keys that do not change what is trained may differ (train.epochs, val.*, ...)")
    parser.add_argument("--init-from", metavar="CHECKPOINT",
                        help="start a new run from the weights of a checkpoint (fresh optimizer, schedule and "
                             "step: the way to continue with other optimizer or schedule settings); with "
                             "--resume auto, used only when the run has no last.pt yet")
    parser.add_argument("--seed", type=int, help="random seed (sets train.seed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (sets train.progress=false)")


def resolve(args) -> tuple[dict, Path]:
    """The resolved config and run directory of the command line."""
    from lidarseg.engine.config import load_config
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.root={Path(args.data).expanduser().resolve()}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.quiet:
        overrides.append("train.progress=false")
    cfg = load_config(args.config, overrides)
    out = Path(args.out) if args.out else PROJECT_ROOT / "runs" / Path(args.config).stem
    return cfg, out


def run(args) -> int:
    from lidarseg.engine import distributed
    from lidarseg.engine.checkpoint import find_resume
    from lidarseg.engine.config import dump
    from lidarseg.engine.trainer import Trainer
    from lidarseg.errors import ConfigError

    from lidarseg.commands.paths import check_out_dir
    from lidarseg.errors import DataError

    cfg, out = resolve(args)
    check_out_dir(out, "--out")
    if args.init_from and not Path(args.init_from).is_file():
        raise DataError(f"--init-from {args.init_from}: checkpoint not found")
    resume = find_resume(out, args.resume)
    if resume is None and (out / "last.pt").is_file():
        raise ConfigError(f"{out} already holds a run (last.pt); continue it with --resume auto, or choose "
                          "another --out")
    ctx = distributed.init(cfg["train"]["device"])
    try:
        if ctx.is_main:
            print("resolved config:\n" + "\n".join("  " + line for line in dump(cfg).splitlines()), flush=True)
        result = Trainer(cfg, out, ctx, resume=resume, init_from=args.init_from if resume is None else None).fit()
    finally:
        distributed.shutdown(ctx)
    if ctx.is_main:
        best = out / "best.pt"
        print(f"checkpoints: {out / 'last.pt'}" + (f", {best}" if best.is_file() else ""), file=sys.stderr)
    return 130 if result.get("stopped") else 0

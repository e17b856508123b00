"""The `lidarseg` console command. Each subcommand lives in `lidarseg.commands.<name>` and provides
`add_arguments(parser)` and `run(args) -> int`; modules are imported only when their command runs."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import LidarsegError

#: name -> (module, one-line help)
COMMANDS = {
    "info": ("lidarseg.commands.info", "print versions, devices and threads"),
    "stats": ("lidarseg.commands.stats", "class frequencies and input mean/std of a dataset, as YAML"),
    "synth": ("lidarseg.commands.synth", "generate the synthetic SemanticKITTI-format dataset"),
    "compare-scans": ("lidarseg.commands.compare_scans", "side-by-side statistics of two sets of scans (JSON, PNG)"),
    "train": ("lidarseg.commands.train", "train a network from a YAML config"),
    "infer": ("lidarseg.commands.infer", "predict a split with a checkpoint and write prediction files"),
    "export": ("lidarseg.commands.export", "export a checkpoint's network to ONNX, check it with onnxruntime, time it"),
    "evaluate": ("lidarseg.commands.evaluate", "point-level IoU of prediction files, as the official evaluator"),
    "visualize": ("lidarseg.commands.visualize", "PNG range-image panels of predictions and a per-class IoU chart"),
    "submission": ("lidarseg.commands.submission", "build and validate a SemanticKITTI submission zip"),
    "bench": ("lidarseg.commands.bench", "run a benchmark against a plain reference and print the ratio"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lidarseg", description="LiDAR range-image semantic segmentation: train, infer, evaluate, submit.",
        epilog="`lidarseg COMMAND --help` describes a command's options; docs/ has the guides.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            p.set_defaults(_missing=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "_missing", False):
        print(f"lidarseg {args.command}: not available in this version", file=sys.stderr)
        return 2
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except LidarsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

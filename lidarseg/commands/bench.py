"""`lidarseg bench NAME`: each benchmark lives in `lidarseg.bench.<name>` with `add_arguments(parser)` and
`run(args)`; it times our code against a plain reference in one process and prints the ratio."""
import importlib

BENCHMARKS = {
    "projection": "read + spherical projection of a ~120k-point scan vs the numpy transcription",
    "loss": "subclassified loss vs the dense published form and plain CE",
    "knn": "KNN back-projection vs RangeNet++'s torch KNN",
    "eval": "evaluate throughput vs an np.add.at confusion matrix",
    "model": "forward / forward+backward time of the networks",
    "mmseg": "the subclassified loss registered in mmsegmentation vs mmseg's CrossEntropyLoss (mmseg extra)",
    "augment": "per-sample CPU cost of each training augmentation and of the whole loading pipeline vs none",
    "gpu": "the GPU run's measurements (loss paths, crossover, training steps) as JSON; --report merges a run",
}


#: help of options that several benchmarks share, for those a benchmark declares without its own help text
COMMON_HELP = {
    "--height": "range-image height in pixels (default: %(default)s)",
    "--width": "range-image width in pixels (default: %(default)s)",
    "--batch": "images per batch (default: %(default)s)",
    "--classes": "number of classes of the logits (default: %(default)s)",
    "--device": "torch device to time on (default: %(default)s)",
    "--seed": "random seed of the generated inputs (default: %(default)s)",
    "--repeat": "timed repetitions; the median is reported (default: %(default)s)",
    "--warmup": "untimed runs before timing (default: %(default)s)",
    "--scans": "number of scans (default: %(default)s)",
    "--points": "points per generated scan (default: %(default)s)",
}


def _fill_help(parser) -> None:
    for action in parser._actions:
        if action.help is None:
            for opt in action.option_strings:
                if opt in COMMON_HELP:
                    action.help = COMMON_HELP[opt]
                    break


def add_arguments(parser):
    sub = parser.add_subparsers(dest="bench", metavar="NAME")
    sub.required = True
    for name, help_text in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = f"lidarseg.bench.{name}"
        p.set_defaults(_bench_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
        _fill_help(p)


def run(args) -> int:
    try:
        module = importlib.import_module(args._bench_module)
    except ModuleNotFoundError:
        print(f"benchmark {args.bench!r} is not available in this version")
        return 2
    return int(module.run(args) or 0)

"""`lidarseg synth`: generate the synthetic SemanticKITTI-format dataset (see docs/synthetic.md)."""
from __future__ import annotations

from ..errors import ConfigError


def _faults(text: str) -> dict:
    """'nan=3,zero_range=2' -> {'nan': 3, 'zero_range': 2}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, val = part.partition("=")
        if not sep:
            raise ConfigError(f"--faults: expected KIND=COUNT pairs like nan=3,zero_range=2, got {part!r}")
        try:
            out[key.strip()] = int(val)
        except ValueError:
            raise ConfigError(f"--faults: count for {key!r} must be an int, got {val!r}") from None
    return out


def add_arguments(parser):
    import lidarseg

    parser.add_argument("--out", default=str(lidarseg.DEFAULT_DATA_ROOT),
                        help="dataset root to write (default: %(default)s)")
    parser.add_argument("--format", default="semantic-kitti", metavar="NAME",
                        help="dataset format to write, with its sensor: semantic-kitti (HDL-64E), semantic-poss "
                             "(Pandora-40, sequences 00-05), nuscenes (HDL-32E, scenes scene-0001 (train) and "
                             "scene-0003 (val)) (default: %(default)s)")
    parser.add_argument("--sensor", default=None, metavar="PRESET",
                        help="sensor preset of a semantic-kitti generation: hdl64 (the default, SemanticKITTI's), "
                             "hdl32, vlp16, os1-128, pandora-40 (docs/synthetic.md); range images of another "
                             "sensor need a data.sensor height to match")
    parser.add_argument("--sequences", nargs="+", default=None, metavar="NN",
                        help="sequence ids (default: 00 01 02 03 08 11)")
    parser.add_argument("--scans", type=int, default=None,
                        help="scans per sequence (default: 40 per train sequence, 20 for 08, 10 for 11)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    parser.add_argument("--azimuth-steps", type=int, default=None,
                        help="azimuth samples per turn (default 2048; fewer gives cheaper test data)")
    parser.add_argument("--preview", action="store_true",
                        help="also write PNGs (range image by class, bird's-eye view) to OUT/preview/")
    parser.add_argument("--test-labels", action="store_true",
                        help="also write labels for test sequences (11-21), which SemanticKITTI does not have")
    parser.add_argument("--faults", default="", metavar="KIND=N,...",
                        help="inject faulty points per scan for robustness tests: nan=N, zero_range=N")
    parser.add_argument("--force", action="store_true",
                        help="write into a directory that holds sequences not made by this generator")
    parser.add_argument("--if-missing", action="store_true",
                        help="do nothing when a complete generation with the same parameters is already there")


def _generation_params(kwargs) -> dict:
    """The parameters a generation with these options records in its marker (as `ensure_dataset` compares them)."""
    from ..data.synthetic.generate import FORMAT_VERSION, SensorConfig, _normalise_faults, _normalise_sequences
    from ..data.synthetic.terrain import RoadProfile
    counts = _normalise_sequences(kwargs["sequences"], kwargs["scans"])
    sensor = SensorConfig.from_options(kwargs["sensor"], azimuth_steps=kwargs["azimuth_steps"])
    return {"version": FORMAT_VERSION, "seed": int(kwargs["seed"]),
            "scans": {f"{s:02d}": n for s, n in counts.items()}, "sensor": sensor.to_dict(),
            "faults": _normalise_faults(kwargs["faults"]), "test_labels": bool(kwargs["test_labels"]),
            "road": RoadProfile().to_dict()}


def refuse_other_generation(out, kwargs) -> None:
    """ConfigError when `out` holds a synthetic generation (complete or interrupted) made with other parameters:
    writing into it would leave a mix of two generations (the sequences and scans the new one does not rewrite)."""
    import json
    from pathlib import Path

    from ..data.synthetic.generate import MARKER
    marker = Path(out) / MARKER
    if not marker.is_file():
        return
    try:
        old = json.loads(marker.read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{marker} cannot be read: delete {out} or choose another --out") from None
    want = _generation_params(kwargs)
    changed = [f"{k}: {old[k]!r} -> {v!r}" for k, v in want.items() if k in old and old[k] != v]
    if changed:
        raise ConfigError(f"{out} holds a synthetic dataset generated with other parameters ("
                          + "; ".join(changed)[:300] + "); writing into it would mix two generations. Refused: "
                          "choose another --out, or delete the folder to regenerate it whole")


def _other_format(args) -> int:
    """`--format` other than semantic-kitti: that source's writer (`ScanSource.write_synthetic`)."""
    from ..data.sources import source_class
    cls = source_class(args.format)
    if not hasattr(cls, "write_synthetic"):
        raise ConfigError(f"--format {args.format}: this format has no synthetic writer")
    used = [o for o, v in (("--faults", args.faults), ("--preview", args.preview), ("--test-labels", args.test_labels),
                           ("--force", args.force), ("--if-missing", args.if_missing), ("--sensor", args.sensor)) if v]
    if used:
        raise ConfigError(f"{', '.join(used)}: only for --format semantic-kitti")
    if args.scans is not None and args.scans < 1:
        raise ConfigError(f"--scans must be >= 1, got {args.scans}")
    written = cls.write_synthetic(args.out, sequences=args.sequences, scans=args.scans, seed=args.seed,
                                  azimuth_steps=args.azimuth_steps)
    print(f"wrote {sum(written.values())} scans of {len(written)} sequences in {args.format} format to {args.out}")
    return 0


def run(args) -> int:
    from ..data.synthetic import ensure_dataset, generate

    if args.format != "semantic-kitti":
        return _other_format(args)

    kwargs = dict(sequences=args.sequences, scans=args.scans, seed=args.seed, azimuth_steps=args.azimuth_steps,
                  sensor=args.sensor,
                  faults=_faults(args.faults), preview=args.preview, test_labels=args.test_labels)
    refuse_other_generation(args.out, kwargs)
    if args.if_missing:
        ensure_dataset(args.out, force=args.force, **kwargs)
    else:
        generate(args.out, force=args.force, **kwargs)
    return 0

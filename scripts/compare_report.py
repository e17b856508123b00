"""Aggregate the comparisons of scripts/compare_losses.sh into a Markdown report and a Fig.-3-style PNG.

Input: RUNS/<variant>/seed<S>/eval.json (written by `lidarseg evaluate --json`), eval_tta.json (the same checkpoint
predicted with test-time augmentation, optional), meta.json (written by compare_losses.sh: variant, seed,
train_seconds, commands) and tb/ (the run's TensorBoard events, optional: the validation curve). Output: the report
(per-class point IoU per variant as mean over seeds with min..max spread, rare classes marked, mIoU, mIoU with TTA
where measured, accuracy, training time; the mIoU differences paired by seed; the validation mIoU at each
validation of training, to show whether it had stopped rising) and, when matplotlib is importable, a PNG of the
per-class IoU gain of each variant over its baselines (GAINS), classes ordered by frequency, with the class
frequency curve on a log axis.

    python3 scripts/compare_report.py --runs runs/compare --variants ce subclassified --out docs/results-tables.md \
        --figure docs/figures/loss-gain.png
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

LABELS = {"ce": "CE", "wce": "class-weighted CE", "subclassified": "subclassified",
          "subclassified_wce": "subclassified + class weights", "lasermix": "CE + LaserMix",
          "paste": "CE + InstancePaste", "lasermix_paste": "CE + LaserMix + InstancePaste",
          "lasermix_paste_subclassified": "subclassified + LaserMix + InstancePaste"}
ORDER = tuple(LABELS)
# variant -> the variants it is compared against in the gain table and figure
GAINS = {"subclassified": ("ce", "wce"), "subclassified_wce": ("ce", "wce"), "lasermix": ("ce",), "paste": ("ce",),
         "lasermix_paste": ("ce",), "lasermix_paste_subclassified": ("ce", "subclassified")}
RARE = 0.005   # classes under this share of the validation points are marked rare
CURVE_TAG = "val/miou_point_knn"   # the trainer's validation metric (point mIoU with KNN, a fraction)


def val_curve(run_dir: Path, tag: str = CURVE_TAG) -> dict[int, float] | None:
    """{global step: value} of `tag` in the run's TensorBoard events (the last value where a resumed run logged a
    step twice), or None without events."""
    tb = run_dir / "tb"
    if not tb.is_dir() or not any(tb.glob("events.out.tfevents.*")):
        return None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags().get("scalars", []):
        return None
    return {e.step: e.value for e in acc.Scalars(tag)}


def load_runs(runs: Path, variants=None, seeds=None) -> dict:
    """-> {variant: [run dict with 'eval', 'eval_tta' (or None) and 'meta'], ...}, variants in a fixed order
    (only `variants` and only the runs of `seeds` when given, so that every variant is averaged over the same
    seeds)."""
    out = {}
    for eval_file in sorted(runs.glob("*/seed*/eval.json")):
        run_dir = eval_file.parent
        meta_file = run_dir / "meta.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        meta.setdefault("variant", run_dir.parent.name)
        meta.setdefault("seed", run_dir.name[4:])
        if seeds is not None and str(meta["seed"]) not in {str(x) for x in seeds}:
            continue
        tta_file = run_dir / "eval_tta.json"
        out.setdefault(meta["variant"], []).append({
            "eval": json.loads(eval_file.read_text()), "meta": meta, "curve": val_curve(run_dir),
            "eval_tta": json.loads(tta_file.read_text()) if tta_file.is_file() else None})
    if variants:
        out = {v: out[v] for v in variants if v in out}
    order = [v for v in ORDER if v in out] + sorted(v for v in out if v not in ORDER)
    return {v: out[v] for v in order}


def summarise(values: list[float]) -> tuple[float, float, float]:
    return statistics.fmean(values), min(values), max(values)


def fmt(values: list[float], scale: float = 100.0) -> str:
    mean, lo, hi = summarise([scale * v for v in values])
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ({lo:.1f}..{hi:.1f})"


def class_order(runs: dict) -> tuple[list[str], dict]:
    """Class names ordered by decreasing number of ground-truth points (the same in every run), and the counts."""
    first = next(iter(runs.values()))[0]["eval"]
    points = {name: first["points"][name] for name in first["iou"]}
    return sorted(points, key=lambda n: -points[n]), points


def per_class_means(runs: dict, names: list[str]) -> dict:
    return {v: {n: statistics.fmean(r["eval"]["iou"][n] for r in rs) for n in names} for v, rs in runs.items()}


def markdown(runs: dict) -> str:
    names, points = class_order(runs)
    total = sum(points.values())
    variants = list(runs)
    lines = ["| class | share of val points | " + " | ".join(LABELS.get(v, v) for v in variants) + " |",
             "|---|---:|" + "---:|" * len(variants)]
    for n in names:
        cells = [fmt([r["eval"]["iou"][n] for r in runs[v]]) for v in variants]
        rare = " (rare)" if points[n] / total < RARE else ""
        lines.append(f"| {n}{rare} | {points[n] / total:.4f} | " + " | ".join(cells) + " |")
    lines.append("| **mIoU** | | " + " | ".join(fmt([r["eval"]["miou"] for r in runs[v]]) for v in variants) + " |")
    if any(r["eval_tta"] for rs in runs.values() for r in rs):
        cells = []
        for v in variants:
            tta = [r["eval_tta"] for r in runs[v] if r["eval_tta"]]
            cells.append(fmt([t["miou"] for t in tta]) if len(tta) == len(runs[v]) else "n/a")
        lines.append(f"| mIoU with TTA ({tta_protocol(runs)}) | | " + " | ".join(cells) + " |")
        cells = [" / ".join(rare_miou(runs[v], names, points, total, key) for key in ("eval", "eval_tta"))
                 for v in variants]
        lines.append("| mIoU of the rare classes, without / with TTA | | " + " | ".join(cells) + " |")
    lines.append("| accuracy | | " + " | ".join(fmt([r["eval"]["accuracy"] for r in runs[v]]) for v in variants)
                 + " |")
    times = []
    for v in variants:
        secs = [r["meta"]["train_seconds"] for r in runs[v] if "train_seconds" in r["meta"]]
        times.append(f"{statistics.fmean(secs) / 60:.1f} min" if secs else "n/a")
    lines.append("| training time (mean per run) | | " + " | ".join(times) + " |")
    seeds = {v: sorted(str(r["meta"]["seed"]) for r in rs) for v, rs in runs.items()}
    lines.append("")
    lines.append("Seeds per variant: " + "; ".join(f"{LABELS.get(v, v)}: {', '.join(s)}" for v, s in seeds.items())
                 + ". Cells: mean over seeds (min..max). IoU in %, point level, with KNN post-processing.")
    return "\n".join(lines)


def tta_protocol(runs: dict) -> str:
    """The TTA votes as the infer JSON recorded them (one protocol expected across runs)."""
    seen = set()
    for rs in runs.values():
        for r in rs:
            proto = (r["eval_tta"] or {}).get("protocol") or {}
            tta = proto.get("tta") or {}
            if tta:
                seen.add(f"{tta.get('votes')} votes: flip {'on' if tta.get('flip') else 'off'}, "
                         f"{tta.get('shifts')} shift(s)")
    return "; ".join(sorted(seen)) or "protocol not recorded"


def rare_miou(rs: list, names: list, points: dict, total: int, key: str) -> str:
    """Mean over seeds of the mean IoU over the rare classes; n/a where a run lacks `key`."""
    rare = [n for n in names if points[n] / total < RARE]
    if not rare or any(r[key] is None for r in rs):
        return "n/a"
    return f"{100 * statistics.fmean(statistics.fmean(r[key]['iou'][n] for n in rare) for r in rs):.1f}"


def curve_table(runs: dict) -> str:
    """Validation mIoU (%) at each validation step logged by every run of a variant (mean over seeds, min..max),
    and the change over the last interval; empty when no run has a curve."""
    steps = sorted({s for rs in runs.values() for r in rs for s in (r.get("curve") or {})})
    if not steps:
        return ""
    lines = ["| variant | " + " | ".join(f"step {s}" for s in steps) + " | last interval |",
             "|---|" + "---:|" * (len(steps) + 1)]
    for v, rs in runs.items():
        curves = [r.get("curve") or {} for r in rs]
        common = [s for s in steps if all(s in c for c in curves)]
        cells = [fmt([c[s] for c in curves]) if s in common else "n/a" for s in steps]
        last = "n/a"
        if len(common) >= 2:
            mean, lo, hi = summarise([100 * (c[common[-1]] - c[common[-2]]) for c in curves])
            last = f"{mean:+.1f}" if len(curves) == 1 else f"{mean:+.1f} ({lo:+.1f}..{hi:+.1f})"
        lines.append(f"| {LABELS.get(v, v)} | " + " | ".join(cells) + f" | {last} |")
    return "\n".join(lines)


def gain_pairs(runs: dict) -> list[tuple[str, str]]:
    """(variant, baseline) for every pair of GAINS whose two variants are present."""
    return [(s, b) for s in runs for b in GAINS.get(s, ()) if b in runs]


def gains(runs: dict) -> list[tuple[str, str, dict]]:
    """(variant, baseline, {class: mean IoU gain}) for every pair of GAINS present."""
    names, _ = class_order(runs)
    means = per_class_means(runs, names)
    return [(s, b, {n: means[s][n] - means[b][n] for n in names}) for s, b in gain_pairs(runs)]


def paired_table(runs: dict) -> str:
    """mIoU difference (points) of each GAINS pair, seed by seed over the seeds both variants ran (same data order,
    augmentation and initialisation), without and with TTA; empty when no pair shares a seed."""
    lines = ["| variant vs baseline | seeds | per seed | mean | with TTA, per seed | mean with TTA |",
             "|---|---|---|---:|---|---:|"]
    for s, b in gain_pairs(runs):
        by_seed = {v: {str(r["meta"]["seed"]): r for r in runs[v]} for v in (s, b)}
        seeds = sorted(set(by_seed[s]) & set(by_seed[b]), key=lambda x: (len(x), x))
        if not seeds:
            continue
        cells = []
        for key in ("eval", "eval_tta"):
            pairs = [(by_seed[s][x][key], by_seed[b][x][key]) for x in seeds]
            if any(e is None for pair in pairs for e in pair):
                cells += ["n/a", "n/a"]
                continue
            diffs = [100 * (a["miou"] - c["miou"]) for a, c in pairs]
            cells += [", ".join(f"{d:+.2f}" for d in diffs), f"{statistics.fmean(diffs):+.2f}"]
        lines.append(f"| {LABELS[s]} vs {LABELS[b]} | {', '.join(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def gain_table(runs: dict) -> str:
    names, _ = class_order(runs)
    pairs = gains(runs)
    if not pairs:
        return ""
    lines = ["| class | " + " | ".join(f"{LABELS[s]} vs {LABELS[b]}" for s, b, _ in pairs) + " |",
             "|---|" + "---:|" * len(pairs)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{100 * g[n]:+.1f}" for _, _, g in pairs) + " |")
    return "\n".join(lines)


def plot_gains(runs: dict, out: Path) -> bool:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names, points = class_order(runs)
    total = sum(points.values())
    pairs = gains(runs)
    if not pairs:
        return False
    fig, axes = plt.subplots(len(pairs), 1, figsize=(12, 2.6 * len(pairs)), sharex=True, squeeze=False)
    for ax, (s, b, g) in zip(axes[:, 0], pairs):
        vals = [100 * g[n] for n in names]
        ax.bar(range(len(names)), vals, color=["tab:green" if v >= 0 else "tab:red" for v in vals])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel("IoU gain (points)")
        ax.set_title(f"{LABELS[s]} over {LABELS[b]} (mean over seeds)", fontsize=10)
        freq = ax.twinx()
        freq.plot(range(len(names)), [points[n] / total for n in names], color="tab:blue", marker=".")
        freq.set_yscale("log")
        freq.set_ylabel("class frequency", color="tab:blue")
    axes[-1, 0].set_xticks(range(len(names)))
    axes[-1, 0].set_xticklabels(names, rotation=45, ha="right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/compare", type=Path)
    p.add_argument("--variants", nargs="*", default=None, help="report only these variants (default: every one)")
    p.add_argument("--seeds", nargs="*", default=None, help="report only these seeds (default: every one)")
    p.add_argument("--out", default=None, type=Path, help="write the tables here (Markdown); default: print")
    p.add_argument("--figure", default=None, type=Path, help="PNG of per-class gains")
    args = p.parse_args(argv)
    runs = load_runs(args.runs, args.variants, args.seeds)
    if not runs:
        print(f"no runs with eval.json under {args.runs}", file=sys.stderr)
        return 1
    text = ("## Per-class point IoU (%)\n\n" + markdown(runs) + "\n\n## Per-class gain (IoU points)\n\n"
            + gain_table(runs))
    paired = paired_table(runs)
    if paired:
        text += ("\n\n## mIoU differences paired by seed (points)\n\n" + paired
                 + "\n\nEach pair of runs shares its seed: the same data order, augmentation and initialisation.")
    curves = curve_table(runs)
    if curves:
        text += ("\n\n## Validation point mIoU with KNN during training (%)\n\n" + curves
                 + "\n\nThe trainer's single-pass validation at each logged step; mean over seeds (min..max); last"
                 " interval: the change between the last two validations.")
    if args.figure:
        plot_gains(runs, args.figure)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.out)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

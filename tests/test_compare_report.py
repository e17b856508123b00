"""scripts/compare_report.py (the tables of docs/results.md) on small hand-made run folders: every cell is checked
against numbers computed here from the eval JSONs."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_report.py"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("compare_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


POINTS = {"road": 9000, "car": 960, "person": 40}   # person: 0.4 % of the points, a rare class


def write_run(root: Path, variant: str, seed: int, iou: dict, tta_iou: dict | None = None, secs: int = 60):
    run = root / variant / f"seed{seed}"
    run.mkdir(parents=True)
    ev = {"iou": iou, "miou": sum(iou.values()) / len(iou), "accuracy": 0.5, "points": POINTS}
    (run / "eval.json").write_text(json.dumps(ev))
    (run / "meta.json").write_text(json.dumps({"variant": variant, "seed": seed, "train_seconds": secs}))
    if tta_iou is not None:
        tta = {"iou": tta_iou, "miou": sum(tta_iou.values()) / len(tta_iou), "accuracy": 0.5, "points": POINTS,
               "protocol": {"knn": True, "tta": {"votes": 8, "flip": True, "shifts": 4}, "mc_samples": 0}}
        (run / "eval_tta.json").write_text(json.dumps(tta))


def row(text: str, first_cell: str) -> list[str]:
    line = next(l for l in text.splitlines() if l.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_tables_gains_and_tta(tmp_path, report):
    write_run(tmp_path, "ce", 0, {"road": 0.90, "car": 0.50, "person": 0.00}, {"road": 0.92, "car": 0.54, "person": 0.02})
    write_run(tmp_path, "ce", 1, {"road": 0.80, "car": 0.40, "person": 0.10}, {"road": 0.82, "car": 0.42, "person": 0.12})
    write_run(tmp_path, "lasermix", 0, {"road": 0.95, "car": 0.60, "person": 0.30})
    write_run(tmp_path, "wce", 0, {"road": 0.10, "car": 0.10, "person": 0.10})
    runs = report.load_runs(tmp_path, ["lasermix", "ce"])
    assert list(runs) == ["ce", "lasermix"]          # the fixed order, and wce left out
    text = report.markdown(runs)
    assert row(text, "road")[1:] == ["0.9000", "85.0 (80.0..90.0)", "95.0"]
    assert row(text, "person (rare)")[1:] == ["0.0040", "5.0 (0.0..10.0)", "30.0"]
    miou_ce = [(0.9 + 0.5) / 3, (0.8 + 0.4 + 0.1) / 3]
    assert row(text, "**mIoU**")[2] == f"{100 * sum(miou_ce) / 2:.1f} ({100 * min(miou_ce):.1f}..{100 * max(miou_ce):.1f})"
    tta = row(text, "mIoU with TTA (8 votes: flip on, 4 shift(s))")
    miou_tta = [(0.92 + 0.54 + 0.02) / 3, (0.82 + 0.42 + 0.12) / 3]
    assert tta[2] == f"{100 * sum(miou_tta) / 2:.1f} ({100 * min(miou_tta):.1f}..{100 * max(miou_tta):.1f})"
    assert tta[3] == "n/a"                           # lasermix was not predicted with TTA
    assert row(text, "mIoU of the rare classes, without / with TTA")[2:] == ["5.0 / 7.0", "30.0 / n/a"]
    only0 = report.load_runs(tmp_path, ["ce", "lasermix"], seeds=[0])
    assert [r["meta"]["seed"] for r in only0["ce"]] == [0]
    assert row(report.markdown(only0), "road")[1:] == ["0.9000", "90.0", "95.0"]
    (variant, base, gain), = report.gains(runs)
    assert (variant, base) == ("lasermix", "ce")
    assert gain["person"] == pytest.approx(0.30 - 0.05) and gain["road"] == pytest.approx(0.95 - 0.85)


def test_main_writes_atomically_and_fails_without_runs(tmp_path, report, capsys):
    assert report.main(["--runs", str(tmp_path / "none")]) == 1
    assert "no runs with eval.json" in capsys.readouterr().err
    write_run(tmp_path, "ce", 0, {"road": 0.9, "car": 0.5, "person": 0.0})
    out = tmp_path / "tables.md"
    assert report.main(["--runs", str(tmp_path), "--out", str(out)]) == 0
    assert "| road | 0.9000 | 90.0 |" in out.read_text()
    assert not list(tmp_path.glob("*.tmp"))


def write_curve(run: Path, points: dict):
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(log_dir=str(run / "tb"))
    for step, value in points.items():
        writer.add_scalar("val/miou_point_knn", value, step)
        writer.add_scalar("train/loss", 1.0, step)
    writer.close()


def test_validation_curve_table(tmp_path, report):
    iou = {"road": 0.9, "car": 0.5, "person": 0.0}
    write_run(tmp_path, "ce", 0, iou)
    write_run(tmp_path, "ce", 1, iou)
    write_run(tmp_path, "wce", 0, iou)                # no events: its cells are n/a
    write_curve(tmp_path / "ce" / "seed0", {280: 0.20, 560: 0.30, 840: 0.34})
    write_curve(tmp_path / "ce" / "seed1", {280: 0.10, 560: 0.26, 840: 0.27})
    runs = report.load_runs(tmp_path)
    assert runs["ce"][0]["curve"] == pytest.approx({280: 0.20, 560: 0.30, 840: 0.34})
    assert runs["wce"][0]["curve"] is None
    text = report.curve_table(runs)
    assert row(text, "variant") == ["variant", "step 280", "step 560", "step 840", "last interval"]
    assert row(text, "CE")[1:] == ["15.0 (10.0..20.0)", "28.0 (26.0..30.0)", "30.5 (27.0..34.0)",
                                   f"+{100 * (0.04 + 0.01) / 2:.1f} (+1.0..+4.0)"]
    assert row(text, "class-weighted CE")[1:] == ["n/a", "n/a", "n/a", "n/a"]
    out = tmp_path / "tables.md"
    assert report.main(["--runs", str(tmp_path), "--out", str(out)]) == 0
    assert "## Validation point mIoU with KNN during training (%)" in out.read_text()
    assert report.curve_table(report.load_runs(tmp_path, ["wce"])) == ""


def test_paired_differences(tmp_path, report):
    ce = {0: {"road": 0.90, "car": 0.50, "person": 0.00}, 1: {"road": 0.80, "car": 0.40, "person": 0.10},
          2: {"road": 0.70, "car": 0.30, "person": 0.20}}
    sub = {0: {"road": 0.91, "car": 0.53, "person": 0.03}, 1: {"road": 0.80, "car": 0.37, "person": 0.10}}
    for seed, iou in ce.items():
        write_run(tmp_path, "ce", seed, iou, {n: v + 0.01 for n, v in iou.items()})
    for seed, iou in sub.items():
        write_run(tmp_path, "subclassified", seed, iou, {n: v + 0.02 for n, v in iou.items()})
    write_run(tmp_path, "wce", 5, ce[0])              # shares no seed with subclassified: no row
    text = report.paired_table(report.load_runs(tmp_path))
    diffs = [100 * (sum(sub[s].values()) - sum(ce[s].values())) / 3 for s in (0, 1)]   # seed 2: CE only
    tta = [d + 1.0 for d in diffs]
    assert row(text, "subclassified vs CE") == [
        "subclassified vs CE", "0, 1", f"{diffs[0]:+.2f}, {diffs[1]:+.2f}", f"{sum(diffs) / 2:+.2f}",
        f"{tta[0]:+.2f}, {tta[1]:+.2f}", f"{sum(tta) / 2:+.2f}"]
    assert "class-weighted CE |" not in text
    (tmp_path / "subclassified" / "seed1" / "eval_tta.json").unlink()
    assert row(report.paired_table(report.load_runs(tmp_path)), "subclassified vs CE")[4:] == ["n/a", "n/a"]
    assert report.paired_table(report.load_runs(tmp_path, ["ce", "wce"])) == ""

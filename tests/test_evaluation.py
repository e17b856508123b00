"""`lidarseg evaluate` against a transcription of semantic-kitti-api's evaluate_semantics.py + np_ioueval."""
import json
import os

import numpy as np
import pytest
import yaml

from lidarseg import DEFAULT_LABEL_CONFIG
from lidarseg.cli import main
from lidarseg.data.io import write_label
from lidarseg.errors import DataError
from lidarseg.evaluation import evaluate

CFG = yaml.safe_load(open(DEFAULT_LABEL_CONFIG))


def official_evaluate(data, preds, sequences):
    """evaluate_semantics.py (numpy backend), transcribed: sorted per-sequence file lists paired by position,
    int32 & 0xFFFF, remap_lut (size max_key + 100), np.add.at confusion with only the ignored columns zeroed."""
    lm = CFG["learning_map"]
    lut = np.zeros(max(lm) + 100, dtype=np.int32)
    lut[list(lm)] = list(lm.values())
    C = len(CFG["learning_map_inv"])
    ignore = [c for c, v in CFG["learning_ignore"].items() if v]
    include = [c for c in range(C) if c not in ignore]
    labels, predictions = [], []
    for seq in sequences:
        for root, sub, names in (("%s/sequences/%02d/labels" % (data, seq), labels, None),
                                 ("%s/sequences/%02d/predictions" % (preds, seq), predictions, None)):
            files = [os.path.join(dp, f) for dp, dn, fn in os.walk(os.path.expanduser(root))
                     for f in fn if ".label" in f]
            files.sort()
            sub.extend(files)
    assert len(labels) == len(predictions)
    conf = np.zeros((C, C), dtype=np.int64)
    for lf, pf in zip(labels, predictions):
        label = lut[np.fromfile(lf, dtype=np.int32).reshape(-1) & 0xFFFF]
        pred = lut[np.fromfile(pf, dtype=np.int32).reshape(-1) & 0xFFFF]
        np.add.at(conf, (pred, label), 1)
    conf[:, ignore] = 0
    tp = np.diag(conf)
    fp, fn = conf.sum(axis=1) - tp, conf.sum(axis=0) - tp
    union = tp + fp + fn + 1e-15
    iou = tp / union
    miou = (tp[include] / union[include]).mean()
    acc = tp.sum() / (tp[include].sum() + fp[include].sum() + 1e-15)
    line = ",".join("{:.3f}".format(iou[c]) for c in include) + ",{:.3f},{:.3f}".format(miou, acc)
    return iou, miou, acc, line


RAW = np.array(sorted(CFG["learning_map"]), dtype=np.uint32)


def make_dataset(root, sequences=(8,), scans=4, seed=0):
    rng = np.random.default_rng(seed)
    data, preds = root / "data", root / "preds"
    for seq in sequences:
        for s in range(scans):
            n = int(rng.integers(2000, 4000))
            sem = RAW[rng.integers(0, len(RAW), n)]
            sem[rng.random(n) < 0.01] = 300           # unknown id -> 0
            inst = rng.integers(0, 50, n).astype(np.uint32)
            write_label(data / "sequences" / f"{seq:02d}" / "labels" / f"{s:06d}.label", sem | (inst << 16))
            pred = np.where(rng.random(n) < 0.7, sem, RAW[rng.integers(0, len(RAW), n)])
            pred[rng.random(n) < 0.02] = 0
            pred[rng.random(n) < 0.01] = 5            # a train id written by mistake: unknown raw id
            write_label(preds / "sequences" / f"{seq:02d}" / "predictions" / f"{s:06d}.label",
                        pred | (rng.integers(0, 3, n).astype(np.uint32) << 16))
    return data, preds


def test_numbers_identical_to_official(tmp_path):
    data, preds = make_dataset(tmp_path, sequences=(8, 10), scans=3)
    res = evaluate(data, preds, sequences=[8, 10], progress=False)
    iou, miou, acc, line = official_evaluate(data, preds, [8, 10])
    assert np.array_equal(res.confusion.iou(), iou)
    assert res.miou == miou and res.accuracy == acc
    assert res.paper_line() == line
    assert res.unknown_pred > 0 and res.unknown_gt > 0 and any("raw SemanticKITTI ids" in w for w in res.warnings)


def test_cli_output_and_json(tmp_path, capsys):
    data, preds = make_dataset(tmp_path)
    out_json = tmp_path / "report" / "r.json"
    assert main(["evaluate", "--data", str(data), "--predictions", str(preds), "--split", "valid",
                 "--json", str(out_json)]) == 0
    stdout = capsys.readouterr().out.splitlines()
    iou, miou, acc, line = official_evaluate(data, preds, [8])
    assert stdout[-2] == line and stdout[-3] == "below can be copied straight for paper table"
    assert f"Acc avg {acc:.3f}" in stdout and f"IoU avg {miou:.3f}" in stdout
    assert f"IoU class 1 [car] = {iou[1]:.3f}" in stdout
    report = json.loads(out_json.read_text())
    assert report["miou"] == miou and report["paper_line"] == line and report["num_scans"] == 4
    assert not [p for p in out_json.parent.iterdir() if p.name != "r.json"]   # no temporary files left


def test_bonnetal_convention_differs(tmp_path):
    data, preds = make_dataset(tmp_path)
    api = evaluate(data, preds, progress=False)
    bon = evaluate(data, preds, progress=False, convention="bonnetal")
    assert bon.miou > api.miou


@pytest.mark.parametrize("case", ["missing", "extra", "length", "nodir"])
def test_mismatched_files(tmp_path, case, capsys):
    data, preds = make_dataset(tmp_path)
    pdir = preds / "sequences" / "08" / "predictions"
    if case == "missing":
        (pdir / "000002.label").unlink()
        match = "missing.*000002.label"
    elif case == "extra":
        write_label(pdir / "000009.label", np.zeros(10, np.uint32))
        match = "000009.label"
    elif case == "length":
        write_label(pdir / "000001.label", np.zeros(10, np.uint32))
        match = "000001.label has 10 points"
    else:
        match = "prediction directory not found"
        preds = tmp_path / "nothing"
    with pytest.raises(DataError, match=match):
        evaluate(data, preds, progress=False)
    assert main(["evaluate", "--data", str(data), "--predictions", str(preds), "--no-progress"]) == 2
    assert "error:" in capsys.readouterr().err


def test_json_or_plot_that_is_a_directory_is_refused_first(tmp_path, capsys):
    data, preds = make_dataset(tmp_path, scans=1)
    assert main(["evaluate", "--data", str(data), "--predictions", str(preds), "--json", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --json {tmp_path}: is an existing directory; expected a file name"
    assert main(["evaluate", "--data", str(data), "--predictions", str(preds), "--plot", str(data)]) == 2
    assert f"--plot {data}: is an existing directory" in capsys.readouterr().err

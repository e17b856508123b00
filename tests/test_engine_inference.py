"""`lidarseg infer`: the model is rebuilt from the checkpoint, predictions pass `lidarseg evaluate` with the same
numbers, per-stage timings are printed, the test split (no labels) gets one file per scan."""
import json

import numpy as np
import pytest
import torch

from lidarseg.cli import main
from lidarseg.engine.checkpoint import load_checkpoint, save_checkpoint
from lidarseg.engine.config import load_config
from lidarseg.engine.trainer import Trainer
from lidarseg.errors import DataError

TINY = ["model.name=rangenet21", "model.width=0.125", "model.blocks=[1,1,1,1,1]", "data.sensor.height=32",
        "data.sensor.width=128", "data.workers=0", "data.sequences.train=[0]", "data.sequences.valid=[8]",
        "data.sequences.test=[11]", "train.batch_size=2", "train.progress=false", "train.epochs=1",
        "val.every=0", "optim.lr=0.02", "train.device=cpu", "train.threads=1"]


pytestmark = pytest.mark.usefixtures("keep_torch_threads")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, training_root):
    base = tmp_path_factory.mktemp("infer")
    n = torch.get_num_threads()
    Trainer(load_config(None, [*TINY, f"data.root={training_root}"]), base / "run", log=lambda *a: None).fit()
    torch.set_num_threads(n)
    return training_root, base / "run" / "last.pt"


def test_infer_valid_matches_evaluate(trained, tmp_path, capsys):
    root, ckpt = trained
    pred = tmp_path / "pred"
    report = tmp_path / "infer.json"
    assert main(["infer", "--checkpoint", str(ckpt), "--data", str(root), "--split", "valid", "--out", str(pred),
                 "--knn", "--no-progress", "--device", "cpu", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    for stage in ("load+project", "network", "KNN", "write", "time per scan"):
        assert stage in out
    assert "KNN on (k=5" in out and "mIoU" in out
    files = sorted((pred / "sequences" / "08" / "predictions").glob("*.label"))
    assert [f.name for f in files] == ["000000.label", "000001.label"]
    scan = np.fromfile(root / "sequences" / "08" / "velodyne" / "000000.bin", np.float32).reshape(-1, 4)
    raw = np.fromfile(files[0], np.uint32)
    assert raw.shape[0] == scan.shape[0] and 0 not in raw  # KNN never outputs class 0
    mine = json.loads(report.read_text())["metrics"]

    ev_json = tmp_path / "eval.json"
    assert main(["evaluate", "--data", str(root), "--predictions", str(pred), "--sequences", "08",
                 "--no-progress", "--json", str(ev_json)]) == 0
    theirs = json.loads(ev_json.read_text())
    assert theirs["miou"] == pytest.approx(mine["miou"]) and theirs["accuracy"] == pytest.approx(mine["accuracy"])


def test_infer_no_knn_and_test_split(trained, tmp_path, capsys):
    root, ckpt = trained
    assert main(["infer", "--checkpoint", str(ckpt), "--split", "test", "--out", str(tmp_path / "p"),
                 "--no-knn", "--no-progress", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "KNN off" in captured.out and "no labels" in captured.err
    f = tmp_path / "p" / "sequences" / "11" / "predictions" / "000000.label"
    n = (root / "sequences" / "11" / "velodyne" / "000000.bin").stat().st_size // 16
    assert f.stat().st_size == 4 * n


def test_checkpoint_must_match_its_model(trained, tmp_path):
    _, ckpt = trained
    state = load_checkpoint(ckpt)
    state["config"]["model"]["width"] = 0.25  # the stored weights no longer fit
    save_checkpoint(tmp_path / "bad.pt", state)
    from lidarseg.engine.inference import load_model
    with pytest.raises(DataError, match="shape mismatches"):
        load_model(tmp_path / "bad.pt", torch.device("cpu"))


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    return err[-1]


def test_prediction_folder_refuses_mixing_and_interrupted_runs(trained, tmp_path, capsys, monkeypatch):
    """A folder's manifest records its writer; other checkpoints/options/--limit are refused, an interrupted run is
    refused by evaluate (the issue's case: interrupted infer over older predictions scored 12.2 % instead of 16.3 %
    with no warning), and files its manifest does not list are a mix."""
    root, ckpt = trained
    pred = tmp_path / "pred"
    infer = ["infer", "--checkpoint", str(ckpt), "--data", str(root), "--split", "valid", "--out", str(pred),
             "--no-progress", "--device", "cpu"]
    evaluate = ["evaluate", "--data", str(root), "--predictions", str(pred), "--sequences", "08", "--no-progress"]
    assert main([*infer, "--knn"]) == 0
    manifest = json.loads((pred / "lidarseg-predictions.json").read_text())
    assert manifest["writer"]["checkpoint"] == str(ckpt.resolve()) and manifest["writer"]["knn"]["k"] == 5
    assert manifest["splits"]["valid"] == {"limit": None, "complete": True,
                                           "files": {"08": ["000000", "000001"]}}
    capsys.readouterr()

    assert main([*infer, "--no-knn"]) == 2
    assert "already holds predictions of another checkpoint or options (differs in knn" in _error(capsys)
    assert main([*infer, "--knn", "--limit", "1"]) == 2
    assert "with --limit None; this run has --limit 1" in _error(capsys)
    assert main([*infer, "--knn", "--limit", "0"]) == 2
    assert "--limit must be >= 1" in _error(capsys)

    import lidarseg.submission as sub
    real, calls = sub.write_prediction, []

    def killed_after_one(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(sub, "write_prediction", killed_after_one)
    stale = pred / "sequences" / "08" / "uncert" / "000000.label"  # a variance file of an earlier MC-dropout run
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\0" * 4)
    assert main([*infer, "--no-knn", "--overwrite"]) == 130
    assert not stale.exists()
    monkeypatch.setattr(sub, "write_prediction", real)
    capsys.readouterr()
    assert main(evaluate) == 2
    assert "are incomplete: `lidarseg infer --split valid` into this folder did not finish" in _error(capsys)

    assert main([*infer, "--no-knn"]) == 0  # the same command again finishes the folder
    assert main(evaluate) == 0
    capsys.readouterr()

    # a --limit run (overwriting) and an older file copied back in: the folder mixes two runs
    old = (pred / "sequences" / "08" / "predictions" / "000001.label").read_bytes()
    assert main([*infer, "--no-knn", "--limit", "1", "--overwrite"]) == 0
    (pred / "sequences" / "08" / "predictions" / "000001.label").write_bytes(old)
    capsys.readouterr()
    assert main(evaluate) == 2
    assert "were not written by the run its manifest records" in _error(capsys)


def test_submission_refuses_an_interrupted_folder(trained, tmp_path, capsys):
    root, ckpt = trained
    pred = tmp_path / "p"
    assert main(["infer", "--checkpoint", str(ckpt), "--split", "test", "--out", str(pred), "--no-progress",
                 "--device", "cpu"]) == 0
    submit = ["submission", "--predictions", str(pred), "--data", str(root), "--sequences", "11",
              "--out", str(tmp_path / "s.zip")]
    assert main(submit) == 0
    path = pred / "lidarseg-predictions.json"
    manifest = json.loads(path.read_text())
    manifest["splits"]["test"]["complete"] = False  # as a run killed while writing
    path.write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main([*submit[:-1], str(tmp_path / "t.zip")]) == 2
    assert "incomplete" in _error(capsys) and not (tmp_path / "t.zip").exists()


def test_infer_output_paths_checked_first(trained, tmp_path, capsys):
    root, ckpt = trained
    f = tmp_path / "file"
    f.write_text("x")
    base = ["infer", "--checkpoint", str(ckpt), "--no-progress", "--device", "cpu"]
    assert main([*base, "--out", str(f)]) == 2
    assert f"--out {f}: is an existing file" in _error(capsys)
    assert main([*base, "--out", str(tmp_path / "p"), "--json", str(tmp_path)]) == 2
    assert f"--json {tmp_path}: is an existing directory" in _error(capsys)
    assert not (tmp_path / "p").exists()

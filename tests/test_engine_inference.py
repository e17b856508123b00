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

"""Every reader end to end on tiny synthetic data written in its format (`lidarseg synth --format`): stats, a
one-epoch training, infer, evaluate (the same numbers as infer's) and the submission writer; and
`lidarseg infer --scans DIR` on a folder of .pcd / .npy files, which must predict what the split inference
predicts for the same scans."""
import json

import numpy as np
import pytest
import torch
import yaml

from lidarseg.cli import main
from lidarseg.engine.config import load_config
from lidarseg.engine.trainer import Trainer

TINY = ["model.name=rangenet21", "model.width=0.125", "model.blocks=[1,1,1,1,1]", "data.workers=0",
        "train.batch_size=2", "train.progress=false", "train.epochs=1", "val.every=1", "val.images=false",
        "optim.lr=0.02", "train.device=cpu", "train.threads=1"]

FORMATS = {
    # format: (synth options, stats options, config overrides)
    "semantic-poss": (["--sequences", "00", "02", "--scans", "2", "--azimuth-steps", "256"], ["--sequences", "00"],
                      ["data.format=semantic-poss", "data.sensor={height: 40, width: 128, fov_up: 7.0, "
                       "fov_down: -16.0}", "data.sequences.train=[0]"]),
    "nuscenes": (["--scans", "2", "--azimuth-steps", "256"], [],
                 ["data.format=nuscenes", "data.sensor={height: 32, width: 128, fov_up: 10.67, fov_down: -30.67}"]),
    "nuscenes-ring": (["--scans", "2", "--azimuth-steps", "256"], [],
                      ["data.format=nuscenes", "data.rows=ring",
                       "data.sensor={height: 32, width: 128, fov_up: 10.67, fov_down: -30.67}"]),
}

pytestmark = pytest.mark.usefixtures("keep_torch_threads")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_format_end_to_end(fmt, tmp_path, capsys):
    synth, stats_options, overrides = FORMATS[fmt]
    fmt = fmt.split("-ring")[0]
    root = tmp_path / "data"
    assert main(["synth", "--format", fmt, "--out", str(root), *synth]) == 0
    stats_file = tmp_path / "stats.yaml"
    assert main(["stats", "--format", fmt, "--data", str(root), "--split", "train", "--out", str(stats_file),
                 *stats_options]) == 0
    stats = yaml.safe_load(stats_file.read_text())
    assert stats["source"]["format"] == fmt and stats["source"]["scans"] == 2
    assert abs(sum(stats["content_train"].values()) - 1) < 1e-6
    norm = stats["normalization"]
    assert 20 < norm["mean"][4] < 255  # remission / intensity on the 0-255 scale of both formats

    cfg = load_config(None, [*TINY, *overrides, f"data.root={root}", f"data.mean={norm['mean']}",
                             f"data.std={norm['std']}"])
    n = torch.get_num_threads()
    result = Trainer(cfg, tmp_path / "run", log=lambda *a: None).fit()
    torch.set_num_threads(n)
    assert not result["stopped"] and 0 <= result["miou_point_knn"] <= 1

    pred, report = tmp_path / "pred", tmp_path / "infer.json"
    assert main(["infer", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--split", "valid", "--out", str(pred),
                 "--knn", "--no-progress", "--device", "cpu", "--json", str(report)]) == 0
    mine = json.loads(report.read_text())["metrics"]
    assert "valid" in capsys.readouterr().out
    ev = tmp_path / "eval.json"
    assert main(["evaluate", "--format", fmt, "--data", str(root), "--predictions", str(pred), "--split", "valid",
                 "--no-progress", "--json", str(ev)]) == 0
    theirs = json.loads(ev.read_text())
    assert theirs["miou"] == pytest.approx(mine["miou"]) and theirs["num_scans"] == 2
    # validation inside training scored the same scans with the same network and KNN
    assert theirs["miou"] == pytest.approx(result["miou_point_knn"])

    if fmt == "nuscenes":
        from lidarseg.data.sources import build_source
        src = build_source("nuscenes", root)
        for item in src.items("valid"):
            f = pred / "lidarseg" / "val" / f"{item.token}_lidarseg.bin"
            values = np.fromfile(f, np.uint8)
            assert values.shape[0] == src.num_points(item) and values.min() >= 1 and values.max() <= 16
        assert main(["submission", "--format", "nuscenes", "--data", str(root), "--predictions", str(pred),
                     "--split", "valid"]) == 0
        meta = json.loads((pred / "val" / "submission.json").read_text())
        assert meta == {"meta": {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False,
                                 "use_external": False}}
        f.write_bytes(values[:-1].tobytes())  # one value short
        assert main(["submission", "--format", "nuscenes", "--data", str(root), "--predictions", str(pred),
                     "--split", "valid"]) == 2
        assert "has %d values but scan" % (values.shape[0] - 1) in capsys.readouterr().err


def test_infer_scans_folder_predicts_as_the_split(training_root, tmp_path, capsys):
    from lidarseg.data.io import read_scan, write_pcd
    cfg = load_config(None, [*TINY, f"data.root={training_root}", "data.sensor.height=32", "data.sensor.width=128",
                             "data.sequences.train=[0]", "data.sequences.valid=[8]", "val.every=0"])
    n = torch.get_num_threads()
    Trainer(cfg, tmp_path / "run", log=lambda *a: None).fit()
    torch.set_num_threads(n)
    ckpt = str(tmp_path / "run" / "last.pt")
    velo = training_root / "sequences" / "08" / "velodyne"
    scans = tmp_path / "scans"
    for i, f in enumerate(sorted(velo.glob("*.bin"))):
        p = read_scan(f)
        if i == 0:
            write_pcd(scans / "drive" / f"{f.stem}.pcd", p, binary=True)
        else:
            write_pcd(scans / "drive" / f"{f.stem}.pcd", p, binary=False)
    ref = tmp_path / "ref"
    common = ["--no-knn", "--no-progress", "--device", "cpu"]
    assert main(["infer", "--checkpoint", ckpt, "--data", str(training_root), "--sequences", "08", "--out", str(ref),
                 *common]) == 0
    out = tmp_path / "out"
    assert main(["infer", "--checkpoint", ckpt, "--scans", str(scans), "--out", str(out), "--png", *common]) == 0
    text = capsys.readouterr()
    assert "folder format" in text.out and "no labels" in text.err
    for f in sorted(velo.glob("*.bin")):
        mine = np.fromfile(out / "drive" / f"{f.stem}.label", np.uint32)
        theirs = np.fromfile(ref / "sequences" / "08" / "predictions" / f"{f.stem}.label", np.uint32)
        np.testing.assert_array_equal(mine, theirs)
        assert (out / "drive" / f"{f.stem}.png").is_file()
    (scans / "drive" / "x.npy").write_bytes(b"")
    assert main(["infer", "--checkpoint", ckpt, "--scans", str(scans), "--out", str(tmp_path / "o2"), *common]) == 2
    assert "mixed scan formats" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()

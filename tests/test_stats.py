"""compute_stats and `lidarseg stats` on a tiny dataset, against a direct numpy computation."""
import numpy as np
import pytest
import yaml

from lidarseg.cli import main
from lidarseg.data import LabelMap, compute_stats, spherical_projection
from lidarseg.errors import DataError

from test_dataset import SMALL, write_dataset


def test_stats_match_direct_computation(tmp_path):
    truth = write_dataset(tmp_path, {"00": [300, 500], "01": [400]})
    st = compute_stats(tmp_path, "train", sequences=[0, 1], sensor=SMALL)
    chans = []
    for (seq, stem), (pts, raw) in sorted(truth.items()):
        p = spherical_projection(pts, **SMALL)
        m = p.mask
        chans.append(np.concatenate([p.range[m][:, None], p.xyz[m], p.remission[m][:, None]], 1))
    chans = np.concatenate(chans).astype(np.float64)
    np.testing.assert_allclose(st["normalization"]["mean"], chans.mean(0), atol=2e-6)
    np.testing.assert_allclose(st["normalization"]["std"], chans.std(0), atol=2e-6)
    raw = np.concatenate([r for _, r in truth.values()]) & 0xFFFF
    assert st["counts"]["raw"][10] == int((raw == 10).sum())
    assert st["content"][252] == pytest.approx((raw == 252).mean())
    lm = LabelMap.from_yaml()
    train = lm.to_train(raw)
    assert st["counts"]["train"][1] == int((train == 1).sum())  # car = 10 + 252
    assert sum(st["content_train"].values()) == pytest.approx(1.0)
    assert st["source"]["pixels"] == len(chans) and st["source"]["scans"] == 3
    # the content can be fed back into a LabelMap
    cfg = yaml.safe_load(open(lm.source))
    cfg["content"] = st["content"]
    w = LabelMap(cfg).class_weights()
    assert w[0] == 0 and w[1] == pytest.approx(1 / ((train == 1).mean() + 0.001))


def test_stats_cli_writes_yaml(tmp_path, capsys):
    write_dataset(tmp_path / "d", {"00": [300]})
    write_dataset(tmp_path / "d", {"11": [200]}, labels=False)
    out = tmp_path / "stats" / "s.yaml"
    rc = main(["stats", "--data", str(tmp_path / "d"), "--split", "train", "--sequences", "00", "--height", "16",
               "--width", "128", "--out", str(out)])
    assert rc == 0
    doc = yaml.safe_load(out.read_text())
    assert len(doc["normalization"]["mean"]) == 5 and doc["source"]["sensor"]["height"] == 16
    assert "content" in doc
    rc = main(["stats", "--data", str(tmp_path / "d"), "--split", "test", "--sequences", "11", "--sensor", "vlp16"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert rc == 0 and "content" not in printed and printed["source"]["scans"] == 1
    rc = main(["stats", "--data", str(tmp_path / "d"), "--sequences", "05"])
    assert rc == 2 and "sequences/05" in capsys.readouterr().err.replace("\\", "/")


def test_stats_bad_scan(tmp_path):
    write_dataset(tmp_path, {"00": [100]})
    (tmp_path / "sequences" / "00" / "velodyne" / "000000.bin").write_bytes(b"\0" * 10)
    with pytest.raises(DataError, match="000000.bin"):
        compute_stats(tmp_path, "train", sequences=[0], sensor=SMALL)


def test_max_scans_zero_and_out_directory_are_refused(tmp_path, capsys):
    write_dataset(tmp_path, {"00": [300]})
    assert main(["stats", "--data", str(tmp_path), "--sequences", "0", "--max-scans", "0"]) == 2
    assert "--max-scans must be >= 1" in capsys.readouterr().err
    assert main(["stats", "--data", str(tmp_path), "--sequences", "0", "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path}: is an existing directory" in capsys.readouterr().err

"""Prediction writer and submission zip, checked with a transcription of validate_submission.py."""
import os
import zipfile

import numpy as np
import pytest

from lidarseg.cli import main
from lidarseg.data.io import read_label
from lidarseg.data.labels import LabelMap
from lidarseg.errors import DataError
from lidarseg.submission import build_submission, validate_submission, write_prediction

LM = LabelMap.from_yaml()


def official_validate(zip_path, dataset, sequences):
    """validate_submission.py (segmentation), transcribed; returns None or the failure."""
    if not str(zip_path).endswith(".zip"):
        return "not a zip"
    with zipfile.ZipFile(zip_path) as zf:
        dirs = [i.filename for i in zf.infolist() if i.is_dir()]
        sizes = {i.filename: i.file_size for i in zf.infolist()}
    if "sequences/" not in dirs:
        return "no sequences/"
    for s in sequences:
        for d in ("sequences/%02d/" % s, "sequences/%02d/predictions/" % s):
            if d not in dirs:
                return "missing " + d
        velo = os.path.join(dataset, "sequences", "%02d" % s, "velodyne")
        for f in sorted(os.listdir(velo)):
            name = "sequences/%02d/predictions/%s" % (s, f.replace(".bin", ".label"))
            if name not in sizes:
                return "missing " + name
            if sizes[name] / 4 != os.path.getsize(os.path.join(velo, f)) / 16:
                return "wrong size " + name
    return None


@pytest.fixture
def test_split(synthetic_root, tmp_path):
    """(data, preds): the synthetic dataset (test sequence 11 has 3 scans, no labels) and random predictions of the
    right length for each of its scans under tmp_path/preds."""
    rng = np.random.default_rng(0)
    preds = tmp_path / "preds"
    for scan in sorted((synthetic_root / "sequences" / "11" / "velodyne").glob("*.bin")):
        n = scan.stat().st_size // 16
        write_prediction(preds, 11, scan.stem, rng.integers(0, LM.num_classes, n), LM)
    return synthetic_root, preds


def test_write_prediction_raw_ids_atomic(tmp_path, monkeypatch):
    train = np.arange(LM.num_classes).repeat(3)
    path = write_prediction(tmp_path, "8", "000042", train, LM)
    assert path == tmp_path / "sequences" / "08" / "predictions" / "000042.label"
    raw = np.fromfile(path, dtype="<u4")
    assert raw.tolist() == [LM.learning_map_inv[int(c)] for c in train]
    assert raw[3] == 10                                         # train id 1 -> raw 10 (car)
    # an interrupted write leaves neither a partial final file nor a temporary file
    def boom(*a):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        write_prediction(tmp_path, 8, 43, train, LM)
    assert sorted(p.name for p in path.parent.iterdir()) == ["000042.label"]
    with pytest.raises(DataError):
        write_prediction(tmp_path, 8, 44, np.array([0.5]), LM)
    with pytest.raises(DataError):
        write_prediction(tmp_path, 8, 44, np.array([20]), LM)


def test_build_and_validate(tmp_path, test_split, capsys):
    data, preds = test_split
    out = tmp_path / "sub" / "submission.zip"
    assert main(["submission", "--predictions", str(preds), "--data", str(data), "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "12, 13, 14, 15, 16, 17, 18, 19, 20, 21" in cap.err       # missing test sequences are named
    assert official_validate(out, data, [11]) is None
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert names[:3] == ["sequences/", "sequences/11/", "sequences/11/predictions/"]
        assert np.array_equal(np.frombuffer(zf.read("sequences/11/predictions/000001.label"), "<u4"),
                              read_label(preds / "sequences" / "11" / "predictions" / "000001.label"))
    assert [p.name for p in out.parent.iterdir()] == ["submission.zip"]
    assert len(validate_submission(out, data, ["11"])) == 3


def test_missing_or_wrong_length_prediction(tmp_path, test_split):
    data, preds = test_split
    pdir = preds / "sequences" / "11" / "predictions"
    (pdir / "000001.label").unlink()
    (pdir / "000002.label").write_bytes(b"\0" * 8)
    with pytest.raises(DataError, match="000001.label") as exc:
        build_submission(preds, data, tmp_path / "s.zip", ["11"])
    assert "000002.label has 2 labels" in str(exc.value)
    assert not (tmp_path / "s.zip").exists()


def test_validator_rejects_zip_without_dir_entries(tmp_path, test_split):
    data, preds = test_split
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for p in sorted((preds / "sequences" / "11" / "predictions").iterdir()):
            zf.write(p, f"sequences/11/predictions/{p.name}")
    assert official_validate(bad, data, [11]) is not None
    with pytest.raises(DataError, match="directory entry"):
        validate_submission(bad, data, ["11"])


def test_train_ids_are_refused(tmp_path, test_split, capsys):
    """`evaluate` warns about ids outside the learning_map; a submission of them would be scored as garbage, so
    `submission` refuses them (here: train ids written without learning_map_inv)."""
    data, preds = test_split
    scan = data / "sequences" / "11" / "velodyne" / "000001.bin"
    n = scan.stat().st_size // 16
    bad = preds / "sequences" / "11" / "predictions" / "000001.label"
    np.random.default_rng(1).integers(1, 20, n).astype(np.uint32).tofile(bad)
    out = tmp_path / "s.zip"
    assert main(["submission", "--predictions", str(preds), "--data", str(data), "--sequences", "11",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"prediction {bad} holds ids [" in err and "train ids written instead of raw ids" in err
    assert "\u2713" not in err and not out.exists()


def test_submission_out_that_is_a_directory(tmp_path, test_split, capsys):
    data, preds = test_split
    assert main(["submission", "--predictions", str(preds), "--data", str(data), "--sequences", "11",
                 "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path}: is an existing directory" in capsys.readouterr().err


def test_sequence_without_scans_is_refused(tmp_path, test_split):
    """A test sequence whose velodyne folder is empty: one error naming the folder, and no zip."""
    _, preds = test_split
    data = tmp_path / "data"
    (data / "sequences" / "11" / "velodyne").mkdir(parents=True)
    with pytest.raises(DataError, match=f"no scans in {data / 'sequences' / '11' / 'velodyne'}"):
        build_submission(preds, data, tmp_path / "s.zip", ["11"])
    assert not (tmp_path / "s.zip").exists()

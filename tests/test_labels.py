"""LabelMap against the tables of rangenet.md §3."""
import numpy as np
import pytest

from lidarseg.data import LabelMap
from lidarseg.errors import ConfigError, DataError

WEIGHTS = [0, 22.931662, 857.562778, 715.110052, 315.961774, 356.245209, 747.617004, 887.224016, 963.891595,
           5.005093, 63.624687, 6.900217, 203.879613, 7.480204, 13.631551, 3.733921, 142.146168, 12.635481,
           259.369853, 618.966696]
TO_RAW = [0, 10, 11, 15, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 70, 71, 72, 80, 81]


@pytest.fixture(scope="module")
def lm():
    return LabelMap.from_yaml()


def test_official_tables(lm):
    assert lm.num_classes == 20 and lm.ignore == [0]
    assert lm.names[1] == "car" and lm.names[19] == "traffic-sign"
    np.testing.assert_allclose(lm.class_weights(), WEIGHTS, rtol=1e-6)
    np.testing.assert_array_equal(lm.to_raw(np.arange(20)), TO_RAW)
    assert lm.split["train"] == [0, 1, 2, 3, 4, 5, 6, 7, 9, 10] and lm.split["valid"] == [8]
    assert lm.sequences("test") == list(range(11, 22))
    assert abs(lm.content.sum() - 0.99999854) < 1e-7
    assert lm.colors_rgb[1].tolist() == [100, 150, 245]  # car: BGR [245,150,100] in the yaml


def test_raw_to_train(lm):
    raw = np.array([0, 1, 10, 252, 60, 52, 259, 81 | (5 << 16)], np.uint32)
    np.testing.assert_array_equal(lm.to_train(raw), [0, 0, 1, 1, 9, 0, 5, 19])
    assert lm.to_train(raw).dtype == np.int64
    np.testing.assert_array_equal(lm.colorize(np.array([[1, 9]])).shape, (1, 2, 3))


def test_unknown_raw_ids(lm):
    raw = np.array([10, 1234, 1234, 7], np.uint32)
    with pytest.raises(DataError, match=r"\[7, 1234\].*3 points.*in scan.label"):
        lm.to_train(raw, source="scan.label")
    np.testing.assert_array_equal(lm.to_train(raw, unknown="zero"), [1, 0, 0, 0])
    assert lm.count_unknown(raw) == 3
    with pytest.raises(DataError, match="0..19"):
        lm.to_raw(np.array([20]))


def test_bad_configs(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        LabelMap.from_yaml(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("labels: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml.*YAML"):
        LabelMap.from_yaml(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        LabelMap.from_yaml(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="missing keys"):
        LabelMap({"labels": {}})
    cfg = {"labels": {0: "a", 1: "b"}, "color_map": {0: [0, 0, 0], 1: [1, 2, 3]}, "content": {0: 0.5, 1: 0.5},
           "learning_map": {0: 0, 1: 2}, "learning_map_inv": {0: 0, 1: 1}, "learning_ignore": {0: True, 1: False}}
    with pytest.raises(ConfigError, match="outside"):
        LabelMap(cfg)
    cfg["learning_map"] = {0: 0, 1: 1}
    small = LabelMap(cfg)
    np.testing.assert_allclose(small.class_weights(), [0, 1 / 0.501])

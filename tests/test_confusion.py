"""ConfusionMatrix against transcriptions of semantic-kitti-api np_ioueval and lidar-bonnetal iouEval."""
import numpy as np
import pytest
import torch

from lidarseg.metrics import ConfusionMatrix


class NpIoUEval:
    """semantic-kitti-api auxiliary/np_ioueval.py, transcribed."""

    def __init__(self, n_classes, ignore=None):
        self.n_classes = n_classes
        self.ignore = np.array(ignore, dtype=np.int64)
        self.include = np.array([n for n in range(n_classes) if n not in self.ignore], dtype=np.int64)
        self.conf = np.zeros((n_classes, n_classes), dtype=np.int64)

    def addBatch(self, x, y):
        x_row, y_row = x.reshape(-1), y.reshape(-1)
        assert x_row.shape == y_row.shape
        np.add.at(self.conf, (x_row, y_row), 1)

    def getStats(self, rows_too=False):
        conf = self.conf.copy()
        conf[:, self.ignore] = 0
        if rows_too:   # lidar-bonnetal iouEval
            conf = conf.astype(np.float64)
            conf[self.ignore] = 0
        tp = np.diag(conf)
        return tp, conf.sum(axis=1) - tp, conf.sum(axis=0) - tp

    def getIoU(self, rows_too=False):
        tp, fp, fn = self.getStats(rows_too)
        union = tp + fp + fn + 1e-15
        return (tp[self.include] / union[self.include]).mean(), tp / union

    def getacc(self, rows_too=False):
        tp, fp, fn = self.getStats(rows_too)
        return tp.sum() / (tp[self.include].sum() + fp[self.include].sum() + 1e-15)


def _data(seed, n=50_000, C=20):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, C, n)
    gt[rng.random(n) < 0.1] = 0
    gt[gt == 7] = 8                       # class 7 absent from the ground truth
    pred = np.where(rng.random(n) < 0.6, gt, rng.integers(0, C, n))
    pred[rng.random(n) < 0.05] = 0        # predicted 0 on labelled points
    pred[pred == 7] = 9
    gt[gt == 13] = 12
    pred[pred == 13] = 12                 # class 13 absent from both
    return pred, gt


@pytest.mark.parametrize("convention", ["api", "bonnetal"])
def test_matches_references(convention):
    ref = NpIoUEval(20, [0])
    cm = ConfusionMatrix(20, ignore=(0,), convention=convention)
    for seed in range(3):
        pred, gt = _data(seed)
        ref.addBatch(pred, gt)
        cm.update(pred, gt)
    np.testing.assert_array_equal(cm.matrix, ref.conf)
    rows = convention == "bonnetal"
    m, iou = ref.getIoU(rows)
    assert np.array_equal(cm.iou(), iou)
    assert cm.miou() == m and cm.accuracy() == ref.getacc(rows)
    assert cm.iou()[13] == 0.0 and cm.iou()[7] == 0.0     # absent classes count as 0 in the mean
    assert cm.miou() == pytest.approx(cm.iou()[1:].sum() / 19, abs=1e-15)


def test_conventions_differ_on_predicted_zero():
    cm_api, cm_bon = ConfusionMatrix(3), ConfusionMatrix(3, convention="bonnetal")
    pred, gt = np.array([1, 0, 2, 2]), np.array([1, 1, 2, 0])
    for cm in (cm_api, cm_bon):
        cm.update(pred, gt)
    assert cm_api.iou()[1] == pytest.approx(0.5)   # predicted 0 on a class-1 point: false negative
    assert cm_bon.iou()[1] == pytest.approx(1.0)   # ... not counted
    assert cm_api.accuracy() == pytest.approx(1.0) and cm_bon.accuracy() == pytest.approx(1.0)


def test_torch_input_and_merge():
    pred, gt = _data(5)
    a = ConfusionMatrix(20).update(torch.from_numpy(pred), torch.from_numpy(gt).int())
    b = ConfusionMatrix(20).update(pred, gt)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    c = a + b
    np.testing.assert_array_equal(c.matrix, 2 * b.matrix)
    a += b
    np.testing.assert_array_equal(a.matrix, c.matrix)
    with pytest.raises(ValueError):
        a.merge(ConfusionMatrix(20, convention="bonnetal"))
    assert a.all_reduce() is a                        # no process group: no-op
    np.testing.assert_array_equal(a.matrix, c.matrix)


def test_all_reduce_single_process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        pred, gt = _data(6, n=1000)
        cm = ConfusionMatrix(20).update(pred, gt)
        before = cm.matrix.copy()
        cm.all_reduce()
        np.testing.assert_array_equal(cm.matrix, before)
    finally:
        dist.destroy_process_group()


def test_bad_input():
    cm = ConfusionMatrix(4)
    with pytest.raises(ValueError, match="elements"):
        cm.update(np.array([1, 2]), np.array([1]))
    with pytest.raises(ValueError, match="0..3"):
        cm.update(np.array([4]), np.array([1]))
    with pytest.raises(ValueError, match="0..3"):
        cm.update(torch.tensor([1]), torch.tensor([-1]))
    with pytest.raises(ValueError, match="convention"):
        ConfusionMatrix(4, convention="x")

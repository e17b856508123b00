"""PointAugmentation: each part, reproducibility, distinct streams, config errors."""
import numpy as np
import pytest
import torch

from lidarseg.data.augment import PointAugmentation, rng_for
from lidarseg.errors import ConfigError


def cloud(n=2000, seed=0):
    rs = np.random.default_rng(seed)
    return np.concatenate([rs.normal(size=(n, 3)) * 10, rs.random((n, 1))], 1).astype(np.float32)


def test_rotation_keeps_radius_and_z():
    pts = cloud()
    out, keep = PointAugmentation({"rotation": {"max_degrees": 90}})(pts, rng_for(0, 0, 0))
    assert keep is None
    np.testing.assert_allclose(np.hypot(out[:, 0], out[:, 1]), np.hypot(pts[:, 0], pts[:, 1]), rtol=1e-5)
    np.testing.assert_array_equal(out[:, 2:], pts[:, 2:])
    ang = np.angle((out[:, 0] + 1j * out[:, 1]) / (pts[:, 0] + 1j * pts[:, 1]))
    assert np.ptp(ang) < 1e-4 and abs(ang[0]) <= np.pi / 2 + 1e-6 and abs(ang[0]) > 0


def test_flip_scale_jitter():
    pts = cloud()
    out, _ = PointAugmentation({"flip": {"x": 1.0, "y": 0.0}})(pts, rng_for(0, 0, 0))
    np.testing.assert_array_equal(out[:, 0], -pts[:, 0])
    np.testing.assert_array_equal(out[:, 1:], pts[:, 1:])
    out, _ = PointAugmentation({"scale": {"min": 2.0, "max": 2.0}})(pts, rng_for(0, 0, 0))
    np.testing.assert_allclose(out[:, :3], 2 * pts[:, :3], rtol=1e-6)
    out, _ = PointAugmentation({"jitter": {"sigma": 0.1, "clip": 0.05}})(pts, rng_for(0, 0, 0))
    d = out[:, :3] - pts[:, :3]
    assert np.abs(d).max() <= 0.05 + 1e-5 and np.abs(d).max() > 0.04
    np.testing.assert_array_equal(out[:, 3], pts[:, 3])


def test_dropout_keeps_points():
    pts = cloud()
    out, keep = PointAugmentation({"dropout": {"max_fraction": 0.5}})(pts, rng_for(1, 0, 0))
    assert out.shape == pts.shape and keep.shape == (len(pts),) and keep.dtype == bool
    assert 0.4 < keep.mean() < 1.0
    np.testing.assert_array_equal(out, pts)


def test_reproducible_and_distinct_streams():
    aug = PointAugmentation({"rotation": {}, "flip": {}, "scale": {}, "jitter": {}, "dropout": {}})
    pts = cloud()
    a = aug(pts, rng_for(7, 2, 5))
    b = aug(pts, rng_for(7, 2, 5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    for other in [(7, 3, 5), (7, 2, 6), (8, 2, 5)]:
        assert not np.array_equal(aug(pts, rng_for(*other))[0], a[0])
    pts_copy = pts.copy()
    aug(pts, rng_for(0, 0, 0))
    np.testing.assert_array_equal(pts, pts_copy)  # input untouched


def _worker_outputs(num_workers):
    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            aug = PointAugmentation({"jitter": {"sigma": 1.0, "clip": 3.0}})
            return aug(np.zeros((3, 4), np.float32), rng_for(torch.initial_seed(), 0, i))[0]

    torch.manual_seed(123)
    loader = torch.utils.data.DataLoader(DS(), batch_size=1, num_workers=num_workers)
    return [x.numpy() for x in loader]


def test_worker_seed_streams():
    # seed: null -> torch.initial_seed(): distinct per worker, reproducible under torch.manual_seed
    first = _worker_outputs(2)
    again = _worker_outputs(2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert len({x.tobytes() for x in first}) == 4


def test_config_errors():
    with pytest.raises(ConfigError, match="valid keys"):
        PointAugmentation({"rotate": {}})
    with pytest.raises(ConfigError, match=r"rotation.*valid keys.*max_degrees"):
        PointAugmentation({"rotation": {"degrees": 10}})
    with pytest.raises(ConfigError, match="flip.x"):
        PointAugmentation({"flip": {"x": 2}})
    with pytest.raises(ConfigError, match="scale"):
        PointAugmentation({"scale": {"min": 1.2, "max": 1.1}})
    with pytest.raises(ConfigError, match="seed"):
        PointAugmentation({"seed": "x"})
    off = PointAugmentation({"enabled": False, "rotation": {}})
    assert not off.active
    part_off = PointAugmentation({"rotation": {"enabled": False}, "flip": False})
    assert not part_off.active


def test_shared_epoch_reaches_forked_and_spawned_processes_and_copies_are_independent():
    import copy
    import multiprocessing as mp

    from lidarseg.data.augment import SharedEpoch
    e = SharedEpoch(3)
    c = copy.deepcopy(e)               # outside process start-up: an independent counter of the same value
    e.set(5)
    assert (e.get(), c.get()) == (5, 3)
    for method in ("fork", "spawn"):
        ctx = mp.get_context(method)
        go, out = ctx.Queue(), ctx.Queue()
        p = ctx.Process(target=_report_epoch_after, args=(e, go, out))
        p.start()
        e.set(9)                       # set after the child started: the child still sees it
        go.put("go")
        assert out.get(timeout=60) == 9, method
        p.join(60)
        e.set(5)


def _report_epoch_after(epoch, go, out):
    go.get(timeout=60)
    out.put(epoch.get())

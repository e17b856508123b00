"""lidarseg.integrations.mmseg: the subclassified loss inside mmsegmentation 1.x (skipped without mmseg).

Interface checks against mmseg's own CrossEntropyLoss and a plain transcription of the published loss (with a
pixel sampler's weight); a real mmengine Runner training a tiny SegFormer on Cityscapes-format PNGs written here,
resumed from its checkpoint; PointRend's point head with the loss; the configs under configs/mmseg/.
"""
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("mmseg", reason="mmsegmentation is not installed (pip install -e '.[mmseg]')")
mm = pytest.importorskip("lidarseg.integrations.mmseg")

from mmseg.models.losses import CrossEntropyLoss  # noqa: E402  (after the plug-in installed mmcv.ops)
from mmseg.registry import MODELS  # noqa: E402

from lidarseg.losses.subclassified import SubclassifiedLoss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TYPE = "SubclassifiedCrossEntropyLoss"


def build(**cfg):
    return MODELS.build(dict(type=TYPE, **cfg))


def scene(B=2, C=5, H=64, W=96, seed=0, ignore=255):
    """Network-like logits on a block label map: a strong class score, a smooth field shared by neighbours and
    noise, so that same-label pixels form subclasses of many sizes; a band of ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(B, H, W, dtype=torch.long)
    for b in range(B):
        for _ in range(12):
            r0, c0 = (int(v) for v in torch.randint(0, H - 8, (1,), generator=g).tolist() +
                      torch.randint(0, W - 8, (1,), generator=g).tolist())
            h, w = (int(v) for v in torch.randint(4, 24, (2,), generator=g))
            y[b, r0:r0 + h, c0:c0 + w] = int(torch.randint(0, C, (1,), generator=g))
    y[:, :5] = ignore
    yy = y.clamp(max=C - 1)
    field = F.interpolate(torch.randn(B, C, 4, 6, generator=g), size=(H, W), mode="bilinear", align_corners=False)
    x = 4.0 * F.one_hot(yy, C).permute(0, 3, 1, 2).float() + 0.2 * field + 0.05 * torch.randn(B, C, H, W, generator=g)
    return x.requires_grad_(True), y


def published_loss(s, y, weight, tau=0.98, eps=10.0, p=0.5):
    """Plain transcription of the published file for one image (batch 1, where its broadcast is exact):
    dense N_q x N_r similarity, ignored pixels a label of their own, mean over all pixels of CE * weight * w."""
    _, C, H, W = s.shape
    with torch.no_grad():
        r = F.interpolate(s, (H // 8, W // 8), mode="bilinear").view(1, C, -1)
        q = F.interpolate(s, (H // 4, W // 4), mode="bilinear").view(1, C, -1)
        yr = F.interpolate(y[:, None].float(), (H // 8, W // 8), mode="nearest").view(1, -1).long()
        yq = F.interpolate(y[:, None].float(), (H // 4, W // 4), mode="nearest").view(1, -1).long()
        nq, nr = (q * q).sum(1)[0], (r * r).sum(1)[0]
        den = torch.maximum(nq[:, None], nr[None, :]) + 1e-5
        sim = (q[0].T @ r[0]) / den
        same = (yq[0][:, None] == yr[0][None, :]).float()
        k = ((sim * same) > tau).sum(1).float()
        wq = 1.0 / torch.pow(k + eps, p)
        w = F.interpolate(wq.view(1, 1, H // 4, W // 4), size=(H, W), mode="bilinear")
        w = torch.clamp(w / w.mean(dim=(2, 3), keepdim=True), max=10.0)[:, 0]
    ce = F.cross_entropy(s, y, ignore_index=255, reduction="none") * weight
    return torch.mean(ce * w)


# ------------------------------------------------------------------------------------------------- interface
def test_registered_loss_equals_subclassified_loss_and_weights_are_not_uniform():
    x, y = scene()
    for avg_non_ignore, normalize in ((False, "official"), (True, "valid")):
        plug = build(avg_non_ignore=avg_non_ignore)
        ref = SubclassifiedLoss(normalize=normalize, ignore_index=255)
        got, want = plug(x, y, ignore_index=255), ref(x, y)
        assert torch.equal(got, want)
        g1, = torch.autograd.grad(got, x)
        g2, = torch.autograd.grad(want, x)
        assert torch.equal(g1, g2)
    w = plug.last_weight_map[y != 255]
    assert w.std() > 0.1 and w.max() > 1.5 * w.min()      # the scene does make subclasses of different sizes


def test_official_mode_with_sampler_weight_equals_published_transcription():
    x, y = scene(B=1, seed=3)
    weight = (torch.rand(y.shape, generator=torch.Generator().manual_seed(1)) > 0.3).float()
    plug = build(avg_non_ignore=False, loss_weight=0.7)
    got = plug(x, y, weight=weight, ignore_index=255)
    want = 0.7 * published_loss(x, y, weight)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(got, 0.7 * published_loss(x, y, torch.ones_like(weight)), rtol=1e-3)
    g1, = torch.autograd.grad(got, x)
    g2, = torch.autograd.grad(want, x)
    assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("avg_non_ignore", [False, True])
def test_uniform_weights_equal_mmseg_cross_entropy(avg_non_ignore):
    """threshold above 1 -> every subclass is empty -> uniform weights: the loss is mmseg's CE with the same
    avg_non_ignore, with and without a pixel sampler's weight, on images and on point logits."""
    x, y = scene(seed=1)
    plug = build(threshold=2.0, avg_non_ignore=avg_non_ignore)
    ce = CrossEntropyLoss(avg_non_ignore=avg_non_ignore)
    weight = (torch.rand(y.shape, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    for wt in (None, weight):
        got, want = plug(x, y, weight=wt, ignore_index=255), ce(x, y, weight=wt, ignore_index=255)
        assert torch.allclose(got, want, rtol=1e-5), (wt is None, got, want)
    xp, yp = x.detach().flatten(2)[..., ::7], y.flatten(1)[..., ::7]           # [B,C,P], [B,P]
    assert torch.allclose(build(avg_non_ignore=avg_non_ignore)(xp, yp, ignore_index=255),
                          ce(xp, yp, ignore_index=255), rtol=1e-5)


def test_ignore_255_is_ignored_and_255_is_the_default():
    x, y = scene(seed=2)
    plug = build(avg_non_ignore=True)
    assert plug.ignore_index == 255
    base = plug(x, y, ignore_index=255)
    x2 = x.detach().clone()
    x2[:, :, :5] = torch.randn_like(x2[:, :, :5]) * 50         # scores of the ignored band change arbitrarily
    assert torch.allclose(plug(x2, y, ignore_index=255), base, rtol=1e-6)
    g, = torch.autograd.grad(plug(x, y), x)
    assert g[:, :, :5].abs().max() == 0 and g[:, :, 5:].abs().max() > 0
    y0 = y.clone()                                               # class 0 is a class, not ignored
    assert (y0 == 0).any()
    assert plug.last_weight_map[y0 == 0].min() > 0


def test_mmseg_interface_errors():
    with pytest.raises(ValueError, match="must start with 'loss_'"):
        build(loss_name="subcls")
    with pytest.raises(ValueError, match="avg_non_ignore instead of normalize"):
        build(normalize="valid")
    with pytest.raises(ValueError, match="unknown option.*thresold"):
        build(thresold=0.9)
    with pytest.raises(ValueError, match="use_sigmoid"):
        build(use_sigmoid=True)
    assert build(use_sigmoid=False, loss_name="loss_x").loss_name == "loss_x"
    x, y = scene(B=1)
    plug = build()
    with pytest.raises(ValueError, match="head passes ignore_index=0.*configured with ignore_index=255"):
        plug(x, y, ignore_index=0)
    with pytest.raises(ValueError, match="weight shape"):
        plug(x, y, weight=torch.ones(1, 1, *y.shape[1:]), ignore_index=255)
    with pytest.raises(TypeError, match="unsupported argument"):
        plug(x, y, ignore_index=255, extra=1)
    with pytest.raises(ValueError, match="target value 7 out of range"):
        plug(x, torch.where(y == 1, 7, y), ignore_index=255)


def test_class_weight_list_and_file_and_reductions(tmp_path):
    x, y = scene(seed=4)
    cw = [1.0, 2.0, 0.5, 3.0, 1.5]
    np.save(tmp_path / "cw.npy", np.array(cw))
    a, b = build(class_weight=cw), build(class_weight=str(tmp_path / "cw.npy"))
    assert torch.equal(a(x, y, ignore_index=255), b(x, y, ignore_index=255))
    with pytest.raises(ValueError, match="cannot read class_weight file"):
        build(class_weight=str(tmp_path / "missing.npy"))
    # class-weighted per-pixel CE times the weight map, averaged over pixels (not over the sum of class weights)
    w = a.criterion.weights(x, y)
    ce = F.cross_entropy(x, y, weight=torch.tensor(cw), ignore_index=255, reduction="none")
    assert torch.allclose(a(x, y, ignore_index=255), (ce * w).mean(), rtol=1e-5)
    per = a(x, y, reduction_override="none", ignore_index=255)
    assert per.shape == y.shape and torch.allclose(per, ce * w, rtol=1e-5)
    assert torch.allclose(a(x, y, reduction_override="sum", ignore_index=255), (ce * w).sum(), rtol=1e-5)
    assert torch.allclose(a(x, y, avg_factor=100.0, ignore_index=255), (ce * w).sum() / 100.0, rtol=1e-5)


def test_point_logits_subclassified_mode_uses_every_point():
    x, y = scene(B=1, seed=5)
    xp, yp = x.detach().flatten(2)[..., ::5].contiguous(), y.flatten(1)[..., ::5].contiguous()
    plug = build(point_logits="subclassified", avg_non_ignore=True)
    ref = SubclassifiedLoss(normalize="valid", ignore_index=255, ref_stride=1, query_stride=1)
    assert torch.equal(plug(xp, yp, ignore_index=255), ref(xp, yp))
    assert not torch.allclose(plug(xp, yp, ignore_index=255), build(avg_non_ignore=True)(xp, yp, ignore_index=255))


def test_mmcv_ops_stand_in():
    from lidarseg.integrations import mmcv_ops
    import mmcv.ops
    if mmcv_ops.compiled_ops_available():
        pytest.skip("full mmcv with compiled ops: the stand-in is not installed")
    assert getattr(mmcv.ops, "__lidarseg_stand_in__", False)
    feat = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    ij = torch.tensor([[[0, 0], [3, 4], [1, 2]], [[2, 1], [0, 4], [3, 3]]])          # (row, col) per image
    pts = torch.stack([(ij[..., 1] + 0.5) / 5, (ij[..., 0] + 0.5) / 4], dim=-1)      # (x, y) of pixel centres
    out = mmcv.ops.point_sample(feat, pts)
    want = torch.stack([feat[b][:, ij[b, :, 0], ij[b, :, 1]] for b in range(2)])
    assert out.shape == (2, 3, 3) and torch.allclose(out, want)
    mid = mmcv.ops.point_sample(feat, torch.tensor([[[0.2, 0.125]]]).expand(2, 1, 2))  # halfway, pixels (0,0),(0,1)
    assert torch.allclose(mid[..., 0], (feat[:, :, 0, 0] + feat[:, :, 0, 1]) / 2)
    with pytest.raises(ModuleNotFoundError):
        from mmcv.ops import CrissCrossAttention  # noqa: F401


def test_point_head_of_pointrend_trains_with_the_loss():
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    from mmengine.config import ConfigDict
    head = MODELS.build(dict(type="PointHead", in_channels=[8], in_index=[0], channels=16, num_fcs=2,
                             coarse_pred_each_layer=True, dropout_ratio=-1, num_classes=5, align_corners=False,
                             loss_decode=dict(type=TYPE, loss_weight=1.0)))
    x, y = scene(B=2, seed=6)
    feats = [torch.randn(2, 8, 16, 24)]
    samples = []
    for b in range(2):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=y[b:b + 1])
        samples.append(s)
    train_cfg = ConfigDict(num_points=256, oversample_ratio=3, importance_sample_ratio=0.75)
    losses = head.loss(feats, x.detach()[:, :, ::4, ::4], samples, train_cfg)
    assert set(losses) == {"pointloss_subcls", "acc_point"}
    loss = losses["pointloss_subcls"]
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)


class _Sneaky:
    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer
        return getattr, (HistoryBuffer, self.name)


def test_checkpoint_allow_list_permits_only_history_buffer_methods(tmp_path):
    import pickle
    torch.save({"ok": _Sneaky("mean")}, tmp_path / "ok.pth")
    from mmengine.logging.history_buffer import HistoryBuffer
    assert torch.load(tmp_path / "ok.pth", weights_only=True)["ok"] is HistoryBuffer.mean
    for name in ("__init__", "_set_default_statistics", "update", "register_statistics"):
        torch.save({"bad": _Sneaky(name)}, tmp_path / "bad.pth")
        with pytest.raises(pickle.UnpicklingError, match="not allowed"):
            torch.load(tmp_path / "bad.pth", weights_only=True)


# ------------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name, heads", [
    ("stdc1_subcls_4xb12-80k_cityscapes-512x1024.py", ["decode_head"]),
    ("pointrend_r50_subcls_4xb2-80k_cityscapes-512x1024.py", ["decode_head.0", "decode_head.1"]),
    ("segformer_mit-b0_subcls_8xb1-160k_cityscapes-1024x1024.py", ["decode_head"]),
])
def test_paper_configs_swap_the_loss(name, heads):
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / "configs" / "mmseg" / name))
    assert "lidarseg.integrations.mmseg" in cfg.custom_imports["imports"]
    for path in heads:
        node = cfg.model
        for part in path.split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        loss = node["loss_decode"]
        assert loss["type"] == TYPE, (path, loss)
        MODELS.build(loss)                                        # the options are valid
    assert cfg.train_cfg.max_iters in (80000, 160000)
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    model = MODELS.build(cfg.model)                               # the whole network builds with the loss
    built = model.decode_head if isinstance(model.decode_head, torch.nn.ModuleList) else [model.decode_head]
    assert [type(h.loss_decode).__name__ for h in built] == [TYPE] * len(heads)


def test_stdc_ohem_sampler_weight_reaches_the_loss():
    """STDC's decode head has an OHEM pixel sampler: mmseg hands its per-pixel weights to the loss, which uses them."""
    from mmengine.config import Config
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(str(ROOT / "configs" / "mmseg" / "stdc1_subcls_4xb12-80k_cityscapes-512x1024.py"))
    cfg.model.decode_head.sampler.update(thresh=0.01, min_kept=500)   # keep about the 500 hardest of 15104 pixels
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    seen = []
    loss = model.decode_head.loss_decode
    orig = loss.forward
    loss.forward = lambda *a, **k: (seen.append(k.get("weight")), orig(*a, **k))[1]
    _, y = scene(B=2, C=19, H=64, W=128, seed=8)
    samples = []
    for b in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(64, 128), pad_shape=(64, 128)))
        s.gt_sem_seg = PixelData(data=y[b:b + 1])
        samples.append(s)
    model.train()
    losses = model.loss(torch.randn(2, 3, 64, 128), samples)
    assert torch.isfinite(losses["decode.loss_subcls"])
    assert len(seen) == 1 and seen[0] is not None and seen[0].shape == y.shape
    kept = seen[0]
    assert 500 <= kept.sum() < 0.5 * (y != 255).sum()              # OHEM kept a subset of the valid pixels
    assert kept[y == 255].sum() == 0
    # without thresh the sampler ranks pixels by the loss itself (reduction_override='none': per-pixel loss map)
    model.decode_head.sampler.thresh = None
    seen.clear()
    losses = model.loss(torch.randn(2, 3, 64, 128), samples)
    assert torch.isfinite(losses["decode.loss_subcls"])
    assert len(seen) == 2 and seen[0] is None and seen[1] is not None
    assert seen[1].sum() == 2 * 500 and seen[1][y == 255].sum() == 0  # min_kept per image, hardest by our loss


# ------------------------------------------------------------------------------------------------- Runner
CLASSES = 19


def write_cityscapes(root: Path, n: int = 4, size=(64, 64)):
    """Cityscapes-format PNGs: leftImg8bit/train/<city>/*_leftImg8bit.png and gtFine/train/<city>/
    *_gtFine_labelTrainIds.png; each image is a few coloured rectangles whose colour is the class, plus 255."""
    import cv2
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, size=(CLASSES, 3))
    for split in ("train",):
        img_dir, ann_dir = root / "leftImg8bit" / split / "city", root / "gtFine" / split / "city"
        img_dir.mkdir(parents=True)
        ann_dir.mkdir(parents=True)
        for i in range(n):
            lab = np.full(size, 0, np.uint8)
            for c in (1, 2, 8, 13):
                r, q = rng.integers(0, size[0] - 16), rng.integers(0, size[1] - 16)
                lab[r:r + rng.integers(8, 32), q:q + rng.integers(8, 32)] = c
            lab[:3] = 255
            img = palette[np.minimum(lab, CLASSES - 1)].astype(np.float64)
            img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(img_dir / f"city_{i:06d}_000019_leftImg8bit.png"), img)
            cv2.imwrite(str(ann_dir / f"city_{i:06d}_000019_gtFine_labelTrainIds.png"), lab)


def tiny_segformer_cfg(data_root: Path, work_dir: Path, max_iters: int, resume: bool):
    from mmengine.config import Config
    norm_cfg = dict(type="BN", requires_grad=True)
    return Config(dict(
        default_scope="mmseg",
        custom_imports=dict(imports=["lidarseg.integrations.mmseg"], allow_failed_imports=False),
        work_dir=str(work_dir),
        randomness=dict(seed=0),
        env_cfg=dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                     dist_cfg=dict(backend="gloo")),
        log_level="WARNING",
        model=dict(
            type="EncoderDecoder",
            data_preprocessor=dict(type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53],
                                   std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
                                   size=(64, 64)),
            backbone=dict(type="MixVisionTransformer", in_channels=3, embed_dims=8, num_stages=4,
                          num_layers=[1, 1, 1, 1], num_heads=[1, 2, 4, 4], patch_sizes=[7, 3, 3, 3],
                          sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=2, qkv_bias=True,
                          drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0),
            decode_head=dict(type="SegformerHead", in_channels=[8, 16, 32, 32], in_index=[0, 1, 2, 3],
                             channels=32, dropout_ratio=0.0, num_classes=CLASSES, norm_cfg=norm_cfg,
                             align_corners=False,
                             loss_decode=dict(type=TYPE, loss_weight=1.0, avg_non_ignore=True)),
            train_cfg=dict(), test_cfg=dict(mode="whole")),
        train_dataloader=dict(
            batch_size=2, num_workers=0, persistent_workers=False,
            sampler=dict(type="InfiniteSampler", shuffle=True),
            dataset=dict(type="CityscapesDataset", data_root=str(data_root),
                         data_prefix=dict(img_path="leftImg8bit/train", seg_map_path="gtFine/train"),
                         pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                                   dict(type="PackSegInputs")])),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=10 ** 6),
        optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=0.005, weight_decay=0.0)),
        default_hooks=dict(timer=dict(type="IterTimerHook"),
                           logger=dict(type="LoggerHook", interval=1, log_metric_by_epoch=False),
                           param_scheduler=dict(type="ParamSchedulerHook"),
                           checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=max_iters),
                           sampler_seed=dict(type="DistSamplerSeedHook")),
        log_processor=dict(by_epoch=False),
        resume=resume,
        load_from=None,
    ))


def test_mmseg_runner_trains_and_resumes(tmp_path, monkeypatch):
    """mmengine's real Runner: 10 iterations of a tiny SegFormer with the registered loss; the loss decreases;
    the checkpoint holds only allow-listed types and resumes under torch's weights_only default."""
    from mmengine.runner import Runner
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    data, work = tmp_path / "cityscapes", tmp_path / "work"
    write_cityscapes(data)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner = Runner.from_cfg(tiny_segformer_cfg(data, work, max_iters=10, resume=False))
        head = runner.model.decode_head
        assert type(head.loss_decode).__name__ == TYPE
        runner.train()
    losses, _ = runner.message_hub.get_scalar("train/decode.loss_subcls").data
    assert len(losses) == 10 and np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses      # about 0.75x measured
    ckpt = work / "iter_10.pth"
    assert ckpt.exists()
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)) == []     # all allow-listed
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()                            # without the plug-in's allow-list:
    try:
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)))
        with pytest.raises(Exception, match="HistoryBuffer|getattr|weights_only"):
            torch.load(ckpt, weights_only=True)
    finally:
        torch.serialization.add_safe_globals(saved)
    allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"
               for g in mm.MMENGINE_CHECKPOINT_GLOBALS}
    assert "mmengine.logging.history_buffer.HistoryBuffer" in unsafe and unsafe <= allowed, unsafe - allowed
    state = torch.load(ckpt, weights_only=True)                         # torch's default since 2.6, explicit here
    buf = state["message_hub"]["log_scalars"]["train/decode.loss_subcls"]
    assert buf.current() == pytest.approx(losses[-1]) and buf.min() == pytest.approx(min(losses))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed = Runner.from_cfg(tiny_segformer_cfg(data, work, max_iters=12, resume=True))
        resumed.train()
    assert resumed.iter == 12
    after, _ = resumed.message_hub.get_scalar("train/decode.loss_subcls").data
    assert len(after) == 12 and np.allclose(after[:10], losses)         # history restored from the checkpoint
    assert np.mean(after[10:]) < np.mean(losses[:3])


def test_lidarseg_does_not_import_mmseg():
    import subprocess
    import sys
    code = ("import sys, lidarseg, lidarseg.losses, lidarseg.cli, lidarseg.bench.mmseg; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('mmseg', 'mmengine', 'mmcv')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_docs_standalone_adapter_matches_the_plug_in():
    """docs/loss.md's adapter for projects without lidarseg: with a sampler weight it equals the registered loss
    (avg_non_ignore=True <-> normalize='valid', avg_non_ignore=False <-> 'official')."""
    import re
    text = (ROOT / "docs" / "loss.md").read_text()
    ns = {}
    exec(compile(re.findall(r"```python\n(.*?)```", text, flags=re.S)[1], "docs/loss.md#mmseg", "exec"), ns)
    x, y = scene(seed=7)
    weight = (torch.rand(y.shape, generator=torch.Generator().manual_seed(3)) > 0.4).float()
    for normalize, avg_non_ignore in (("valid", True), ("official", False)):
        doc = ns["SubclassifiedCrossEntropyLoss"](loss_weight=0.5, normalize=normalize)
        plug = build(loss_weight=0.5, avg_non_ignore=avg_non_ignore)
        for wt in (None, weight):
            assert torch.allclose(doc(x, y, weight=wt, ignore_index=255), plug(x, y, weight=wt, ignore_index=255),
                                  rtol=1e-6)
    with pytest.raises(ValueError, match="loss_"):
        ns["SubclassifiedCrossEntropyLoss"](loss_name="subcls")

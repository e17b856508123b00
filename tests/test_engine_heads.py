"""Multi-head networks in the engine (CENet's auxiliary heads): per-head loss weights, every term in TensorBoard,
validation and inference on the main head, start-up check of train.head_weights."""
import pytest
import torch

from lidarseg.engine.config import load_config
from lidarseg.engine.trainer import Trainer
from lidarseg.errors import ConfigError
from lidarseg.losses import MultiHeadLoss, build_loss

TINY_CENET = ["model.name=cenet", "model.width=0.0625", "model.layers=[1,1,1,1]", "data.sensor.height=16",
              "data.sensor.width=64", "data.workers=0", "data.sequences.train=[0]", "data.sequences.valid=[8]",
              "data.sequences.test=[11]", "train.batch_size=2", "train.log_every=1", "train.progress=false",
              "val.batch_size=2", "val.knn=false", "val.images=false", "optim.lr=0.01", "train.device=cpu",
              "train.threads=1", "train.epochs=1",
              "loss=[{name: wce}, {name: lovasz, weight: 1.5}, {name: boundary, weight: 1.0}]"]

pytestmark = pytest.mark.usefixtures("keep_torch_threads")


def quiet(*a, **k):
    pass


def test_head_weights_sum_per_head_terms():
    torch.manual_seed(0)
    inner = build_loss([{"name": "wce"}, {"name": "lovasz", "weight": 1.5}, {"name": "boundary"}])
    heads = [torch.randn(2, 20, 8, 16) for _ in range(4)]
    y = torch.randint(0, 20, (2, 8, 16))
    per_head = [float(inner(h, y)) for h in heads]
    loss = MultiHeadLoss(inner, [1.0, 0.5, 0.25, 2.0])
    assert float(loss(heads, y)) == pytest.approx(per_head[0] + 0.5 * per_head[1] + 0.25 * per_head[2]
                                                  + 2.0 * per_head[3], rel=1e-6)
    terms = loss.last_terms
    assert {"wce", "lovasz", "boundary", "aux1", "aux1_wce", "aux3_boundary"} <= set(terms)
    assert float(terms["aux2"]) == pytest.approx(per_head[2], rel=1e-6)
    # null weights: every head counts once (CENet, lamda = 1); a single map passes straight through
    assert float(MultiHeadLoss(inner)(heads, y)) == pytest.approx(sum(per_head), rel=1e-6)
    assert float(MultiHeadLoss(inner)(heads[0], y)) == pytest.approx(per_head[0], rel=1e-6)
    with pytest.raises(ConfigError, match="2 entries but the model has 4"):
        MultiHeadLoss(inner, [1.0, 1.0], num_heads=4)
    with pytest.raises(ConfigError, match="head_weights"):
        MultiHeadLoss(inner, ["a"])


def test_cenet_trains_with_aux_heads_and_validates_on_main_head(training_root, tmp_path):
    cfg = load_config(None, [*TINY_CENET, f"data.root={training_root}", "train.head_weights=[1.0, 1.0, 1.0, 1.0]"])
    t = Trainer(cfg, tmp_path / "run", log=quiet)
    before = {k: v.clone() for k, v in t.model.state_dict().items() if "aux_head" in k}
    result = t.fit()
    assert not result["stopped"] and "miou_pixel" in result
    # the auxiliary heads were trained (their loss reached them)
    after = t.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    for tag in ("train/loss", "train/loss_wce", "train/loss_lovasz", "train/loss_boundary", "train/loss_aux1",
                "train/loss_aux3_boundary", "val/miou_pixel"):
        assert tag in tags, tag


def test_head_weights_length_checked_at_start_up(training_root, tmp_path):
    cfg = load_config(None, [*TINY_CENET, f"data.root={training_root}", "train.head_weights=[1.0, 0.5]"])
    with pytest.raises(ConfigError, match="train.head_weights has 2 entries but the model has 4"):
        Trainer(cfg, tmp_path / "run", log=quiet)


def test_progressive_resolution_chain_with_init_from(training_root, tmp_path):
    """CENet's recipe: train at one width, then start the next resolution from those weights (--init-from)."""
    from lidarseg.engine.checkpoint import load_checkpoint
    sched = ["schedule.name=cosine_restarts", "schedule.cycle_epochs=1", "schedule.warmup_epochs=0.5",
             "schedule.min_lr=1e-4", "val.every=0"]
    first = Trainer(load_config(None, [*TINY_CENET, f"data.root={training_root}", *sched]), tmp_path / "w64",
                    log=quiet)
    first.fit()
    cfg2 = load_config(None, [*TINY_CENET, f"data.root={training_root}", *sched, "data.sensor.width=128"])
    second = Trainer(cfg2, tmp_path / "w128", log=quiet, init_from=tmp_path / "w64" / "last.pt")
    saved = load_checkpoint(tmp_path / "w64" / "last.pt")["model"]
    for k, v in second.model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert second.step == 0 and second.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)  # fresh schedule
    assert not second.fit()["stopped"]


def test_init_from_a_released_reference_checkpoint(training_root, tmp_path):
    """--init-from also takes the reference's own files: CENet's trainer saves {'epoch', 'state_dict' (DataParallel
    'module.' keys), 'optimizer', 'info', 'scheduler'} as SENet_valid_best."""
    import numpy as np

    from models import build_model_from_config
    cfg = load_config(None, [*TINY_CENET, f"data.root={training_root}", "val.every=0"])
    torch.manual_seed(3)
    src = build_model_from_config(cfg["model"], num_classes=20)
    released = {"epoch": 7, "state_dict": {"module." + k: v for k, v in src.state_dict().items()},
                "optimizer": {"state": {}, "param_groups": []}, "info": {"best_val_iou": np.float64(0.6)},
                "scheduler": {}}
    torch.save(released, tmp_path / "SENet_valid_best")
    t = Trainer(cfg, tmp_path / "run", log=quiet, init_from=tmp_path / "SENet_valid_best")
    for k, v in src.state_dict().items():
        assert torch.equal(t.model.state_dict()[k], v), k
    torch.save({"state_dict": {k: v for k, v in src.state_dict().items() if "aux" not in k}}, tmp_path / "bad")
    from lidarseg.errors import DataError
    with pytest.raises(DataError, match="missing keys .*aux_head1"):
        Trainer(cfg, tmp_path / "run2", log=quiet, init_from=tmp_path / "bad")
    (tmp_path / "junk").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot read a weights file"):
        Trainer(cfg, tmp_path / "run3", log=quiet, init_from=tmp_path / "junk")

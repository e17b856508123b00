"""Short trainings on a handful of tiny synthetic scans: TensorBoard tags, checkpoints, exact resume after Ctrl-C,
non-finite loss, out-of-memory message, run-directory protection."""
import os
import signal

import pytest
import torch

from lidarseg.cli import main
from lidarseg.engine import builders
from lidarseg.engine.checkpoint import load_checkpoint
from lidarseg.engine.config import load_config
from lidarseg.engine.trainer import NonFiniteLoss, OutOfMemory, Trainer

TINY = ["model.name=rangenet21", "model.width=0.125", "model.blocks=[1,1,1,1,1]", "data.sensor.height=32",
        "data.sensor.width=128", "data.workers=0", "data.sequences.train=[0]", "data.sequences.valid=[8]",
        "data.sequences.test=[11]", "train.batch_size=2", "train.log_every=1", "train.progress=false",
        "val.batch_size=2", "optim.lr=0.02", "loss.name=subclassified", "train.device=cpu",
        "train.threads=1"]


pytestmark = pytest.mark.usefixtures("keep_torch_threads")  # train.threads=1 sets torch's thread count


@pytest.fixture
def root(training_root):
    return training_root


def cfg(root, *extra):
    return load_config(None, [*TINY, f"data.root={root}", *extra])


def quiet(*a, **k):
    pass


def test_train_writes_tags_checkpoints_and_config(root, tmp_path, capsys):
    out = tmp_path / "run"
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("train: {epochs: 2}\n")
    args = ["train", "--config", str(yaml_path), "--data", str(root), "--out", str(out)]
    for s in TINY:
        args += ["--set", s]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "resolved config:" in printed and "val epoch 2:" in printed and "waiting for data" in printed
    assert load_config(out / "config.yaml")["train"]["epochs"] == 2  # the saved config is a valid config
    state = load_checkpoint(out / "last.pt")
    assert {"config", "model", "optimizer", "scheduler", "scaler", "rng", "epoch", "step", "best_metric"} <= set(state)
    assert state["epoch"] == 2 and state["step"] == 4 and (out / "best.pt").is_file()
    assert state["config"]["data"]["root"] == str(root)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    scalars, images = set(ea.Tags()["scalars"]), set(ea.Tags()["images"])
    for tag in ("train/loss", "train/loss_subclassified", "train/lr", "train/grad_norm", "train/scans_per_s",
                "train/data_wait_share",
                "val/miou_pixel", "val/miou_point", "val/miou_point_knn", "val/iou_point/car",
                "val/iou_point_knn/road", "val/iou_pixel/road"):
        assert tag in scalars, tag
    assert {"val/range", "val/prediction", "val/ground_truth", "val/weight_map"} <= images
    assert [e.step for e in ea.Scalars("train/loss")] == [1, 2, 3, 4]

    # a second start into the same directory without --resume is refused
    assert main(args) == 2
    assert "--resume auto" in capsys.readouterr().err


def test_ctrl_c_then_resume_is_exact(root, tmp_path, monkeypatch):
    c = cfg(root, "train.epochs=2", "val.every=0", "data.augment={rotation: true, flip: true}")
    straight = Trainer(c, tmp_path / "a", log=quiet)
    straight.fit()

    real_step = Trainer.optimizer_step

    def step_then_interrupt(self):
        norm = real_step(self)
        if self.step == 3:  # in the middle of epoch 2
            os.kill(os.getpid(), signal.SIGINT)
        return norm
    monkeypatch.setattr(Trainer, "optimizer_step", step_then_interrupt)
    first = Trainer(c, tmp_path / "b", log=quiet)
    assert first.fit()["stopped"]
    monkeypatch.undo()
    mid = load_checkpoint(tmp_path / "b" / "last.pt")
    assert (mid["epoch"], mid["step"], mid["batch_in_epoch"]) == (1, 3, 1)

    resumed = Trainer(c, tmp_path / "b", resume=tmp_path / "b" / "last.pt", log=quiet)
    assert resumed.step == 3
    assert not resumed.fit()["stopped"] and resumed.step == straight.step == 4
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    sa, sb = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    for i in sa["state"]:
        torch.testing.assert_close(sa["state"][i]["momentum_buffer"], sb["state"][i]["momentum_buffer"],
                                   rtol=1e-5, atol=1e-6)
    assert straight.scheduler.state_dict()["last_epoch"] == resumed.scheduler.state_dict()["last_epoch"] == 4


def test_non_finite_loss_stops_and_keeps_last_good(root, tmp_path, monkeypatch):
    real = builders.loss

    def poisoned(cfg, lm):
        inner = real(cfg, lm)
        calls = {"n": 0}

        class Poison(torch.nn.Module):
            last_terms = {}

            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, logits, target):
                calls["n"] += 1
                loss = self.inner(logits, target)
                return loss * float("nan") if calls["n"] == 4 else loss  # step 4 = epoch 2, batch 2
        return Poison()
    monkeypatch.setattr(builders, "loss", poisoned)
    t = Trainer(cfg(root, "train.epochs=3", "val.every=0"), tmp_path / "r", log=quiet)
    with pytest.raises(NonFiniteLoss) as err:
        t.fit()
    msg = str(err.value)
    assert "step 3" in msg and "epoch 2, batch 2" in msg and "00/0000" in msg and "last.pt" in msg
    assert load_checkpoint(tmp_path / "r" / "last.pt")["epoch"] == 1


def test_out_of_memory_says_what_to_lower(root, tmp_path, monkeypatch):
    t = Trainer(cfg(root, "train.epochs=1", "val.every=0"), tmp_path / "o", log=quiet)

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(t, "forward", oom)
    with pytest.raises(OutOfMemory, match=r"train.batch_size.*model.width.*train.amp=bf16"):
        t.fit()


def test_too_few_scans_is_a_clear_error(root, tmp_path):
    from lidarseg.errors import LidarsegError
    with pytest.raises(LidarsegError, match="too few"):
        Trainer(cfg(root, "train.batch_size=8"), tmp_path / "x", log=quiet)


def test_kprnet_mode_trains_validates_and_infers(root, tmp_path, capsys):
    """The KPRNet path (point logits [B,C,N] against points_label): a tiny network, small geometry."""
    c = cfg(root, "model={name: kprnet, backbone: resnext26_32x4d, width: 0.25, head_width: 0.25}",
            "data.kprnet={height: 17, width: 257, out_height: 65, out_width: 513, crop_width: 129}",
            "loss={name: ohem, min_kept: 100}", "train.epochs=1", "val.knn=true", "data.limit_val=1")
    t = Trainer(c, tmp_path / "k", log=quiet)
    assert t.mode == "kprnet"
    metrics = t.fit()
    assert 0.0 <= metrics["miou_point"] <= 1.0 and "miou_pixel" not in metrics and "miou_point_knn" not in metrics
    assert main(["infer", "--checkpoint", str(tmp_path / "k" / "last.pt"), "--out", str(tmp_path / "p"),
                 "--no-progress", "--device", "cpu", "--limit", "1"]) == 0
    assert "not used (the network predicts every point)" in capsys.readouterr().out
    f = tmp_path / "p" / "sequences" / "08" / "predictions" / "000000.label"
    assert f.stat().st_size * 4 == (root / "sequences" / "08" / "velodyne" / "000000.bin").stat().st_size

"""Short trainings on a handful of tiny synthetic scans: TensorBoard tags, checkpoints, exact resume after Ctrl-C,
non-finite loss, out-of-memory message, run-directory protection; and, through `lidarseg train`, what must not go
silently wrong: resume semantics, config ranges, NaN gradients, stale temporaries, empty scans, worker errors, failed
checkpoint writes, bad --out."""
import math
import os
import signal

import pytest
import torch

from lidarseg.cli import main
from lidarseg.engine import builders
from lidarseg.engine.checkpoint import load_checkpoint, save_checkpoint
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


def test_persistent_workers_follow_the_epoch(root, tmp_path):
    """With one DataLoader worker started once for the whole run, three epochs of augmented training give exactly
    the weights of loading in the main process: the worker sees every epoch's augmentation stream."""
    aug = "data.augment={rotation: true, flip: true, scale: {}, dropout: {}}"
    ref = Trainer(cfg(root, "train.epochs=3", "val.every=0", aug), tmp_path / "w0", log=quiet)
    ref.fit()
    c = cfg(root, "train.epochs=3", "val.every=0", aug, "data.workers=1")
    t = Trainer(c, tmp_path / "w1", log=quiet)
    assert builders.epoch_reaches_workers(t.train_set)
    assert t._train_loader() is t._train_loader() and t._train_loader().persistent_workers
    t.fit()
    assert t._persistent_loader is None   # the worker is stopped at the end of fit
    for (name, a), b in zip(ref.model.state_dict().items(), t.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_ctrl_c_then_resume_is_exact(root, tmp_path, monkeypatch):
    c = cfg(root, "train.epochs=2", "val.every=0", "data.augment={rotation: true, flip: true}")
    straight = Trainer(c, tmp_path / "a", log=quiet)
    straight.fit()

    real_step = Trainer.optimizer_step

    def step_then_interrupt(self, *args):
        norm = real_step(self, *args)
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


def poison_loss(monkeypatch, at_call: int, where: str = "loss"):
    """builders.loss wrapped so that its `at_call`-th forward goes non-finite: where="loss" multiplies the loss by
    NaN; where="ignored" makes the logits of ignored pixels NaN, so the loss stays finite (CE skips those pixels)
    but the gradient is NaN, as for a network whose output went NaN there."""
    real = builders.loss
    calls = {"n": 0}

    def poisoned(cfg, lm):
        inner = real(cfg, lm)

        class Poison(torch.nn.Module):
            last_terms = {}

            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, logits, target):
                calls["n"] += 1
                hit = calls["n"] == at_call
                if hit and where == "ignored":
                    logits = logits + torch.where(target == 0, float("nan"), 0.0)[:, None]  # the NaN flows back
                loss = self.inner(logits, target)
                return loss * float("nan") if hit and where == "loss" else loss
        return Poison()
    monkeypatch.setattr(builders, "loss", poisoned)


def test_non_finite_loss_stops_and_keeps_last_good(root, tmp_path, monkeypatch):
    poison_loss(monkeypatch, at_call=4)  # step 4 = epoch 2, batch 2
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
    # test-time augmentation: KPRNet's flip votes; azimuth shifts are refused at start-up
    infer = ["infer", "--checkpoint", str(tmp_path / "k" / "last.pt"), "--no-progress", "--device", "cpu",
             "--limit", "1"]
    assert main([*infer, "--out", str(tmp_path / "tta"), "--tta", "flip"]) == 0
    assert "TTA 2 votes (horizontal flip)" in capsys.readouterr().out
    assert (tmp_path / "tta" / "sequences" / "08" / "predictions" / "000000.label").stat().st_size == f.stat().st_size
    assert main([*infer, "--out", str(tmp_path / "tta2"), "--tta", "flip,shift:2"]) == 2
    assert "KPRNet takes flip votes only" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ through the CLI
def train_cli(root, out, *sets, extra=()):
    """`lidarseg train` with the tiny config on `root` into `out`; returns the exit status."""
    from lidarseg import CONFIG_DIR
    args = ["train", "--config", str(CONFIG_DIR / "base.yaml"), "--data", str(root), "--out", str(out), *extra]
    for s in (*TINY, "val.every=0", "train.epochs=1", *sets):
        args += ["--set", s]
    return main(args)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def tb_events(run_dir) -> list:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    files = sorted((run_dir / "tb").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns)
    return [list(EventFileLoader(str(f)).Load()) for f in files]


def tb_scalar(run_dir, tag) -> dict:
    """{step: value} of a scalar over all event files, the later file winning (as TensorBoard shows a purge)."""
    out = {}
    for events in tb_events(run_dir):
        for e in events:
            for v in e.summary.value:
                if v.tag == tag:
                    out[e.step] = v.tensor.float_val[0] if v.HasField("tensor") else v.simple_value
    return out


def test_resume_refuses_settings_that_change_the_run(root, tmp_path, capsys):
    """The issue's case: --resume with a new lr and schedule used to print "the new values apply" and keep the old
    schedule. A resume continues the saved run; new optimizer/schedule settings need --init-from."""
    assert train_cli(root, tmp_path / "r") == 0
    capsys.readouterr()
    assert train_cli(root, tmp_path / "r", "optim.lr=0.0004", "schedule.name=constant", "train.epochs=4",
                     extra=["--resume", "auto"]) == 2
    err = one_error_line(capsys)
    assert "optim.lr" in err and "schedule.name" in err and "--init-from" in err and "train.epochs," not in err
    assert load_checkpoint(tmp_path / "r" / "last.pt")["step"] == 2  # nothing trained

    # --init-from: a new run from the weights, where the new settings really apply from its first step
    assert train_cli(root, tmp_path / "n", "optim.lr=0.0004", "schedule.name=constant",
                     extra=["--init-from", str(tmp_path / "r" / "last.pt")]) == 0
    assert "initialised the weights from" in capsys.readouterr().out
    # warm-up of one epoch (2 steps) from 0: step 1 uses lr/2, step 2 the full 4e-4 (logged for the step using it)
    assert tb_scalar(tmp_path / "n", "train/lr") == {1: pytest.approx(2e-4), 2: pytest.approx(4e-4)}
    assert load_checkpoint(tmp_path / "n" / "last.pt")["step"] == 2


def test_resume_with_more_epochs_extends_the_schedule(root, tmp_path, capsys):
    """Cosine over 1 epoch (2 steps), then resumed with train.epochs=3: the lr of steps 3..6 is the cosine over the
    new 6 steps (not clamped at min_lr), and train/lr at step s is the lr step s used."""
    cos = ["schedule.name=cosine", "schedule.warmup_epochs=0", "schedule.min_lr=0.001", "optim.lr=0.02"]
    run = tmp_path / "c"
    assert train_cli(root, run, *cos) == 0
    first = load_checkpoint(run / "last.pt")
    assert train_cli(root, run, *cos, "train.epochs=3", extra=["--resume", "auto"]) == 0
    assert "schedule now runs over 3 epochs" in capsys.readouterr().out

    def lr(t, total):  # docs/training.md's cosine, 0-based step t
        return 0.001 + (0.02 - 0.001) * (1 + math.cos(math.pi * t / total)) / 2
    logged = tb_scalar(run, "train/lr")
    assert logged[1] == pytest.approx(lr(0, 2)) and logged[2] == pytest.approx(lr(1, 2))
    for step in (3, 4, 5, 6):
        assert logged[step] == pytest.approx(lr(step - 1, 6), rel=1e-6), step
    assert load_checkpoint(run / "last.pt")["step"] == 6

    # TensorBoard: a run killed after its checkpoint logged steps 3..6; resuming from the step-2 checkpoint again
    # purges them (purge_step) instead of holding them twice
    save_checkpoint(run / "last.pt", first)
    assert train_cli(root, run, *cos, "train.epochs=3", extra=["--resume", "auto"]) == 0
    newest = tb_events(run)[-1]
    starts = [e.step for e in newest if e.HasField("session_log") and e.session_log.status == e.session_log.START]
    assert starts == [3]


def test_non_positive_clip_grad_and_ranges_are_refused_at_start(root, tmp_path, capsys):
    """Every case of the issue's list fails at start-up with one line naming the key (nothing is trained)."""
    for setting, key in [("train.clip_grad=-1", "train.clip_grad"), ("train.clip_grad=0", "train.clip_grad"),
                         ("train.epochs=0", "train.epochs"), ("train.epochs=-2", "train.epochs"),
                         ("schedule.warmup_epochs=-1", "schedule.warmup_epochs"),
                         ("train.accumulate=0", "train.accumulate"), ("data.limit_train=0", "data.limit_train"),
                         ("optim.lr=-0.01", "optim.lr"), ("optim.weight_decay=-1", "optim.weight_decay"),
                         ("data.workers=-1", "data.workers"), ("train.threads=-1", "train.threads"),
                         ("train.batch_size=0", "train.batch_size"), ("train.batch_size=-4", "train.batch_size"),
                         ("postproc.k=0", "postproc.k"), ("train=null", "'train'"),
                         ("data.sequences.train={a: }", "data.sequences.train")]:
        assert train_cli(root, tmp_path / "x", setting) == 2, setting
        assert key in one_error_line(capsys), setting
    assert not (tmp_path / "x").exists()


def test_nan_gradient_with_finite_loss_stops_or_skips(root, tmp_path, monkeypatch, capsys):
    poison_loss(monkeypatch, at_call=4, where="ignored")  # epoch 2, batch 2 (step 4)
    assert train_cli(root, tmp_path / "s", "loss.name=ce", "train.epochs=2") == 2
    err = one_error_line(capsys)
    assert "non-finite gradient norm" in err and "step 3 (epoch 2, batch 2)" in err and "00/0000" in err
    assert load_checkpoint(tmp_path / "s" / "last.pt")["epoch"] == 1  # the last good one

    poison_loss(monkeypatch, at_call=4, where="ignored")
    assert train_cli(root, tmp_path / "k", "loss.name=ce", "train.epochs=2", "train.non_finite=skip") == 0
    out = capsys.readouterr().out
    assert "warning: non-finite gradient norm" in out and "1 non-finite update(s) skipped" in out
    state = load_checkpoint(tmp_path / "k" / "last.pt")
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())

    poison_loss(monkeypatch, at_call=3, where="loss")  # a non-finite loss is skipped the same way
    assert train_cli(root, tmp_path / "l", "loss.name=ce", "train.epochs=2", "train.non_finite=skip") == 0
    out = capsys.readouterr().out
    assert "warning: non-finite loss (nan) at step 2 (epoch 2, batch 1)" in out and "1 non-finite update(s)" in out
    state = load_checkpoint(tmp_path / "l" / "last.pt")
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_stale_checkpoint_temporaries_removed_on_resume(root, tmp_path, capsys):
    run = tmp_path / "t"
    assert train_cli(root, run) == 0
    stale = [run / ".last.pt.k2j4h1x0.tmp", run / ".best.pt.abcd_123.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    other = run / ".notes.tmp"
    other.write_bytes(b"not ours")
    older = load_checkpoint(run / "last.pt")  # as written before train.non_finite existed: still resumable
    del older["config"]["train"]["non_finite"]
    save_checkpoint(run / "last.pt", older)
    assert train_cli(root, run, "train.epochs=2", extra=["--resume", "auto"]) == 0
    assert "removed" in capsys.readouterr().out
    assert not any(p.exists() for p in stale) and other.exists()


@pytest.fixture
def copied_root(root, tmp_path):
    import shutil
    dst = tmp_path / "data"
    shutil.copytree(root, dst)
    return dst


def test_scan_at_the_origin_is_warned_once_and_counted(copied_root, tmp_path, capsys):
    import numpy as np
    velodyne = copied_root / "sequences" / "00" / "velodyne"
    n = (velodyne / "000001.bin").stat().st_size // 16
    np.zeros((n, 4), np.float32).tofile(velodyne / "000001.bin")                 # every point at the origin
    n = (velodyne / "000002.bin").stat().st_size // 16
    np.full((n, 4), np.nan, np.float32).tofile(velodyne / "000002.bin")          # every point NaN
    assert train_cli(copied_root, tmp_path / "o", "train.epochs=2") == 0
    out = capsys.readouterr().out
    for scan in ("000001", "000002"):
        assert out.count(f"warning: scan 00/{scan} has no finite point away from the origin") == 1
    assert out.count("2 empty scan(s)") == 2  # counted in both epoch summaries


def test_data_error_in_a_worker_is_one_line(copied_root, tmp_path, capsys):
    label = copied_root / "sequences" / "00" / "labels" / "000002.label"
    label.write_bytes(label.read_bytes()[:-8])
    assert train_cli(copied_root, tmp_path / "w", "data.workers=1") == 2
    err = one_error_line(capsys)
    assert str(label) in err and "labels but its scan has" in err and "Traceback" not in err


def test_failed_checkpoint_write_names_the_file(root, tmp_path, monkeypatch, capsys):
    run = tmp_path / "f"
    assert train_cli(root, run) == 0
    capsys.readouterr()
    real = torch.save

    def disk_full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed")
    monkeypatch.setattr(torch, "save", disk_full)
    assert train_cli(root, run, "train.epochs=2", extra=["--resume", "auto"]) == 2
    monkeypatch.setattr(torch, "save", real)
    err = one_error_line(capsys)
    assert f"could not write checkpoint {run / 'last.pt'}" in err and "the previous last.pt is intact" in err
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and not list(run.glob(".*.tmp"))


def test_out_that_is_a_file_is_refused(root, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert train_cli(root, f) == 2
    assert f"--out {f}: is an existing file" in one_error_line(capsys)
    assert train_cli(root, f / "run") == 2
    assert f"{f} is a file, not a directory" in one_error_line(capsys)

"""DDP on CPU (gloo, 2 processes spawned here): one optimizer step of the real Trainer gives the same loss and the
same updated weights as one process on the same global batch.

The model has no BatchNorm: BatchNorm normalises with the statistics of each process's half of the batch, so it
cannot match one process exactly (SyncBatchNorm would, but torch implements it for GPUs only). Every pixel is
labelled, so each process's mean loss has the same normaliser and their average is the global-batch mean; with
ignored pixels the per-rank means weight pixels slightly differently (as in every DDP data-parallel loop).
"""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

H, W, C, N_SCANS = 8, 32, 20, 4


class TinyNoBN(nn.Module):
    input_mode = "range"

    def __init__(self, num_classes=C, in_channels=5, **_):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 1))

    def forward(self, x):
        return self.net(x)


def register():
    import models
    models.register_model("tiny_nobn_test")(lambda num_classes, in_channels, **o: TinyNoBN(num_classes, in_channels))


class FakeScans(torch.utils.data.Dataset):
    """Range-mode samples (the dataset's batch dict) with every pixel holding one labelled point."""

    def __len__(self):
        return N_SCANS

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(100 + i)
        label = torch.randint(1, C, (H, W), generator=g)
        x = torch.randn(5, H, W, generator=g)
        x[0] += label.float() / 4  # something to learn
        py, px = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        rng = torch.rand(H, W, generator=g) * 50 + 1
        return {"input": x, "mask": torch.ones(H, W, dtype=torch.bool), "label": label, "proj_range": rng,
                "px": px.reshape(-1), "py": py.reshape(-1), "unproj_range": rng.reshape(-1),
                "points_label": label.reshape(-1), "xyz": torch.zeros(H * W, 3), "remission": torch.zeros(H * W),
                "num_points": H * W, "sequence": "00", "scan": f"{i:06d}", "has_labels": True}


def cfg_for():
    from lidarseg.engine.config import load_config
    return load_config(None, ["model.name=tiny_nobn_test", "loss.name=ce", "train.batch_size=4", "train.epochs=1",
                              "val.every=0", "data.workers=0", "optim.lr=0.5", "schedule.name=constant",
                              "schedule.warmup_epochs=0", "train.progress=false", "train.device=cpu",
                              "train.clip_grad=1000", "train.threads=1"])


def run_one(run_dir, ctx=None):
    from lidarseg.engine.trainer import Trainer
    register()
    t = Trainer(cfg_for(), run_dir, ctx, datasets=(FakeScans(), None), log=lambda *a: None)
    t.fit()
    from lidarseg.engine.distributed import unwrap
    return t.epoch_loss, {k: v.detach().clone() for k, v in unwrap(t.model).state_dict().items()}, t.step


def _worker(rank, world, port, out_dir):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from lidarseg.engine import distributed
    ctx = distributed.init("cpu")
    try:
        loss, state, step = run_one(out_dir, ctx)
        torch.save({"loss": loss, "state": state, "step": step}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        distributed.shutdown(ctx)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")
def test_two_process_step_matches_single(tmp_path):
    torch.manual_seed(0)
    single_loss, single_state, single_step = run_one(tmp_path / "single")
    ddp_dir = tmp_path / "ddp"
    ddp_dir.mkdir()
    mp.spawn(_worker, args=(2, free_port(), str(ddp_dir)), nprocs=2, join=True)
    r0, r1 = (torch.load(ddp_dir / f"rank{r}.pt") for r in (0, 1))
    assert single_step == r0["step"] == r1["step"] == 1
    assert r0["loss"] == pytest.approx(single_loss, rel=1e-5) and r1["loss"] == pytest.approx(single_loss, rel=1e-5)
    for k, v in single_state.items():
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r1["state"][k], v, rtol=1e-5, atol=1e-6)
    assert (ddp_dir / "last.pt").is_file() and (ddp_dir / "tb").is_dir()  # written once, by rank 0


def test_sampler_shards_cover_the_global_batch():
    from lidarseg.engine import distributed as D
    ds = list(range(10))
    ctxs = [D.Context(rank=r, world_size=2) for r in range(2)]
    whole = D.train_sampler(ds, D.Context(), seed=3)
    parts = [D.train_sampler(ds, c, seed=3) for c in ctxs]
    for s in (whole, *parts):
        s.set_epoch(1)
    perm = list(whole)
    assert sorted(list(parts[0]) + list(parts[1])) == sorted(perm)
    assert list(parts[0])[:2] + list(parts[1])[:2] == [perm[0], perm[2], perm[1], perm[3]]
    whole.set_epoch(1, skip=4)
    assert list(whole) == perm[4:]
    shards = [list(D.eval_sampler(ds, c)) for c in ctxs]
    assert sorted(shards[0] + shards[1]) == ds

"""The engine on a CUDA device (skipped without one; scripts/gpu_check.sh runs them with `-m cuda`): a training
step under bf16 / fp16 autocast (fp16 with the GradScaler) and with channels_last is finite and close to the float32
step, and DDP over NCCL with one process takes exactly the step of the bare model."""
import socket

import pytest
import torch
from torch import nn

from lidarseg.engine import distributed
from lidarseg.engine.config import load_config
from lidarseg.engine.trainer import Trainer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

TINY = ["model.name=rangenet21", "model.width=0.25", "model.blocks=[1,1,1,1,1]", "data.sensor.height=64",
        "data.sensor.width=512", "data.workers=0", "data.sequences.train=[0]", "data.sequences.valid=[8]",
        "data.sequences.test=[11]", "train.batch_size=2", "train.epochs=1", "data.limit_train=2", "val.every=0",
        "train.progress=false", "optim.name=sgd", "optim.lr=0.01", "schedule.name=constant",
        "schedule.warmup_epochs=0", "loss.name=subclassified", "train.device=cuda", "train.log_every=1"]


def one_step(root, tmp_path, name, *extra):
    """(loss, parameters after the step, grad norm) of one optimizer step of the real Trainer."""
    cfg = load_config(None, [*TINY, f"data.root={root}", *extra])
    t = Trainer(cfg, tmp_path / name, distributed.init("cuda"), log=lambda *a, **k: None)
    t.initial = {k: v.detach().float().cpu().clone() for k, v in t.model.named_parameters()}
    t.fit()
    params = {k: v.detach().float().cpu() for k, v in t.model.named_parameters()}
    return t.epoch_loss, params, t


@pytest.mark.parametrize("amp,channels_last", [("bf16", False), ("fp16", False), ("bf16", True), ("none", True)])
def test_amp_and_channels_last_step_is_finite_and_close_to_fp32(training_root, tmp_path, amp, channels_last):
    loss32, p32, _ = one_step(training_root, tmp_path, "fp32")
    loss, p, t = one_step(training_root, tmp_path, f"{amp}-{channels_last}", f"train.amp={amp}",
                          f"train.channels_last={str(channels_last).lower()}")
    assert t.amp == amp and t.step == 1
    assert loss == pytest.approx(loss32, rel=0.05 if amp != "none" else 1e-4)
    for k, v in p32.items():
        assert torch.isfinite(p[k]).all(), k
        torch.testing.assert_close(p[k], v, rtol=0.05, atol=2e-3)
    moved = sum(int(not torch.equal(p[k], v)) for k, v in t.initial.items())
    skipped = amp == "fp16" and t.scaler.get_scale() < 65536.0   # inf grads at the initial scale: step skipped
    if amp == "fp16":
        assert t.scaler.is_enabled()
    assert skipped or moved > len(p32) // 2              # the step moved the weights, as the fp32 step did


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_nccl_one_process_takes_the_plain_step():
    torch.manual_seed(0)
    dev = torch.device("cuda", 0)
    x = torch.randn(4, 5, 32, 128, device=dev)
    y = torch.randint(0, 20, (4, 32, 128), device=dev)

    def model():
        torch.manual_seed(1)
        return nn.Sequential(nn.Conv2d(5, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                             nn.Conv2d(16, 20, 1)).to(dev)

    def step(m):
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        return loss.item(), {k: v.detach().clone() for k, v in m.state_dict().items()}

    cudnn = torch.backends.cudnn
    old = cudnn.benchmark, cudnn.deterministic
    cudnn.benchmark, cudnn.deterministic = False, True    # the same convolution algorithms in both runs
    try:
        plain_loss, plain = step(model())
        ddp_loss, state = ddp_step(step, model, dev)
    finally:
        cudnn.benchmark, cudnn.deterministic = old
    # the same step up to float rounding (a first GPU run, with cudnn.benchmark on, differed by 1 ulp in the loss)
    assert ddp_loss == pytest.approx(plain_loss, rel=1e-6)
    for k, v in plain.items():
        torch.testing.assert_close(state["module." + k], v, rtol=1e-6, atol=1e-7)


def ddp_step(step, model, dev):
    """`step` of a DistributedDataParallel model in a one-process NCCL group (and one NCCL all-reduce)."""
    import torch.distributed as dist
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{_port()}", rank=0, world_size=1)
    try:
        ctx = distributed.Context(rank=0, world_size=1, local_rank=0, device=dev)
        ddp = torch.nn.parallel.DistributedDataParallel(model(), device_ids=[0])
        ddp_loss, state = step(ddp)
        t = torch.tensor([2.0], device=dev)
        dist.all_reduce(t)
        assert dist.get_backend() == "nccl" and t.item() == 2.0 and ctx.is_main
    finally:
        dist.destroy_process_group()
    return ddp_loss, state

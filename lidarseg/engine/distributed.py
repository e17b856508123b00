"""Everything torch.distributed, in one place. One process or many, the trainer runs the same code:

- `init(device)` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK; MASTER_ADDR/PORT) and joins the
  process group (nccl on CUDA, gloo on CPU); without it the run is a world of one and no group is created.
- `train_sampler` / `eval_sampler`: a DistributedSampler (shuffled per epoch with seed + epoch, so every rank draws
  the same permutation and takes its share) and a padding-free shard for evaluation (every scan counted once).
- `wrap_model`: optional SyncBatchNorm, then DistributedDataParallel (gradients averaged across ranks).
- `all_reduce_sum`, `any_flag` and `is_main`: metrics are summed across ranks; logging and checkpoints are rank 0's.
The global batch is split evenly: each rank takes batch_size // world_size samples per step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

from ..errors import ConfigError


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init(device: str = "auto", backend: str | None = None) -> Context:
    """Join the process group torchrun describes in the environment (or none for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"), rank=rank, world_size=world)
    return Context(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shutdown(ctx: Context) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(global_batch: int, ctx: Context) -> int:
    if global_batch % ctx.world_size:
        raise ConfigError(f"train.batch_size {global_batch} is the global batch and must be divisible by the "
                          f"number of processes ({ctx.world_size})")
    return global_batch // ctx.world_size


class _Skip(Sampler):
    """The first `skip` indices of the wrapped sampler's epoch are dropped (resuming inside an epoch)."""

    def __init__(self, sampler: DistributedSampler):
        self.sampler, self.skip = sampler, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return iter(list(self.sampler)[self.skip:])

    def __len__(self) -> int:
        return len(self.sampler) - self.skip


def train_sampler(dataset, ctx: Context, seed: int, shuffle: bool = True) -> _Skip:
    """DistributedSampler for any world size (1 included); call `.set_epoch(epoch, skip=samples_done)`."""
    return _Skip(DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle,
                                    seed=seed, drop_last=True))


class ShardSampler(Sampler):
    """Indices rank, rank + W, rank + 2W, ...: every sample exactly once over all ranks, no padding."""

    def __init__(self, n: int, ctx: Context):
        self.indices = list(range(ctx.rank, n, ctx.world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def eval_sampler(dataset, ctx: Context) -> ShardSampler:
    return ShardSampler(len(dataset), ctx)


def wrap_model(model: torch.nn.Module, ctx: Context, sync_bn: bool = False) -> torch.nn.Module:
    """Move to the device; with more than one process: optional SyncBatchNorm, then DDP."""
    if ctx.distributed and sync_bn and ctx.device.type != "cpu":  # SyncBatchNorm is GPU-only in torch
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(ctx.device)
    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(tensor: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Sum a tensor over all ranks (in place, returned); a no-op for one process. gloo needs CPU tensors,
    nccl CUDA ones; the tensor is moved as needed and the result returned on its original device."""
    if not ctx.distributed:
        return tensor
    dev = ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")
    work = tensor.to(dev)
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    tensor.copy_(work.to(tensor.device))
    return tensor


def any_flag(flags: list[bool], ctx: Context) -> list[bool]:
    """Per flag: is it set on any rank? (One small all-reduce; used to stop all ranks together.)"""
    if not ctx.distributed:
        return [bool(f) for f in flags]
    t = torch.tensor([float(f) for f in flags])
    all_reduce_sum(t, ctx)
    return [bool(v > 0) for v in t.tolist()]


def broadcast_object(obj, ctx: Context):
    """Rank 0's `obj` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()

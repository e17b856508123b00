"""The training loop: one `Trainer` per process; the same code runs on one device or under torchrun.

    trainer = Trainer(cfg, run_dir, distributed.init(cfg["train"]["device"]), resume="auto")
    trainer.fit()

Per epoch: seeded sampler/workers, forward (AMP on CUDA), loss, backward (accumulated), unscale + clip, optimizer
and per-step scheduler, TensorBoard scalars every `log_every` steps; then validation every `val.every` epochs and
the checkpoints `last.pt` (every epoch) and `best.pt` (best validation point mIoU), written on rank 0.
"""
from __future__ import annotations

import contextlib
import math
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import ConfigError, LidarsegError
from . import builders, distributed
from .checkpoint import load_checkpoint, remove_stale_temporaries, rng_state, save_checkpoint, set_rng_state
from .config import DEFAULTS_PATH, RESUME_MAY_CHANGE, changed_keys, diff, dump, merge, read_yaml
from ..data.representation import representation_of
from .evaluator import Evaluator
from .logging import Logger
from .schedule import build_optimizer, build_scheduler


class NonFiniteLoss(LidarsegError):
    """The loss or the gradient norm became NaN or infinite; the run stops without overwriting the last good
    checkpoint (with train.non_finite: stop)."""


class OutOfMemory(LidarsegError):
    """CUDA ran out of memory; the message says what to lower."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    """DataLoader worker: seeds derived from the loader's generator (so from train.seed, epoch and rank), and
    Ctrl-C left to the main process, which saves a checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729) % 2**31


def _timed(iterable, waits: list):
    """Yield from `iterable`, appending to `waits` the seconds each item took to arrive (time the loop spent
    waiting for the DataLoader: the GPU is idle then)."""
    it = iter(iterable)
    while True:
        t = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        waits.append(time.perf_counter() - t)
        yield item


class _StopFlag:
    """SIGINT/SIGTERM set a flag the loop polls after each optimizer step; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.set, self._old = False, {}

    def _handle(self, signum, frame):
        if self.set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.set = True
        print("\nstop requested: finishing this step, saving a checkpoint (Ctrl-C again to abort now)", flush=True)

    def __enter__(self):
        with contextlib.suppress(ValueError):  # not the main thread: no handlers, Ctrl-C behaves as usual
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def unwrap_worker_error(exc: LidarsegError) -> LidarsegError:
    """A LidarsegError raised in a DataLoader worker arrives re-raised with the worker's whole traceback in its
    message; return the same error with only the original message (as with data.workers: 0)."""
    text = str(exc)
    if "Original Traceback" not in text:
        return exc
    cls = type(exc)
    marker = f"{cls.__module__}.{cls.__qualname__}: "
    pos = text.rfind(marker)
    return cls(text[pos + len(marker):].strip()) if pos >= 0 else exc


def _batches(loader):
    """Iterate a DataLoader, with input errors of its workers unwrapped to one line."""
    try:
        yield from loader
    except LidarsegError as exc:
        unwrapped = unwrap_worker_error(exc)
        if unwrapped is exc:
            raise
        raise unwrapped from None


def empty_scans(batch: dict) -> list[str]:
    """'SEQ/SCAN' of the scans of a batch without a single finite point away from the origin (they train as an
    empty image: no pixel, no loss)."""
    out = []
    xyz = batch["xyz"]
    for b, n in enumerate(batch["num_points"].tolist()):
        p = xyz[b, :n]
        if not bool((torch.isfinite(p).all(-1) & (p != 0).any(-1)).any()):
            out.append(f"{batch['sequence'][b]}/{batch['scan'][b]}")
    return out


class Trainer:
    def __init__(self, cfg: dict, run_dir, ctx: distributed.Context | None = None, resume: str | Path | None = None,
                 log=print, datasets: tuple | None = None, init_from: str | Path | None = None):
        """`resume`: a checkpoint of this run to continue exactly; `init_from`: a checkpoint whose weights start a
        new run (optimizer, schedule and step start afresh). `datasets` = (train, val or None) replaces the ones the
        config describes (tests, custom data); they must yield the batch dict of the model's representation."""
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.ctx = ctx or distributed.Context()
        self.log = log if self.ctx.is_main else (lambda *a, **k: None)
        tcfg = cfg["train"]
        self.device = self.ctx.device
        self.seed = int(tcfg["seed"])
        if tcfg["threads"]:
            torch.set_num_threads(int(tcfg["threads"]))
        seed_everything(epoch_seed(self.seed, 0, self.ctx.rank))
        if tcfg["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        self.label_map = builders.label_map(cfg)
        model = builders.model(cfg, self.label_map)
        self.rep = representation_of(model)   # what the model consumes and how its logits map to points
        self.mode = self.rep.name
        from ..losses import MultiHeadLoss
        self.loss_fn = MultiHeadLoss(builders.loss(cfg, self.label_map), tcfg["head_weights"],
                                     getattr(model, "num_heads", None)).to(self.device)
        if datasets is not None:
            self.train_set, self.val_set = datasets
        else:
            source = builders.scan_source(cfg, self.label_map)
            self.train_set = builders.dataset(cfg, "train", self.rep, self.label_map, source=source)
            self.val_set = (builders.dataset(cfg, "val", self.rep, self.label_map, source=source)
                            if cfg["val"]["every"] else None)

        self.batch = distributed.per_rank_batch(int(tcfg["batch_size"]), self.ctx)
        self.accumulate = max(1, int(tcfg["accumulate"]))
        self.sampler = distributed.train_sampler(self.train_set, self.ctx, self.seed)
        batches = len(self.sampler) // self.batch
        self.steps_per_epoch = batches // self.accumulate
        if self.steps_per_epoch < 1:
            raise LidarsegError(
                f"the training split has {len(self.train_set)} scans: too few for one optimizer step of "
                f"{self.batch} x {self.ctx.world_size} process(es) x accumulate {self.accumulate}; lower "
                "train.batch_size or train.accumulate")
        self.epochs = int(tcfg["epochs"])

        self.amp = tcfg["amp"] if self.device.type == "cuda" else "none"
        if tcfg["amp"] != "none" and self.amp == "none":
            self.log(f"note: train.amp={tcfg['amp']} needs CUDA; training in float32 on {self.device}")
        self.channels_last = bool(tcfg["channels_last"]) and self.rep.image_output
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(model.parameters(), cfg["optim"])
        self.scheduler = build_scheduler(self.optimizer, cfg["schedule"], cfg["optim"]["lr"], self.steps_per_epoch,
                                         self.epochs)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        self.epoch, self.step, self.batch_in_epoch = 0, 0, 0
        self.best_metric, self.best_epoch, self.last_metrics = -1.0, -1, {}
        self._resume_rng = None
        self._empty_seen: set[str] = set()
        self._warm: set[int] = set()          # datasets already loaded once in this process (see _loader)
        self._persistent_loader: DataLoader | None = None   # see _train_loader
        if self.ctx.is_main:
            for tmp in remove_stale_temporaries(self.run_dir):
                self.log(f"removed {tmp} (left by a checkpoint write that was killed)")
        if resume is not None:
            self._load(resume, model)
        elif init_from is not None:
            self._init_weights(init_from, model)
        self.model = distributed.wrap_model(model, self.ctx, sync_bn=bool(tcfg["sync_bn"]))
        # TensorBoard: events a killed run logged after its last checkpoint are dropped (purge_step)
        self.logger = Logger(self.run_dir / "tb", enabled=self.ctx.is_main,
                             purge_step=self.step + 1 if self.step else None)

    # ------------------------------------------------------------------------------------------------ state
    def _init_weights(self, path, model) -> None:
        """Weights only, strictly, from a lidarseg checkpoint or a released file of the reference code (CENet's
        `SENet_valid_best`, SalsaNext's `SalsaNext`: `models.read_weights`)."""
        from ..models import load_state_dict_strict, read_weights
        load_state_dict_strict(model, read_weights(path), source=f"checkpoint {path}")
        model.to(self.device)
        self.log(f"initialised the weights from {path}; optimizer, schedule and step start afresh")

    def _load(self, path, model) -> None:
        """Continue the run of checkpoint `path` exactly. Only keys that do not change what is trained may differ
        (RESUME_MAY_CHANGE); a longer or shorter train.epochs recomputes the schedule for the new total."""
        from ..models import load_state_dict_strict
        state = load_checkpoint(path)
        # keys added to base.yaml after the checkpoint was written take their defaults
        old_cfg = merge(read_yaml(DEFAULTS_PATH), state["config"])
        keys = changed_keys(old_cfg, self.cfg)
        fixed = [k for k in keys if not any(k == p or (p.endswith(".") and k.startswith(p)) for p in RESUME_MAY_CHANGE)]
        if fixed:
            raise ConfigError(
                f"--resume {path}: a resume continues the saved run exactly, but the config changes "
                f"{', '.join(fixed)} ({'; '.join(diff(old_cfg, self.cfg)[:3])}); to train these weights "
                "with new settings start a new run with --init-from CHECKPOINT (fresh optimizer and schedule)")
        if int(state["epoch"]) > self.epochs:
            raise ConfigError(f"--resume {path}: train.epochs={self.epochs} is below the {state['epoch']} epochs "
                              "the checkpoint has already trained")
        load_state_dict_strict(model, state["model"], source=f"checkpoint {path}")
        model.to(self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        # the schedule is rebuilt from the config (not loaded: LambdaLR's state holds the old total step count),
        # then moved to the saved step; with an unchanged config this is the saved scheduler state
        self.scheduler.last_epoch = int(state["step"])
        fn = self.scheduler.lr_lambdas[0]
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * fn(int(state["step"]))
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        self.best_metric, self.best_epoch = float(state["best_metric"]), int(state["best_epoch"])
        self.last_metrics = state.get("metrics") or {}
        self._resume_rng = state.get("rng") if self.ctx.is_main else None
        where = f"epoch {self.epoch}" + (f", batch {self.batch_in_epoch}" if self.batch_in_epoch else "")
        self.log(f"resumed from {path}: step {self.step}, {where}")
        changed = diff(old_cfg, self.cfg)
        if changed:
            self.log("note: the config differs from the checkpoint's in keys that do not change what is trained "
                     "(the new values apply):\n  " + "\n  ".join(changed))
        if "train.epochs" in keys:
            self.log(f"note: the learning-rate schedule now runs over {self.epochs} epochs "
                     f"({self.epochs * self.steps_per_epoch} steps); lr at step {self.step + 1}: "
                     f"{self.optimizer.param_groups[0]['lr']:.3g}")

    def state_dict(self) -> dict:
        return {"config": self.cfg, "model": distributed.unwrap(self.model).state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng_state(), "epoch": self.epoch, "step": self.step,
                "batch_in_epoch": self.batch_in_epoch, "best_metric": self.best_metric,
                "best_epoch": self.best_epoch, "metrics": self.last_metrics,
                "label_config": str(self.label_map.source), "world_size": self.ctx.world_size}

    def save(self, name: str) -> Path | None:
        if not self.ctx.is_main:
            return None
        return save_checkpoint(self.run_dir / f"{name}.pt", self.state_dict())

    # ------------------------------------------------------------------------------------------------ batches
    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, target) for either input mode; logits are cast to float32 for the loss. A multi-head model
        gives a list of logit maps (main head first)."""
        dev = self.device
        with torch.autocast(dev.type, dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16,
                            enabled=self.amp != "none"):
            logits = self.rep.forward(self.model, batch, dev, self.channels_last)
            target = self.rep.target(batch, dev)
        if isinstance(logits, (list, tuple)):
            return [t.float() for t in logits], target
        return logits.float(), target

    def _loader(self, dataset, sampler, batch_size: int, drop_last: bool, generator=None,
                persistent: bool = False) -> DataLoader:
        workers = int(self.cfg["data"]["workers"])
        if workers and len(dataset) and id(dataset) not in self._warm:
            # load one sample here first: the numba kernels of the readers and projections are then compiled (or
            # loaded from numba's cache) once, in this process, and the forked workers inherit them instead of
            # each loading them again before its first batch
            dataset[0]
            self._warm.add(id(dataset))
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                          num_workers=workers, collate_fn=self.rep.collate,
                          pin_memory=self.device.type == "cuda", worker_init_fn=_worker_init,
                          generator=generator, persistent_workers=persistent and workers > 0)

    def _train_loader(self) -> DataLoader:
        """The training loader. Its workers start once and serve every epoch when the dataset carries the epoch to
        them (`builders.epoch_reaches_workers`); the sampler runs in this process. Otherwise a loader per epoch
        (workers forked again, seeded from the epoch)."""
        if not builders.epoch_reaches_workers(self.train_set):
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, self.ctx.rank))
            return self._loader(self.train_set, self.sampler, self.batch, drop_last=True, generator=gen)
        if self._persistent_loader is None:
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, 0, self.ctx.rank))
            self._persistent_loader = self._loader(self.train_set, self.sampler, self.batch, drop_last=True,
                                                   generator=gen, persistent=True)
        return self._persistent_loader

    # ------------------------------------------------------------------------------------------------ loop
    def fit(self) -> dict:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.ctx.is_main:
            from ..data.io import atomic_write_bytes
            atomic_write_bytes(self.run_dir / "config.yaml", dump(self.cfg).encode())
        self.log(f"run {self.run_dir}: {self.mode} model, {len(self.train_set)} training scans, "
                 f"{self.steps_per_epoch} steps/epoch x {self.epochs} epochs, global batch "
                 f"{self.batch * self.ctx.world_size * self.accumulate}, {self.ctx.world_size} process(es) on "
                 f"{self.device}")
        try:
            with _StopFlag() as stop:
                while self.epoch < self.epochs:
                    if distributed.any_flag([stop.set], self.ctx)[0] or not self.train_epoch(stop):
                        self.save("last")
                        self.log(f"stopped at step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch});"
                                 f" checkpoint {self.run_dir / 'last.pt'}; continue with --resume auto")
                        return {"stopped": True, **self.last_metrics}
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    every = int(self.cfg["val"]["every"])
                    if self.val_set is not None and every and (self.epoch % every == 0 or self.epoch == self.epochs):
                        self.last_metrics = self.validate()
                        key = self.main_metric_name()
                        if self.last_metrics.get(key, -1.0) > self.best_metric:
                            self.best_metric, self.best_epoch = self.last_metrics[key], self.epoch
                            self.save("best")
                        self.log(self._val_line())
                    self.save("last")
        except torch.OutOfMemoryError:
            raise OutOfMemory(
                f"CUDA out of memory at step {self.step} (batch {self.batch} per process, "
                f"{self.cfg['data']['sensor']['height']}x{self.cfg['data']['sensor']['width']}, amp "
                f"{self.amp}). Lower train.batch_size (train.accumulate keeps the effective batch), the image "
                "width (data.sensor.width) or the model size (model.width), or enable train.amp=bf16 "
                "(or fp16)") from None
        finally:
            self.logger.close()
            self._persistent_loader = None   # its workers stop with the loader
        return {"stopped": False, **self.last_metrics}

    def main_metric_name(self) -> str:
        return "miou_point_knn" if self.rep.image_output and self.cfg["val"]["knn"] else "miou_point"

    def train_epoch(self, stop: _StopFlag) -> bool:
        """One epoch (or what is left of it); False when a stop was requested."""
        self.model.train()
        skip = self.batch_in_epoch
        seed_everything(epoch_seed(self.seed, self.epoch, self.ctx.rank))
        if skip and self._resume_rng is not None:
            set_rng_state(self._resume_rng)
        self._resume_rng = None
        builders.set_epoch(self.train_set, self.epoch)
        self.sampler.set_epoch(self.epoch, skip=skip * self.batch)
        loader = self._train_loader()
        total = self.steps_per_epoch * self.accumulate
        bar = self._bar(total, initial=skip, desc=f"epoch {self.epoch + 1}/{self.epochs}")
        self.optimizer.zero_grad(set_to_none=True)
        t0, seen, loss_sum, n_loss = time.perf_counter(), 0, 0.0, 0
        waits: list[float] = []
        empty, skipped, window = 0, 0, []
        for i, batch in enumerate(_timed(_batches(loader), waits), start=skip):
            if i >= total:
                break
            sync = (i + 1) % self.accumulate == 0
            window += [f"{s}/{n}" for s, n in zip(batch["sequence"], batch["scan"])]
            for name in empty_scans(batch):
                empty += 1
                if name not in self._empty_seen:
                    self._empty_seen.add(name)
                    self.log(f"warning: scan {name} has no finite point away from the origin: it trains as an "
                             "empty image (check the file)")
            with (self.model.no_sync() if self.ctx.distributed and not sync else contextlib.nullcontext()):
                logits, target = self.forward(batch)
                loss = self.loss_fn(logits, target)
                bad, = distributed.any_flag([not torch.isfinite(loss).item()], self.ctx)
                if bad:  # (with train.non_finite: skip) this batch adds no gradient and no epoch loss
                    self._non_finite(f"loss ({loss.item()})", window, self.batch_in_epoch + 1)
                    skipped += 1
                else:
                    self.scaler.scale(loss / self.accumulate).backward()
                    loss_sum, n_loss = loss_sum + loss.item(), n_loss + 1
            seen += len(batch["sequence"])
            self.batch_in_epoch = i + 1
            if not sync:
                continue
            lr = self.optimizer.param_groups[0]["lr"]  # the lr this step uses (the scheduler steps after it)
            grad_norm = self.optimizer_step(window)
            skipped += int(not math.isfinite(grad_norm)) if self.amp != "fp16" else 0
            window = []
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
            bar.update(self.accumulate)
            if self.step % int(self.cfg["train"]["log_every"]) == 0 or i + 1 == total:
                rate = seen * self.ctx.world_size / max(1e-9, time.perf_counter() - t0)
                terms = getattr(self.loss_fn, "last_terms", None) or {}
                scalars = {"loss": loss.item(), "lr": lr, "grad_norm": grad_norm, "scans_per_s": rate}
                scalars.update({f"loss_{k}": v for k, v in terms.items() if k != "loss"})
                self.logger.scalars(scalars, self.step, prefix="train/")
            stop_now, = distributed.any_flag([stop.set], self.ctx)
            if stop_now:
                bar.close()
                return False
        bar.close()
        dt = time.perf_counter() - t0
        totals = distributed.all_reduce_sum(torch.tensor([loss_sum, n_loss, seen], dtype=torch.float64), self.ctx)
        self.epoch_loss = float(totals[0] / max(1.0, float(totals[1])))  # mean over all ranks' batches
        first = waits[0] if waits else 0.0
        self.data_wait = {"seconds": sum(waits), "first_batch": first, "epoch": dt, "batches": len(waits)}
        after = (sum(waits) - first) / max(dt - first, 1e-9)     # steady state: workers started, queue filled
        self.log(f"epoch {self.epoch + 1}/{self.epochs}  step {self.step}  loss {self.epoch_loss:.4f}  "
                 f"lr {self.optimizer.param_groups[0]['lr']:.2e}  {float(totals[2]) / max(dt, 1e-9):.1f} "
                 f"scans/s  {dt:.0f} s  waiting for data {100 * sum(waits) / max(dt, 1e-9):.1f} % "
                 f"(first batch {1000 * first:.0f} ms, {100 * after:.1f} % after it)"
                 + (f"  {empty} empty scan(s)" if empty else "")
                 + (f"  {skipped} non-finite update(s) skipped" if skipped else ""))
        self.logger.scalars({"epoch_loss": self.epoch_loss, "data_wait_share": sum(waits) / max(dt, 1e-9)},
                            self.step, prefix="train/")
        return True

    def optimizer_step(self, scans=()) -> float:
        """Unscale, clip (or just measure) the gradient norm, step optimizer + scheduler; returns the norm. A
        non-finite norm (outside fp16, where the GradScaler skips such steps itself) stops the run or, with
        train.non_finite: skip, drops this update (the step still counts, so the schedule is unchanged)."""
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg["train"]["clip_grad"]
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(clip) if clip else math.inf)
        bad = False
        if self.amp != "fp16":
            bad, = distributed.any_flag([not bool(torch.isfinite(norm))], self.ctx)
            if bad:
                self._non_finite(f"gradient norm ({float(norm)})", scans, self.batch_in_epoch)
        if not bad:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return float(norm)

    def _non_finite(self, what: str, scans, batch: int) -> None:
        """Stop (train.non_finite: stop) or warn (skip) about a non-finite loss or gradient norm of batch `batch`
        (1-based) of this epoch."""
        where = (f"at step {self.step} (epoch {self.epoch + 1}, batch {batch}) on rank "
                 f"{self.ctx.rank}; scans: {', '.join(scans)}")
        if self.cfg["train"]["non_finite"] == "skip":
            self.log(f"warning: non-finite {what} {where}; this update is skipped (train.non_finite: skip)")
            return
        last = self.run_dir / "last.pt"
        kept = f"the last good checkpoint is {last} (epoch {self.epoch})" if last.is_file() else \
            "no checkpoint was written yet"
        self.logger.close()
        raise NonFiniteLoss(
            f"non-finite {what} {where}. Stopped; {kept}. Check those scans, lower optim.lr or set "
            "train.clip_grad (or train.non_finite=skip to drop such updates).")

    def _bar(self, total: int, initial: int, desc: str):
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True,
                    disable=not (self.ctx.is_main and self.cfg["train"]["progress"]))

    # ------------------------------------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict:
        from ..models import main_logits
        self.model.eval()
        cfg = self.cfg
        knn = builders.knn_params(cfg) if (cfg["val"]["knn"] and self.rep.image_output) else None
        ev = Evaluator(self.label_map.num_classes, self.label_map.ignore, self.device, pixel=self.rep.image_output,
                       knn=knn is not None)
        loader = self._loader(self.val_set, distributed.eval_sampler(self.val_set, self.ctx),
                              int(cfg["val"]["batch_size"]), drop_last=False)
        images = None
        for batch in _batches(loader):
            logits, target = self.forward(batch)
            logits = main_logits(logits)
            ev.add_batch(logits, batch, self.rep, knn)
            if images is None and self.ctx.is_main and cfg["val"]["images"] and self.rep.image_output:
                images = self._images(logits, target, batch)
        ev.all_reduce(self.ctx)
        metrics = ev.summary(self.label_map.names)
        if images:
            self.logger.images(images, self.step)
        self.logger.scalars({k: v for k, v in metrics.items() if not isinstance(v, dict)}, self.step, prefix="val/")
        for name, per_class in metrics.items():
            if isinstance(per_class, dict):
                self.logger.scalars(per_class, self.step, prefix=f"val/{name}/")
        self.logger.flush()
        self.model.train()
        return metrics

    def _images(self, logits, target, batch) -> dict:
        """TensorBoard panels of the batch's first scan; the weight panel comes from the first loss module that
        offers the `image_weights(logits, target) -> [B,H,W]` hook (e.g. the subclassified loss)."""
        from ..visualize import panels
        weights = None
        for module in self.loss_fn.modules():
            hook = getattr(module, "image_weights", None)
            if callable(hook):
                weights = hook(logits[:1], target[:1])[0].float().cpu().numpy()
                break
        return panels(self.label_map, batch["input"][0, 0].numpy(), batch["mask"][0].numpy(),
                      logits[0].argmax(0).cpu().numpy(), batch["label"][0].numpy(), weights)

    def _val_line(self) -> str:
        m = self.last_metrics
        parts = [f"val epoch {self.epoch}:"]
        for key, label in (("miou_pixel", "pixel mIoU"), ("miou_point", "point mIoU"),
                           ("miou_point_knn", "point mIoU+KNN")):
            if key in m:
                parts.append(f"{label} {100 * m[key]:.1f}")
        parts.append(f"(best {100 * self.best_metric:.1f} @ epoch {self.best_epoch})")
        return "  ".join(parts)

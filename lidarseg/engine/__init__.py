"""The training engine: configs, the loop, checkpoints, distributed helpers, schedules, logging and inference.

- `config`: YAML composition (`base:`), `--set` overrides, validation against configs/base.yaml
- `trainer.Trainer`: the loop (one process or torchrun/DDP), validation, checkpoints, TensorBoard
- `checkpoint`: one atomic file per checkpoint (config, model, optimizer, scheduler, scaler, RNG, progress)
- `distributed`: every torch.distributed detail (init from torchrun env, samplers, SyncBN/DDP, reductions)
- `schedule`: optimizers and the per-step warm-up + exponential/cosine learning-rate schedule
- `evaluator`: pixel and point confusion matrices (with/without KNN) during validation and inference
- `logging`: TensorBoard writer (rank 0); its range-image panels come from `lidarseg.visualize`
- `inference`: predict a split from a checkpoint, per-stage timing, submission files
- `builders`: config sections -> dataset, model, loss objects of the other packages
See docs/training.md.
"""

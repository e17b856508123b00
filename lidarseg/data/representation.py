"""Input representations by name: what a network consumes and how its logits become one label per point.

A model declares its representation with the class attribute `input_mode` (`"range"`: RangeNet++'s 5-channel
spherical range image; `"kprnet"`: KPRNet's unfolded 2-channel image plus per-point KPConv inputs);
`representation_of(model)` returns the registered `Representation`, and the engine (training, validation,
inference) only calls its methods:

- `dataset(cfg, source, split, sequences, train)`: the torch Dataset of samples built from a ScanSource;
- `collate(samples)`: the batch dict;
- `forward(model, batch, device, channels_last)`: logits (or a list of heads) from the batch;
- `target(batch, device)`: what the loss compares the logits with;
- `point_predictions(pred, batch, b, knn, num_classes)`: (labels of every point of the scan, their ground truth);
- `pixel_pairs(pred, batch)`: (predicted, true) labels of the image pixels for the pixel IoU, or None;
- `check_tta(tta)`, `tta_probs(model, batch, device, tta, dataset)`: test-time augmentation (`infer --tta`): which
  votes the family supports (ConfigError otherwise) and the softmax averaged over them;
- `example_inputs(batch, size, points, device, train)`: random inputs of the family's shapes (benchmarks).

A new input family: a `Representation` subclass decorated with `@register_representation("name")` here (or in a
module imported before the model is used), and models whose `input_mode` is that name.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError

REPRESENTATIONS: dict[str, "Representation"] = {}


def register_representation(name: str):
    def add(cls):
        cls.name = name
        REPRESENTATIONS[name] = cls()
        return cls
    return add


def get_representation(name: str) -> "Representation":
    if name not in REPRESENTATIONS:
        raise ConfigError(f"unknown input representation {name!r}; registered: {sorted(REPRESENTATIONS)}")
    return REPRESENTATIONS[name]


def representation_of(model) -> "Representation":
    """The representation a model declares (`input_mode`; range image when it declares none)."""
    inner = getattr(model, "module", model)  # DDP
    return get_representation(getattr(inner, "input_mode", "range"))


class Representation:
    name = "base"
    #: the network predicts pixels of a range image: KNN post-processing, pixel IoU, image panels, channels_last and
    #: MC-dropout variances per pixel apply
    image_output = False

    def dataset(self, cfg: dict, source, split: str, sequences, train: bool):
        raise NotImplementedError

    def collate(self, samples: list[dict]) -> dict:
        raise NotImplementedError

    def forward(self, model, batch: dict, device, channels_last: bool = False):
        raise NotImplementedError

    def target(self, batch: dict, device) -> torch.Tensor:
        raise NotImplementedError

    def point_predictions(self, pred: torch.Tensor, batch: dict, b: int, knn: dict | None, num_classes: int):
        raise NotImplementedError

    def pixel_pairs(self, pred: torch.Tensor, batch: dict):
        return None

    def check_tta(self, tta) -> None:
        if tta.active:
            raise ConfigError(f"--tta: test-time augmentation is not implemented for input_mode {self.name!r}")

    def tta_probs(self, model, batch: dict, device, tta, dataset) -> torch.Tensor:
        raise NotImplementedError

    def example_inputs(self, batch: int, size: tuple[int, int], points: int, device, train: bool):
        """Random inputs of this family's shapes for benchmarks: (forward arguments, target, shape label).
        `size`: the range image H x W where the family takes one; `points` per scan where it takes points."""
        raise NotImplementedError


@register_representation("range")
class RangeImage(Representation):
    """`lidarseg.data.dataset.SemanticKITTI` samples: input [B,5,H,W] -> logits [B,C,H,W]; each point takes its
    pixel's label (or RangeNet++'s KNN vote)."""
    image_output = True

    def dataset(self, cfg, source, split, sequences, train):
        from .dataset import SemanticKITTI
        d = cfg["data"]
        augment = None
        if train and d["augment"]:
            # a fixed seed makes each scan's augmentation a function of (seed, epoch, index): the same with any
            # number of workers or processes, and after a resume
            augment = {"seed": int(cfg["train"]["seed"]), **d["augment"]}
        return SemanticKITTI(source.root, split, sequences=sequences, sensor=d["sensor"],
                             normalization={"mean": d["mean"], "std": d["std"]}, augmentation=augment,
                             source=source, rows=d.get("rows", "elevation"))

    def collate(self, samples):
        from .dataset import collate
        return collate(samples)

    def forward(self, model, batch, device, channels_last=False):
        x = batch["input"].to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return model(x)

    def target(self, batch, device):
        return batch["label"].to(device, non_blocking=True)

    def point_predictions(self, pred, batch, b, knn, num_classes):
        from ..engine.evaluator import knn_labels, point_labels
        dev = pred.device
        n = int(batch["num_points"][b])
        px, py = batch["px"][b, :n].to(dev), batch["py"][b, :n].to(dev)
        if knn is not None:
            points = knn_labels(pred[b], batch["proj_range"][b].to(dev), batch["unproj_range"][b, :n].to(dev), px,
                                py, knn, num_classes)
        else:
            points = point_labels(pred[b], px, py)
        return points, batch["points_label"][b, :n].to(dev)

    def pixel_pairs(self, pred, batch):
        mask = batch["mask"].to(pred.device)
        return pred[mask], batch["label"].to(pred.device)[mask]

    def check_tta(self, tta):
        pass  # flips and azimuth shifts of the range image (lidarseg.engine.tta)

    def tta_probs(self, model, batch, device, tta, dataset):
        from ..engine.tta import tta_probs
        return tta_probs(model, batch["input"].to(device), batch["mask"], dataset.mean, dataset.std, tta)

    def example_inputs(self, batch, size, points, device, train):
        H, W = size
        x = torch.randn(batch, 5, H, W, device=device)
        return (x,), torch.randint(1, 20, (batch, H, W), device=device), f"{H}x{W}"


@register_representation("kprnet")
class KPRNetInput(Representation):
    """`lidarseg.data.kprnet.KPRNetDataset` samples: (image, px, py, xyz, knn) -> point logits [B,C,N] of the kept
    points (every point at evaluation), scattered back to the scan's point order."""
    INPUTS = ("image", "px", "py", "xyz", "knn")

    def dataset(self, cfg, source, split, sequences, train):
        from .kprnet import KPRNetDataset, KPRNetGeometry
        from .mixing import split_augment_config
        geom = KPRNetGeometry.from_config(cfg["data"]["kprnet"] or None)
        point_cfg, mix_cfg = split_augment_config(cfg["data"]["augment"])
        unused = sorted(set(point_cfg or {}) - {"seed", "enabled"})
        if train and unused:  # refused at training start-up rather than silently ignored
            raise ConfigError(f"data.augment: {unused} are point augmentations of range-image models; KPRNet draws "
                              "its own crop and flip (lidarseg.data.kprnet) and takes only the mixing keys "
                              "(lasermix, rangemix, rangeunion, rangeshift, polarmix, instancepaste)")
        mixing = mix_cfg if train else None
        return KPRNetDataset(source.root, split, train=train, seed=int(cfg["train"]["seed"]), geometry=geom,
                             sequences=sequences, source=source, mixing=mixing)

    def collate(self, samples):
        from .kprnet import collate_kprnet
        return collate_kprnet(samples)

    def forward(self, model, batch, device, channels_last=False):
        args = [batch[k].to(device, non_blocking=True) for k in self.INPUTS]
        return model(*args, point_mask=batch["point_mask"].to(device, non_blocking=True))

    def target(self, batch, device):
        return batch["points_label"].to(device, non_blocking=True)

    def check_tta(self, tta):
        if tta.shifts > 1:
            raise ConfigError("--tta: KPRNet takes flip votes only (an azimuth shift would need a new scan "
                              "unfolding); use --tta flip")

    def tta_probs(self, model, batch, device, tta, dataset):
        """Mean point softmax [B,C,N] over the plain input and, with `flip`, KPRNet's training flip (image columns
        reversed, px -> -px; xyz unchanged)."""
        from ..models import main_logits
        total = torch.softmax(main_logits(self.forward(model, batch, device)).float(), dim=1)
        if tta.flip:
            flipped = {**batch, "image": torch.flip(batch["image"], dims=[-1]), "px": -batch["px"]}
            total = total + torch.softmax(main_logits(self.forward(model, flipped, device)).float(), dim=1)
        return total / tta.votes

    def example_inputs(self, batch, size, points, device, train):
        """KPRNet's own sizes (`size` is not used): the 289 x 1025 training crop or the full 289 x 4097 image,
        `points` points with 7 neighbours each."""
        from .kprnet import KPRNetGeometry
        geom = KPRNetGeometry()
        H, W = geom.out_height, (geom.crop_width if train else geom.out_width)
        image = torch.randn(batch, 2, H, W, device=device)
        px = torch.rand(batch, points, device=device) * 2 - 1
        py = torch.rand(batch, points, device=device) * 2 - 1
        xyz = torch.randn(batch, points, 3, device=device) * 10
        knn = torch.randint(0, points, (batch, points, 7), device=device)
        y = torch.randint(1, 20, (batch, points), device=device)
        return (image, px, py, xyz, knn), y, f"{H}x{W}/{points}pt"

    def point_predictions(self, pred, batch, b, knn, num_classes):
        dev = pred.device
        n = int(batch["num_points"][b])
        index = batch["point_index"][b, :n].to(dev)
        size = int(index.max()) + 1 if n else 0
        size = max(size, n)
        points = torch.zeros(size, dtype=torch.int64, device=dev)
        gt = torch.zeros(size, dtype=torch.int64, device=dev)
        points[index] = pred[b, :n]
        gt[index] = batch["points_label"][b, :n].to(dev)
        return points, gt

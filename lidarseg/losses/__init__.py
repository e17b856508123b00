"""Losses (issue 4): the subclassified loss and the baselines it is compared to, built from a config.

    build_loss(cfg, label_map=None) -> nn.Module        forward(logits, target) -> scalar; .last_terms
    find_subclassified(loss) -> SubclassifiedLoss | None   (for logging weight maps)

`lidarseg.losses.subclassified` depends on torch only and can be used on its own. See docs/loss.md.
"""
from .baselines import CrossEntropyLoss, FocalLoss, LovaszSoftmaxLoss, OhemCrossEntropy
from .boundary import BoundaryLoss
from .builder import LOSSES, WeightedSumLoss, build_loss, find_subclassified
from .heads import MultiHeadLoss
from .subclassified import SubclassifiedLoss

__all__ = ["SubclassifiedLoss", "CrossEntropyLoss", "LovaszSoftmaxLoss", "FocalLoss", "OhemCrossEntropy",
           "BoundaryLoss", "MultiHeadLoss", "WeightedSumLoss", "build_loss", "find_subclassified", "LOSSES"]

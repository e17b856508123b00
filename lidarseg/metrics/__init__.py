"""Metrics: the confusion matrix and IoU as SemanticKITTI's evaluators compute them."""
from .confusion import ConfusionMatrix

__all__ = ["ConfusionMatrix"]

"""Post-processing of range-image predictions: back-projection of pixel labels to the points (RangeNet++'s KNN)."""
from .knn import gaussian_inverse_weights, knn_refine, knn_refine_numpy, knn_refine_torch

__all__ = ["knn_refine", "knn_refine_numpy", "knn_refine_torch", "gaussian_inverse_weights"]

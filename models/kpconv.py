"""Rigid KPConv (Thomas et al., ICCV 2019) as KPRNet uses it, and deterministic kernel point generation.

`kernel_points(radius, num_points, seed)` follows the recipe of KPConv's kernel dispositions (project spec
kprnet.md section 2.5): random candidate kernels in the unit ball with the first point fixed at the centre,
gradient descent on a repulsion potential sum 1/|x_a - x_b| plus an attraction 10*x toward the centre, rescaling so
that the mean norm of the non-centre points is 0.66, keeping the candidate with the smallest final gradient norm;
then (as done on every KPConv construction) N(0, 0.01^2) noise, scaling by the radius and a random rotation about z.
Everything is drawn from `numpy.random.default_rng(seed)`, so the same seed gives the same points on every machine.
The optimisation runs in memory (cached per process); nothing is written to or read from disk. The result is
stored in the module's state dict (`kernel_points`), so a checkpoint fixes it.
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np
import torch
from torch import nn

__all__ = ["kernel_points", "KPConv"]


@numba.njit(cache=True)
def _repulsion_descent(kp, max_iter):
    """Normalised gradient steps on E = sum_{a<b} 1/|x_a - x_b| + 5 sum_a |x_a|^2, point 0 fixed; step 1e-2
    decaying by 0.9995 per iteration, clipped to 0.05; stops when no gradient norm changes by more than 1e-5."""
    C, P, D = kp.shape
    kp = kp.copy()
    step, decay, clip, thresh = 1e-2, 0.9995, 0.05, 1e-5
    grad = np.zeros((C, P, D))
    norms = np.zeros((C, P))
    old = np.zeros((C, P))
    for _ in range(max_iter):
        for c in range(C):
            for a in range(P):
                for d in range(D):
                    grad[c, a, d] = 10.0 * kp[c, a, d]
                for b in range(P):
                    r2 = 0.0
                    for d in range(D):
                        r2 += (kp[c, a, d] - kp[c, b, d]) ** 2
                    inv = 1.0 / (r2 * np.sqrt(r2) + 1e-6)
                    for d in range(D):
                        grad[c, a, d] -= (kp[c, a, d] - kp[c, b, d]) * inv
                s = 0.0
                for d in range(D):
                    s += grad[c, a, d] ** 2
                norms[c, a] = np.sqrt(s)
        change = 0.0
        for c in range(C):
            for a in range(1, P):
                change = max(change, abs(old[c, a] - norms[c, a]))
        if change < thresh:
            break
        old[:, :] = norms
        for c in range(C):
            for a in range(1, P):
                move = min(step * norms[c, a], clip) / (norms[c, a] + 1e-6)
                for d in range(D):
                    kp[c, a, d] -= move * grad[c, a, d]
        step *= decay
    return kp, norms


@functools.lru_cache(maxsize=16)
def _optimised_unit_kernel(num_points: int, dimension: int, num_candidates: int, seed: int,
                           max_iter: int = 10000, ratio: float = 0.66) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # uniform candidates in the unit ball (rejection sampling from the cube)
    pts = np.empty((0, dimension))
    need = num_candidates * num_points
    while len(pts) < need:
        cand = rng.uniform(-1.0, 1.0, size=(2 * need, dimension))
        pts = np.concatenate([pts, cand[np.sum(cand ** 2, axis=1) < 1.0]])
    kp = pts[:need].reshape(num_candidates, num_points, dimension)
    kp[:, 0, :] = 0.0  # fixed 'center'
    kp, norms = _repulsion_descent(kp, max_iter)
    r = np.sqrt(np.sum(kp ** 2, axis=-1))
    kp = kp * (ratio / np.mean(r[:, 1:], axis=1))[:, None, None]
    best = int(np.argmin(np.max(norms[:, 1:], axis=1)))
    return kp[best]


def kernel_points(radius: float = 0.6, num_points: int = 15, seed: int = 0, dimension: int = 3,
                  num_candidates: int = 100, noise: float = 0.01, rotate: bool = True) -> np.ndarray:
    """Kernel point disposition [num_points, dimension] float32 in metres, point 0 near the centre.

    Deterministic for a given seed. With the defaults the 14 outer points lie at about 0.66*radius.
    """
    kp = _optimised_unit_kernel(num_points, dimension, num_candidates, seed).copy()
    rng = np.random.default_rng([seed, 1])
    kp = kp + rng.normal(scale=noise, size=kp.shape)
    kp = kp * radius
    if rotate and dimension == 3:
        theta = rng.uniform() * 2.0 * math.pi
        c, s = math.cos(theta), math.sin(theta)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        kp = kp @ rot.T
    return kp.astype(np.float32)


class KPConv(nn.Module):
    """Rigid kernel point convolution, linear influence, sum aggregation, no bias.

    out_i = sum_k sum_{j in knn(i)} max(0, 1 - |(p_j - p_i) - x_k| / extent) * f_j W_k

    forward(xyz [B,N,3], knn [B,N,M] long (indices into the same sample's N points), feats [B,N,C_in])
      -> [B,N,C_out]. Supports and queries are the same points, as in KPRNet.

    Parameters: `weights` [K,C_in,C_out] (the reference's name and layout) and `kernel_points` [K,3] metres,
    an `nn.Parameter` with requires_grad=False, as in the reference, so it is in the state dict and in
    `parameters()` (the published parameter count includes its 45 numbers) but never trained.
    """

    def __init__(self, in_channels: int = 256, out_channels: int = 256, num_kernel_points: int = 15,
                 radius: float = 0.6, extent: float = 1.2, seed: int = 0):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.K, self.radius, self.extent = num_kernel_points, radius, extent
        self.weights = nn.Parameter(torch.empty(num_kernel_points, in_channels, out_channels))
        kp = torch.from_numpy(kernel_points(radius, num_kernel_points, seed))
        self.kernel_points = nn.Parameter(kp, requires_grad=False)
        self.reset_parameters()

    def reset_parameters(self):
        # the reference: kaiming_uniform_(a=sqrt(5)) on [K,C_in,C_out]; torch's fan_in is C_in*C_out
        nn.init.kaiming_uniform_(self.weights, a=math.sqrt(5))

    def forward(self, xyz: torch.Tensor, knn: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        B, N, M = knn.shape
        knn = knn.long()
        idx = knn.reshape(B, N * M)
        nb_xyz = torch.gather(xyz, 1, idx[..., None].expand(-1, -1, 3)).reshape(B, N, M, 3)
        rel = nb_xyz - xyz[:, :, None, :]                                                   # [B,N,M,3]
        dist = torch.linalg.vector_norm(rel[:, :, :, None, :] - self.kernel_points.to(rel.dtype), dim=-1)
        h = torch.clamp(1.0 - dist / self.extent, min=0.0)                                # [B,N,M,K]
        nb_f = torch.gather(feats, 1, idx[..., None].expand(-1, -1, feats.shape[-1]))
        nb_f = nb_f.reshape(B, N, M, feats.shape[-1])                                       # [B,N,M,C]
        weighted = torch.einsum("bnmk,bnmc->bnkc", h.to(nb_f.dtype), nb_f)                 # [B,N,K,C]
        return torch.einsum("bnkc,kcd->bnd", weighted, self.weights)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, K={self.K}, radius={self.radius}, "
                f"extent={self.extent}")

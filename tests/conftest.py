"""Shared pytest fixtures: a tiny synthetic SemanticKITTI-format dataset and realistic in-memory scans.

- `synthetic_root` (session): Path of a dataset in a tmp dir with sequences 00 (train), 08 (valid) and 11 (test, no
  labels, as in SemanticKITTI), 3 scans each, 64 beams x 512 azimuth steps (about 30k points per scan).
- `synthetic_scan` (session): (points float32 [N,4], raw labels uint32 [N]) of one full-resolution scan
  (64 x 2048, about 120k points) of sequence 08.
- `make_synthetic_scan` (session): `make(sequence=0, index=0, seed=0, azimuth_steps=None, faults=None)` -> the same
  kind of pair, for tests that need other scans, fewer points or injected faults ({"nan": k, "zero_range": k}).
- `training_root` (session): Path of a dataset for short trainings: sequences 00 (4 scans), 08 (2) and 11 (1, no
  labels), 512 azimuth steps.
- `one_torch_thread` (module; use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`): torch runs
  with one intra-op thread during the module, restored afterwards.
- `keep_torch_threads`: restores torch's thread count after the test (`train.threads` sets it for the process).
"""
from __future__ import annotations

import pytest

SYNTHETIC_SEQUENCES = (0, 8, 11)
SYNTHETIC_SCANS = 3
SYNTHETIC_AZIMUTH_STEPS = 512


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    from lidarseg.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic-kitti")
    generate(root, sequences=SYNTHETIC_SEQUENCES, scans=SYNTHETIC_SCANS, seed=0,
             azimuth_steps=SYNTHETIC_AZIMUTH_STEPS, log=None)
    return root


@pytest.fixture(scope="session")
def make_synthetic_scan():
    from lidarseg.data.synthetic import generate_scan

    def make(sequence=0, index=0, seed=0, azimuth_steps=None, faults=None):
        return generate_scan(sequence=sequence, index=index, seed=seed, azimuth_steps=azimuth_steps, faults=faults)

    return make


@pytest.fixture(scope="session")
def synthetic_scan(make_synthetic_scan):
    return make_synthetic_scan(sequence=8, index=0)


@pytest.fixture(scope="session")
def training_root(tmp_path_factory):
    from lidarseg.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic-train")
    generate(root, sequences=[0, 8, 11], scans={0: 4, 8: 2, 11: 1}, seed=0, azimuth_steps=512, log=lambda *a: None)
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: on this shared 2-core machine two spinning OpenMP threads are ~5x slower under load."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def keep_torch_threads():
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def randomize_weights():
    """randomize(model, seed=0, scale=0.3) -> model with seeded random weights (N(0, scale^2) for conv/linear
    weights, N(0, 0.25) for vectors) and BN running variances in [0.5, 1.5), so eval-mode BN is not the identity."""
    import torch

    def randomize(model, seed=0, scale=0.3):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if k.endswith("running_var"):
                    v.copy_(torch.rand(v.shape, generator=g) + 0.5)
                elif v.is_floating_point():
                    v.copy_(torch.randn(v.shape, generator=g) * (scale if v.dim() > 1 else 0.5))
        return model
    return randomize

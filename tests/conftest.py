"""Shared pytest fixtures: a tiny synthetic SemanticKITTI-format dataset and realistic in-memory scans.

- `synthetic_root` (session): Path of a dataset in a tmp dir with sequences 00 (train), 08 (valid) and 11 (test, no
  labels, as in SemanticKITTI), 3 scans each, 64 beams x 512 azimuth steps (about 30k points per scan).
- `synthetic_scan` (session): (points float32 [N,4], raw labels uint32 [N]) of one full-resolution scan
  (64 x 2048, about 120k points) of sequence 08.
- `make_synthetic_scan` (session): `make(sequence=0, index=0, seed=0, azimuth_steps=None, faults=None)` -> the same
  kind of pair, for tests that need other scans, fewer points or injected faults ({"nan": k, "zero_range": k}).
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

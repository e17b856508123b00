"""Atomic checkpoint files: round trip, RNG state, refusal of foreign/truncated files, --resume resolution."""
import os
import random

import numpy as np
import pytest
import torch

from lidarseg.engine.checkpoint import (find_resume, load_checkpoint, rng_state, save_checkpoint,
                                        set_rng_state)
from lidarseg.errors import DataError


def test_roundtrip_and_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    state = {"config": {"a": 1}, "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 2,
             "step": 10, "rng": rng_state()}
    expected = (torch.rand(3), np.random.rand(3), random.random())
    path = save_checkpoint(tmp_path / "last.pt", state)
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]  # no temporary file left behind
    back = load_checkpoint(path)
    assert back["epoch"] == 2 and back["step"] == 10 and back["config"] == {"a": 1}
    set_rng_state(back["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    opt2 = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(back["optimizer"])
    buf = opt2.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(buf, opt.state_dict()["state"][0]["momentum_buffer"])


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(DataError, match="not a lidarseg checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    save_checkpoint(tmp_path / "ok.pt", {"config": {}, "model": {}})
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot be read"):
        load_checkpoint(tmp_path / "cut.pt")


def test_failed_save_keeps_previous(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "last.pt", {"config": {}, "model": {}, "epoch": 1})

    def boom(*a, **k):  # what torch raises when the disk fills up during torch.save
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 192 vs 124\nmore")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(DataError, match=r"^could not write checkpoint .*last.pt: \[enforce fail.*; the previous "
                                        r"last.pt is intact \(check the free disk space") as err:
        save_checkpoint(tmp_path / "last.pt", {"config": {}, "model": {}, "epoch": 2})
    assert "\n" not in str(err.value)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


def test_find_resume(tmp_path):
    assert find_resume(tmp_path, None) is None
    assert find_resume(tmp_path, "auto") is None
    save_checkpoint(tmp_path / "last.pt", {"config": {}, "model": {}})
    assert find_resume(tmp_path, "auto") == tmp_path / "last.pt"
    with pytest.raises(DataError):
        find_resume(tmp_path, str(tmp_path / "other.pt"))

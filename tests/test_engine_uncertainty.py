"""MC-dropout: mean and variance of the softmax over N passes with only dropout active, against a plain loop."""
import pytest
import torch

from lidarseg.engine.uncertainty import mc_dropout_probs
from lidarseg.errors import ConfigError
from models.salsanext import SalsaNext

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_equals_plain_loop_and_restores_modes():
    torch.manual_seed(0)
    m = SalsaNext(20, 5, width=0.25).eval()
    for b in m.modules():
        if isinstance(b, torch.nn.BatchNorm2d):
            b.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 5, 16, 64)
    torch.manual_seed(1)
    mean, var = mc_dropout_probs(m, x, samples=4)
    assert all(not mod.training for mod in m.modules())            # eval mode restored
    # plain loop: dropout in training mode, BatchNorm with running statistics, same random stream
    for mod in m.modules():
        if isinstance(mod, torch.nn.Dropout2d):
            mod.train()
    torch.manual_seed(1)
    with torch.no_grad():
        probs = torch.stack([torch.softmax(m(x), 1) for _ in range(4)])
    torch.testing.assert_close(mean, probs.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(var, probs.var(dim=0).mean(dim=1), rtol=1e-4, atol=1e-7)
    assert var.shape == (1, 16, 64) and float(var.max()) > 0        # dropout makes the passes differ


def test_needs_dropout_and_two_samples():
    m = SalsaNext(20, 5, width=0.25, dropout=0.0).eval()
    with pytest.raises(ConfigError, match="no dropout"):
        mc_dropout_probs(m, torch.zeros(1, 5, 16, 16), samples=3)
    with pytest.raises(ConfigError, match="mc-samples"):
        mc_dropout_probs(SalsaNext(20, 5, width=0.25), torch.zeros(1, 5, 16, 16), samples=1)


def test_infer_mc_samples_writes_variance_beside_predictions(training_root, tmp_path, capsys):
    import numpy as np

    from lidarseg.cli import main
    from lidarseg.engine import builders
    from lidarseg.engine.checkpoint import save_checkpoint
    from lidarseg.engine.config import load_config
    cfg = load_config(None, ["model.name=salsanext", "model.width=0.125", "data.sensor.height=32",
                             "data.sensor.width=128", f"data.root={training_root}", "data.sequences.valid=[8]",
                             "data.sequences.test=[11]", "train.threads=1"])
    torch.manual_seed(0)
    model = builders.model(cfg, builders.label_map(cfg))
    save_checkpoint(tmp_path / "s.pt", {"config": cfg, "model": model.state_dict()})
    out = tmp_path / "pred"
    n = torch.get_num_threads()
    assert main(["infer", "--checkpoint", str(tmp_path / "s.pt"), "--split", "valid", "--out", str(out),
                 "--limit", "1", "--mc-samples", "3", "--no-knn", "--no-progress", "--device", "cpu"]) == 0
    torch.set_num_threads(n)
    scan = np.fromfile(training_root / "sequences" / "08" / "velodyne" / "000000.bin", np.float32).reshape(-1, 4)
    pred = np.fromfile(out / "sequences" / "08" / "predictions" / "000000.label", np.uint32)
    var = np.fromfile(out / "sequences" / "08" / "uncert" / "000000.label", np.float32)
    assert pred.shape == var.shape == (scan.shape[0],)
    assert np.all(var >= 0) and var.max() > 0
    capsys.readouterr()
    assert main(["infer", "--checkpoint", str(tmp_path / "s.pt"), "--split", "valid", "--out", str(tmp_path / "p2"),
                 "--mc-samples", "1"]) != 0
    assert "--mc-samples must be >= 2" in capsys.readouterr().err

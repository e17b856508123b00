"""`lidarseg export`: the ONNX graph reproduces the torch logits on a real synthetic scan (channels_last or not),
carries the deployment metadata, takes any batch when exported with --dynamic-batch; bad input fails clearly."""
import json
import sys

import numpy as np
import pytest
import torch

from lidarseg.cli import main
from lidarseg.engine import builders
from lidarseg.engine.checkpoint import save_checkpoint
from lidarseg.engine.config import load_config
from lidarseg.errors import ConfigError, LidarsegError

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

MEAN = [7.8, -0.01, 0.49, -1.09, 0.22]
STD = [6.36, 8.63, 5.0, 0.68, 0.14]
TINY = ["model.name=rangenet21", "model.width=0.125", "model.blocks=[1,1,1,1,1]", "data.sensor.height=32",
        "data.sensor.width=128", f"data.mean={MEAN}", f"data.std={STD}", "data.sequences.train=[0]",
        "data.sequences.valid=[8]", "data.sequences.test=[11]", "train.threads=1"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny_model(cfg, lm):
    torch.manual_seed(0)
    model = builders.model(cfg, lm)
    for m in model.modules():  # non-trivial running statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, synthetic_root):
    cfg = load_config(None, [*TINY, f"data.root={synthetic_root}"])
    lm = builders.label_map(cfg)
    path = tmp_path_factory.mktemp("export") / "tiny.pt"
    save_checkpoint(path, {"config": cfg, "model": _tiny_model(cfg, lm).state_dict()})
    return path, cfg, lm


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """The CLI end to end: dynamic batch, width overridden to 256, check on a real scan, 1 timed run."""
    ckpt, _, _ = checkpoint
    out = tmp_path_factory.mktemp("onnx") / "sub" / "model.onnx"
    n = torch.get_num_threads()
    import io
    from contextlib import redirect_stdout
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--width", "256", "--dynamic-batch",
                   "--runs", "1"])
    torch.set_num_threads(n)
    assert rc == 0
    return out, buf.getvalue()


def _torch_model(checkpoint):
    from lidarseg.engine.inference import load_model
    return load_model(checkpoint[0], torch.device("cpu"))[0]


@pytest.fixture(scope="module")
def scans(checkpoint):
    """Three real synthetic scans through the dataset pipeline at the exported size, [3,5,32,256]."""
    from lidarseg.export import scan_inputs
    _, cfg, lm = checkpoint
    x, source = scan_inputs(cfg, lm, 32, 256, batch=3)
    assert "3 scan(s)" in source and x.shape == (3, 5, 32, 256)
    return x


def test_cli_checks_and_times_on_a_real_scan(exported):
    out, text = exported
    assert "scan(s) of split valid" in text  # a real synthetic scan, not the random fallback
    assert "max |onnxruntime - torch|" in text and "argmax agreement 100.000 %" in text
    assert "network latency per scan" in text and "onnxruntime" in text and "torch" in text
    assert "[B,5,32,256]" in text
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]  # no temporary or external data files


def test_metadata_matches_the_config(exported, checkpoint):
    from lidarseg.export import read_metadata
    _, cfg, lm = checkpoint
    meta = read_metadata(exported[0])
    assert meta["mean"] == pytest.approx(MEAN) and meta["std"] == pytest.approx(STD)
    assert meta["learning_map_inv"] == lm.learning_map_inv and meta["class_names"] == lm.names
    assert meta["sensor"] == {"height": 32, "width": 256, "fov_up": cfg["data"]["sensor"]["fov_up"],
                              "fov_down": cfg["data"]["sensor"]["fov_down"]}
    assert meta["input_channels"] == ["range", "x", "y", "z", "remission"]
    assert meta["input"]["shape"] == ["batch", 5, 32, 256] and meta["output"]["shape"] == ["batch", 20, 32, 256]
    assert meta["model"]["name"] == "rangenet21" and meta["num_classes"] == 20
    import onnx
    raw = {p.key: p.value for p in onnx.load(str(exported[0])).metadata_props}
    assert json.loads(raw["learning_map_inv"])["1"] == 10  # JSON strings in the file itself


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch_matches_torch(exported, checkpoint, scans, batch):
    x = scans[:batch]
    sess = _session(exported[0])
    assert [i.name for i in sess.get_inputs()] == ["range_image"] and sess.get_outputs()[0].name == "logits"
    got = sess.run(["logits"], {"range_image": x.numpy()})[0]
    with torch.no_grad():
        ref = _torch_model(checkpoint)(x).numpy()
    assert got.shape == (batch, 20, 32, 256)
    np.testing.assert_allclose(got, ref, atol=1e-3 * max(1.0, np.abs(ref).max()), rtol=0)


def test_contiguous_model_static_export_api(checkpoint, tmp_path):
    """The functional core on a channels_first model, static batch, the config's own size (32x128)."""
    from lidarseg.export import export_onnx, read_metadata, scan_inputs
    ckpt, cfg, lm = checkpoint
    cfg_cf = {**cfg, "model": {**cfg["model"], "channels_last": False}}
    model = builders.model(cfg_cf, lm)
    model.load_state_dict(torch.load(ckpt, weights_only=False)["model"])
    model.eval()
    assert not model.channels_last
    x, _ = scan_inputs(cfg, lm, 32, 128, batch=2)
    res = export_onnx(model, cfg, lm, tmp_path / "static.onnx", batch=2, opset=17, check_inputs=x)
    assert res["height"] == 32 and res["width"] == 128 and res["batch"] == 2 and res["opset"] == 17
    assert res["check"].max_abs_diff <= res["check"].tolerance and res["check"].argmax_agreement > 0.999
    sess = _session(res["path"])
    assert sess.get_inputs()[0].shape == [2, 5, 32, 128]
    assert read_metadata(res["path"])["input"]["shape"] == [2, 5, 32, 128]


def test_check_fails_on_a_different_model(exported, checkpoint, scans):
    from lidarseg.export import check_onnx
    model = _torch_model(checkpoint)
    x = scans[1:2]
    assert check_onnx(exported[0], model, x).max_abs_diff < 1e-3
    with torch.no_grad():
        model.head[1].bias += 1.0
    with pytest.raises(LidarsegError, match="ONNX check failed: max"):
        check_onnx(exported[0], model, x)


def test_kprnet_is_refused():
    from lidarseg.export import build_onnx

    class PointNet(torch.nn.Module):
        input_mode = "kprnet"

    cfg = load_config(None, [])
    with pytest.raises(ConfigError, match="range-image networks.*KPConv"):
        build_onnx(PointNet(), cfg, builders.label_map(cfg))


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # two spinning threads are much slower on the shared 2-core machine
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _fails(argv, capsys):
    assert main(argv) == 2
    return capsys.readouterr().err


def test_bad_input_errors(checkpoint, tmp_path, capsys):
    ckpt = str(checkpoint[0])
    out = str(tmp_path / "m.onnx")
    err = _fails(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", out], capsys)
    assert "checkpoint not found" in err and "nope.pt" in err
    err = _fails(["export", "--checkpoint", ckpt, "--out", out, "--width", "100"], capsys)
    assert "width=100" in err and "32" in err and "96 or 128" in err
    err = _fails(["export", "--checkpoint", ckpt, "--out", out, "--height", "0"], capsys)
    assert "--height 0" in err
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    err = _fails(["export", "--checkpoint", ckpt, "--out", str(blocker / "m.onnx")], capsys)
    assert "cannot write" in err and "a-file" in err
    err = _fails(["export", "--checkpoint", ckpt, "--out", str(tmp_path)], capsys)
    assert "is a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_missing_packages_name_the_extras(checkpoint, tmp_path, capsys, monkeypatch):
    ckpt = str(checkpoint[0])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    err = _fails(["export", "--checkpoint", ckpt, "--out", str(tmp_path / "m.onnx")], capsys)
    assert "onnxruntime" in err and 'pip install -e ".[export]"' in err
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    err = _fails(["export", "--checkpoint", ckpt, "--out", str(tmp_path / "m.onnx"), "--no-check"], capsys)
    assert "onnxscript" in err and "onnxruntime" not in err

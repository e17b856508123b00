"""ONNX export of CENet (main head; the auxiliary heads are training-only) and SalsaNext: onnxruntime reproduces the
torch logits on real synthetic scans, with a dynamic batch."""
import pytest

from lidarseg.engine import builders
from lidarseg.engine.config import load_config

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"cenet": ["model.width=0.125", "model.layers=[1,1,1,1]"], "salsanext": ["model.width=0.25"]}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_export_matches_torch_on_real_scans(name, synthetic_root, tmp_path, randomize_weights):
    from lidarseg.export import export_onnx, read_metadata, scan_inputs
    cfg = load_config(None, [f"model.name={name}", *SMALL[name], "data.sensor.height=32", "data.sensor.width=128",
                             f"data.root={synthetic_root}", "data.sequences.valid=[8]", "data.sequences.test=[11]"])
    lm = builders.label_map(cfg)
    model = randomize_weights(builders.model(cfg, lm), scale=0.2).eval()   # BN statistics as after training
    x, _ = scan_inputs(cfg, lm, 32, 128, batch=2)
    result = export_onnx(model, cfg, lm, tmp_path / f"{name}.onnx", dynamic_batch=True, check_inputs=x)
    check = result["check"]
    assert check.shape == (2, 20, 32, 128)
    assert check.max_abs_diff <= 1e-4 * max(1.0, check.scale) and check.argmax_agreement == 1.0
    assert read_metadata(tmp_path / f"{name}.onnx")["model"]["name"] == name

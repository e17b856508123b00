"""Every registered network, through the registry and its representation: it declares a registered input
representation, and a range-image network maps a normalised range image [B,5,H,W] to logits [B,C,H,W] (the main
head of a multi-head model) that the representation turns into one label per point of the scan."""
import pytest
import torch

from lidarseg.data.representation import representation_of
from lidarseg.errors import ConfigError
from lidarseg.models import build_model, list_models, main_logits, model_options

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", list_models())
def test_registered_model_declares_a_representation_and_predicts_points(name, training_root):
    model = build_model(name, num_classes=20).eval()
    rep = representation_of(model)
    assert rep.name == getattr(model, "input_mode", "range")
    if not rep.image_output:
        pytest.skip(f"{name}: point-predicting network, end to end in tests/test_engine_train.py (kprnet)")
    from lidarseg.data.dataset import SemanticKITTI
    ds = SemanticKITTI(training_root, "valid", sequences=[8], sensor={"height": 32, "width": 512})
    batch = rep.collate([ds[0]])
    with torch.no_grad():
        logits = main_logits(rep.forward(model, batch, torch.device("cpu")))
    assert logits.shape == (1, 20, 32, 512) and torch.isfinite(logits).all()
    points, gt = rep.point_predictions(logits.argmax(1), batch, 0, None, 20)
    assert points.shape == gt.shape == (int(batch["num_points"][0]),)


def test_model_options_are_the_builders_keywords():
    assert {"channels", "blocks", "channels_last", "detach_skips"} <= set(model_options("rangenet21"))
    for name in list_models():
        opts = model_options(name)
        assert not {"self", "num_classes", "in_channels", "depth"} & set(opts), name
        with pytest.raises(ConfigError, match="valid options are"):
            build_model(name, 20, None, no_such_option=1)

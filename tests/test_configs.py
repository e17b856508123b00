"""The paper recipes in configs/: every file loads and validates, and its values are the published ones
(shared/specs/rangenet.md section 5.1, kprnet.md section 3), transcribed here independently of the files."""
from pathlib import Path

import pytest

from lidarseg import CONFIG_DIR
from lidarseg.engine import builders
from lidarseg.engine.config import load_config

# RangeNet++ arch yamls (rangenet.md 5.1): width, lr, per-epoch decay, total batch, dropout
RANGENET = {
    "rangenet53": (2048, 0.005, 0.99, 8, 0.01, "rangenet53"),
    "rangenet53-1024": (1024, 0.01, 0.99, 16, 0.05, "rangenet53"),
    "rangenet53-512": (512, 0.01, 0.99, 32, 0.05, "rangenet53"),
    "rangenet21": (2048, 0.01, 0.995, 2, 0.01, "rangenet21"),
}
TRAINING_CONFIGS = sorted(p.name for p in Path(CONFIG_DIR).glob("*.yaml") if p.name != "semantic-kitti.yaml")


@pytest.mark.parametrize("name", TRAINING_CONFIGS)
def test_every_config_loads_and_builds_its_loss(name):
    cfg = load_config(Path(CONFIG_DIR) / name)
    lm = builders.label_map(cfg)
    loss = builders.loss(cfg, lm)
    assert hasattr(loss, "forward")


@pytest.mark.parametrize("name", sorted(RANGENET))
@pytest.mark.parametrize("twin", ["", "-subclass"])
def test_rangenet_recipes(name, twin):
    width, lr, decay, batch, dropout, model = RANGENET[name]
    cfg = load_config(Path(CONFIG_DIR) / f"{name}{twin}.yaml")
    assert cfg["data"]["sensor"] == {"height": 64, "width": width, "fov_up": 3.0, "fov_down": -25.0}
    assert cfg["data"]["mean"] == [12.12, 10.88, 0.23, -1.04, 0.21]
    assert cfg["data"]["std"] == [12.32, 11.47, 6.91, 0.86, 0.16]
    assert not cfg["data"]["augment"]
    assert cfg["model"] == {"name": model, "dropout": dropout}
    assert (cfg["optim"]["name"], cfg["optim"]["lr"], cfg["optim"]["momentum"], cfg["optim"]["weight_decay"]) == \
        ("sgd", lr, 0.9, 1e-4)
    assert (cfg["schedule"]["name"], cfg["schedule"]["warmup_epochs"], cfg["schedule"]["decay"]) == \
        ("exponential", 1.0, decay)
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"]) == (150, batch)
    loss = cfg["loss"]
    if twin:
        assert loss["name"] == "subclassified" and loss["class_weight"] == "content"
        assert (loss["threshold"], loss["eps"], loss["power"], loss["max_weight"]) == (0.98, 10.0, 0.5, 10.0)
        assert (loss["ref_stride"], loss["query_stride"], loss["similarity_input"]) == (8, 4, "logits")
    else:
        assert loss == {"name": "wce"}


@pytest.mark.parametrize("twin", ["", "-subclass"])
def test_kprnet_recipe(twin):
    cfg = load_config(Path(CONFIG_DIR) / f"kprnet{twin}.yaml")
    assert cfg["model"]["name"] == "kprnet"
    assert (cfg["optim"]["name"], cfg["optim"]["lr"], cfg["optim"]["momentum"], cfg["optim"]["weight_decay"]) == \
        ("sgd", 0.01875, 0.9, 1e-4)
    s = cfg["schedule"]
    assert (s["name"], s["warmup_steps"], s["min_lr"]) == ("cosine", 1000, 1e-5)
    assert s["warmup_start"] * cfg["optim"]["lr"] == pytest.approx(1e-5, rel=1e-3)
    t = cfg["train"]
    assert (t["epochs"], t["batch_size"], t["clip_grad"], t["sync_bn"]) == (120, 24, 3.0, True)
    assert cfg["postproc"]["knn"] is False
    if twin:
        assert cfg["loss"]["name"] == "subclassified"
    else:
        assert cfg["loss"] == {"name": "ohem", "thresh": 0.9, "min_kept": 10000}


def test_rangenet_wce_weights_are_rangenets():
    cfg = load_config(Path(CONFIG_DIR) / "rangenet53.yaml")
    lm = builders.label_map(cfg)
    loss = builders.loss(cfg, lm)
    w = loss.class_weight if hasattr(loss, "class_weight") else loss.weight
    assert float(w[0]) == 0.0
    assert float(w[1]) == pytest.approx(22.931662, rel=1e-5)   # car, rangenet.md section 3
    assert float(w[15]) == pytest.approx(3.733921, rel=1e-5)   # vegetation

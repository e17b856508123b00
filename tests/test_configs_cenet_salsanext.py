"""The CENet and SalsaNext recipes (configs/cenet-*.yaml, configs/salsanext.yaml and their -subclass twins) load,
build their model and loss, and set the reference configs' hyper-parameters, transcribed here from
huixiancheng/CENet config/arch/senet-512.yml, senet-1024p.yml, senet-2048p.yml and TiagoCortinhal/SalsaNext
salsanext.yml (plus the values their trainers hard-code)."""
from pathlib import Path

import pytest

from lidarseg import CONFIG_DIR
from lidarseg.engine import builders
from lidarseg.engine.config import load_config

# senet-*.yml: img_prop.width, max_epochs, consine.{min_lr, max_lr, first_cycle, cycle, wup_epochs, gamma}
CENET = {
    "cenet-512": (512, 100, 1e-4, 0.01, 50, 1, 1, 1.0),
    "cenet-1024": (1024, 30, 1e-4, 0.01, 30, 1, 1, 1.0),
    "cenet-2048": (2048, 30, 1e-4, 0.01, 30, 1, 1, 1.0),
}
CENET_COMMON = {"act": "hardswish", "aux_loss": True, "lamda": 1.0, "momentum": 0.9, "w_decay": 1e-4,
                "batch_size": 6, "knn": (7, 7, 1.0, 2.0), "fov": (3.0, -25.0),
                "means": [11.71279, -0.1023471, 0.4952, -1.0545, 0.2877],
                "stds": [10.24, 12.295865, 9.4287, 0.8643, 0.1450]}
# trainer.py: NLL(weight = 1/(content + epsilon_w)) + 1.5 Lovasz(ignore 0) + 1.0 boundary, on every head
CENET_LOSS = [("wce", 1.0), ("lovasz", 1.5), ("boundary", 1.0)]
# salsanext.yml
SALSANEXT = {"width": 2048, "max_epochs": 150, "lr": 0.01, "wup_epochs": 1, "momentum": 0.9, "lr_decay": 0.99,
             "w_decay": 1e-4, "batch_size": 24, "knn": (5, 5, 1.0, 1.0), "fov": (3.0, -25.0),
             "means": [12.12, 10.88, 0.23, -1.04, 0.21], "stds": [12.32, 11.47, 6.91, 0.86, 0.16]}
SALSANEXT_LOSS = [("wce", 1.0), ("lovasz", 1.0)]
SUBCLASS = {"name": "subclassified", "class_weight": "content", "threshold": 0.98, "eps": 10.0, "power": 0.5,
            "max_weight": 10.0, "ref_stride": 8, "query_stride": 4, "similarity_input": "logits",
            "normalize": "official"}


def _terms(loss_cfg):
    return [(t["name"], t.get("weight", 1.0)) for t in loss_cfg]


def _check_loss(cfg, expected, twin):
    terms = _terms(cfg["loss"])
    if twin:
        assert cfg["loss"][0] == SUBCLASS
        assert terms[1:] == expected[1:]
    else:
        assert terms == expected and cfg["loss"][0] == {"name": "wce"}
    loss = builders.loss(cfg, builders.label_map(cfg))
    assert loss.keys == [name for name, _ in terms] and loss.weights == [w for _, w in terms]


def _check_post(cfg, knn, fov):
    p = cfg["postproc"]
    assert p["knn"] and (p["k"], p["search"], p["sigma"], p["cutoff"]) == knn
    s = cfg["data"]["sensor"]
    assert (s["height"], s["fov_up"], s["fov_down"]) == (64, *fov)


@pytest.mark.parametrize("name", sorted(CENET))
@pytest.mark.parametrize("twin", ["", "-subclass"])
def test_cenet_recipes(name, twin):
    width, epochs, min_lr, max_lr, first_cycle, cycle, wup, gamma = CENET[name]
    c = CENET_COMMON
    cfg = load_config(Path(CONFIG_DIR) / f"{name}{twin}.yaml")
    assert cfg["data"]["sensor"]["width"] == width
    assert cfg["data"]["mean"] == c["means"] and cfg["data"]["std"] == c["stds"]
    _check_post(cfg, c["knn"], c["fov"])
    assert cfg["model"] == {"name": "cenet", "act": c["act"], "aux_heads": c["aux_loss"]}
    assert cfg["train"]["head_weights"] == [1.0] + [c["lamda"]] * 3
    o, s, t = cfg["optim"], cfg["schedule"], cfg["train"]
    assert (o["name"], o["lr"], o["momentum"], o["weight_decay"]) == ("sgd", max_lr, c["momentum"], c["w_decay"])
    assert (s["name"], s["min_lr"], s["cycle_epochs"], s["cycle_mult"], s["warmup_epochs"], s["gamma"]) == \
        ("cosine_restarts", min_lr, first_cycle, cycle, wup, gamma)
    assert (t["epochs"], t["batch_size"], t["amp"]) == (epochs, c["batch_size"], "fp16")
    _check_loss(cfg, CENET_LOSS, twin)
    model = builders.model(cfg, builders.label_map(cfg))
    assert model.num_heads == 4 and model.act == "hardswish"


@pytest.mark.parametrize("twin", ["", "-subclass"])
def test_salsanext_recipe(twin):
    r = SALSANEXT
    cfg = load_config(Path(CONFIG_DIR) / f"salsanext{twin}.yaml")
    assert cfg["data"]["sensor"]["width"] == r["width"]
    assert cfg["data"]["mean"] == r["means"] and cfg["data"]["std"] == r["stds"]
    _check_post(cfg, r["knn"], r["fov"])
    assert cfg["model"] == {"name": "salsanext", "dropout": 0.2}
    o, s, t = cfg["optim"], cfg["schedule"], cfg["train"]
    assert (o["name"], o["lr"], o["momentum"], o["weight_decay"]) == ("sgd", r["lr"], r["momentum"], r["w_decay"])
    assert (s["name"], s["warmup_epochs"], s["decay"]) == ("exponential", r["wup_epochs"], r["lr_decay"])
    assert (t["epochs"], t["batch_size"]) == (r["max_epochs"], r["batch_size"])
    _check_loss(cfg, SALSANEXT_LOSS, twin)


def test_progressive_recipe_chains_by_resolution():
    """Each CENet stage documents how it starts from the previous stage's weights."""
    for name, prev in (("cenet-1024", "cenet-512"), ("cenet-2048", "cenet-1024")):
        text = (Path(CONFIG_DIR) / f"{name}.yaml").read_text()
        assert f"--init-from runs/{prev}/best.pt" in text

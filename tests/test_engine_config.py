"""Config composition, overrides and validation; the lr schedule; the shipped configs load."""
import math

import pytest
import torch

from lidarseg import CONFIG_DIR
from lidarseg.engine import config as C
from lidarseg.engine.schedule import WarmupDecay, build_optimizer, build_scheduler
from lidarseg.errors import ConfigError


def write(path, text):
    path.write_text(text)
    return path


def test_defaults_and_file_override(tmp_path):
    cfg = C.load_config(write(tmp_path / "a.yaml", "optim: {lr: 1e-3}\ntrain: {epochs: 3}\n"))
    assert cfg["optim"]["lr"] == pytest.approx(1e-3) and isinstance(cfg["optim"]["lr"], float)
    assert cfg["train"]["epochs"] == 3
    assert cfg["optim"]["momentum"] == 0.9  # default kept


def test_base_chain_and_set(tmp_path):
    write(tmp_path / "parent.yaml", "train: {epochs: 5, batch_size: 4}\nmodel: {name: rangenet21, width: 0.5}\n")
    child = write(tmp_path / "child.yaml", "base: parent.yaml\ntrain: {epochs: 7}\n")
    cfg = C.load_config(child, ["train.batch_size=2", "model.width=0.25", "data.sensor.width=512",
                                "data.mean=[0,0,0,0,0]", "optim.name=adamw", "train.clip_grad=3"])
    assert cfg["train"] == {**cfg["train"], "epochs": 7, "batch_size": 2, "clip_grad": 3.0}
    assert cfg["model"] == {"name": "rangenet21", "width": 0.25}
    assert cfg["data"]["sensor"]["width"] == 512 and cfg["data"]["mean"] == [0, 0, 0, 0, 0]
    assert "base" not in cfg


def test_open_section_replaced_when_name_changes(tmp_path):
    write(tmp_path / "p.yaml", "loss: {name: wce, epsilon: 0.001}\n")
    child = write(tmp_path / "c.yaml", "base: p.yaml\nloss: {name: subclassified, k: 3}\n")
    assert C.load_config(child)["loss"] == {"name": "subclassified", "k": 3}
    same = write(tmp_path / "s.yaml", "base: p.yaml\nloss: {epsilon: 0.01}\n")
    assert C.load_config(same)["loss"] == {"name": "wce", "epsilon": 0.01}


def test_set_mapping_merges_fixed_sections_and_replaces_open_ones():
    """`--set data.sensor={height: 32}` changes the height only (it used to drop the other sensor keys, and the
    consistency check then failed with a KeyError); `--set loss={...}` replaces the loss section whole."""
    demo = CONFIG_DIR / "demo.yaml"
    base = C.load_config(demo)
    cfg = C.load_config(demo, ["data.sensor={height: 32}", "loss={name: subclassified}",
                               "data.augment={flip: {y: 0.25}}"])
    assert cfg["data"]["sensor"] == {**base["data"]["sensor"], "height": 32}
    assert base["data"]["sensor"]["width"] == 512                       # the demo's width, kept
    assert cfg["loss"] == {"name": "subclassified"}
    assert cfg["data"]["augment"] == {"flip": {"y": 0.25}}             # open section: replaced, not merged
    with pytest.raises(ConfigError, match=r"unknown config key 'data.sensor.heigth'"):
        C.load_config(demo, ["data.sensor={heigth: 32}"])


def test_unknown_key_lists_valid(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'.*epochs"):
        C.load_config(write(tmp_path / "x.yaml", "train: {epoch: 3}\n"))
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'.*valid keys in the top level"):
        C.load_config(None, ["trian.epochs=3"])


def test_type_and_choice_errors(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs.*expected int"):
        C.load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="optim.name.*not one of"):
        C.load_config(None, ["optim.name=rmsprop"])
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        C.load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="not found"):
        C.load_config(tmp_path / "missing.yaml")


def test_base_cycle(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        C.load_config(tmp_path / "a.yaml")


def test_dump_roundtrip():
    cfg = C.load_config(None)
    assert C.validate(C.parse_yaml(C.dump(cfg)), C.read_yaml(C.DEFAULTS_PATH)) == cfg


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    if path.name == "semantic-kitti.yaml":
        pytest.skip("label config, not a training config")
    C.load_config(path)


def test_schedule_rangenet_and_cosine():
    f = WarmupDecay("exponential", 0.01, warmup_steps=4, steps_per_epoch=4, total_steps=40, decay=0.99)
    lrs = [0.01 * f(t) for t in range(10)]
    assert lrs[:5] == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01])
    assert lrs[8] == pytest.approx(0.01 * 0.99)  # one epoch after the warm-up
    g = WarmupDecay("cosine", 0.01875, warmup_steps=1000, steps_per_epoch=797, total_steps=96000, min_lr=1e-5)
    assert 0.01875 * g(1000) == pytest.approx(0.01875)
    assert 0.01875 * g(48500) == pytest.approx(0.00938, rel=1e-3)
    assert 0.01875 * g(96000) == pytest.approx(1e-5)


def test_scheduler_steps_per_iteration():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0})
    sched = build_scheduler(opt, {"name": "cosine", "warmup_epochs": 1.0, "min_lr": 0.0}, 0.1, 2, 3)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:2] == pytest.approx([0.05, 0.1])
    assert seen[2] == pytest.approx(0.1) and seen[-1] < seen[2]
    assert math.isclose(seen[4], 0.1 * (1 + math.cos(math.pi * 2 / 4)) / 2)


def test_every_numeric_key_has_a_range():
    """Each number (or list of numbers) of the schema, and each null-default key holding numbers, has its range."""
    defaults = C.flatten(C.read_yaml(C.DEFAULTS_PATH))
    numeric = {k for k, v in defaults.items()
               if not any(k == s or k.startswith(s + ".") for s in C.OPEN_SECTIONS)
               and ((isinstance(v, (int, float)) and not isinstance(v, bool))
                    or (isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v)))}
    numeric |= {k for k, t in C.NULLABLE.items() if t in (int, float)}
    assert numeric - set(C.RANGES) == set()
    assert set(C.NULLABLE) <= set(defaults)


@pytest.mark.parametrize("setting, message", [
    ("train.clip_grad=-1", "'train.clip_grad': the value must be > 0"),
    ("train.epochs=0", "'train.epochs': the value must be >= 1"),
    ("data.limit_train=0", "'data.limit_train': the value must be >= 1"),
    ("optim.momentum=1", "'optim.momentum': the value must be >= 0 and < 1"),
    ("optim.betas=[0.9, 1.5]", "'optim.betas': every value must be >= 0 and < 1"),
    ("optim.betas=[0.9]", "'optim.betas': expected a list of 2 numbers"),
    ("data.std=[1, 1, 1, 1, 0]", "'data.std': every value must be > 0"),
    ("optim.lr=.nan", "'optim.lr': the value must be > 0"),
    ("schedule.decay=1.5", "'schedule.decay': the value must be > 0 and <= 1"),
    ("train=null", "'train': expected a mapping (section), got null"),
    ("optim.lr=null", "'optim.lr': expected float like 0.01, got null"),
    ("data.sequences.train={a: }", "'data.sequences.train': expected list or null, got dict"),
    ("data.sequences.train=[0, 1.5]", "'data.sequences.train': expected sequence ids"),
    ("data.root=3", "'data.root': expected str or null"),
    ("data.sensor.fov_up=-30", "'data.sensor.fov_up' (-30.0) must be above 'data.sensor.fov_down'"),
    ("postproc.search=4", "'postproc.search': the KNN window must be odd"),
    ("postproc.k=30", "'postproc.k': at most postproc.search^2 = 25"),
    ("schedule.min_lr=1", "'schedule.min_lr' (1.0) must not exceed 'optim.lr'"),
    ("train.non_finite=ignore", "'train.non_finite': 'ignore' is not one of"),
])
def test_ranges_and_shapes(setting, message):
    with pytest.raises(ConfigError) as err:
        C.load_config(None, [setting])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_null_stays_allowed_where_the_default_is_null():
    cfg = C.load_config(None, ["train.clip_grad=3", "train.clip_grad=null", "data.limit_train=2",
                               "data.sequences.train=[0, '01']"])
    assert cfg["train"]["clip_grad"] is None and cfg["data"]["limit_train"] == 2

"""Training configuration: YAML files that compose, `--set` overrides, validation against configs/base.yaml.

A run's config is built in three layers, later ones winning:
  1. configs/base.yaml: every key with its default; it is also the schema (a key it does not have is an error);
  2. the user's file, and the files it names with `base:` (a path or a list, relative to the file or to configs/),
     merged depth-first so a file overrides its bases;
  3. `--set key.sub=value` overrides; the value is parsed as YAML (`1e-3` is a float, `[1, 2]` a list, `null`).
Mappings merge key by key. Sections listed in OPEN_SECTIONS hold options for another module (the model's and
the loss's builders check them); their keys are free, and when a file changes the section's `name` the section
is replaced instead of merged, so options of the previous model or loss do not leak into the new one.
The result is a plain dict; nothing here keeps state.
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import yaml

from .. import CONFIG_DIR
from ..errors import ConfigError

DEFAULTS_PATH = CONFIG_DIR / "base.yaml"

#: dotted paths of sections whose keys are validated by their consumer, not by base.yaml
OPEN_SECTIONS = frozenset({"model", "loss", "data.augment", "data.kprnet"})

#: dotted key -> allowed values (strings compared case-sensitively)
CHOICES = {
    "optim.name": ("sgd", "adam", "adamw"),
    "schedule.name": ("exponential", "cosine", "constant", "cosine_restarts"),
    "train.amp": ("none", "bf16", "fp16"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.non_finite": ("stop", "skip"),
    "data.rows": ("elevation", "ring"),
}

#: keys a resume may change: they do not change what is trained (train.epochs extends or shortens the schedule)
RESUME_MAY_CHANGE = ("train.epochs", "train.log_every", "train.progress", "train.threads", "train.device",
                     "train.deterministic", "data.workers", "data.root", "data.limit_val", "data.val_split",
                     "data.sequences.valid", "data.sequences.test", "val.", "postproc.")


#: types of the keys whose default is null (so base.yaml cannot show it); null stays allowed for them
NULLABLE = {
    "data.root": str, "data.labels": str,
    "data.sequences.train": list, "data.sequences.valid": list, "data.sequences.test": list,
    "data.limit_train": int, "data.limit_val": int,
    "schedule.warmup_steps": int, "schedule.cycle_epochs": float, "train.clip_grad": float, "train.threads": int,
    "train.head_weights": list,
}

#: numeric key -> allowed range, "[lo, hi]" with ( or ) for open ends and an empty side for no bound.
#: A "limit" is a count of scans: null = no limit, 0 is not accepted (it would mean "no scans").
RANGES = {
    "data.sensor.height": "[1, ]", "data.sensor.width": "[1, ]",
    "data.sensor.fov_up": "[-90, 90]", "data.sensor.fov_down": "[-90, 90]",
    "data.mean": "[, ]", "data.std": "(0, ]",
    "data.limit_train": "[1, ]", "data.limit_val": "[1, ]", "data.workers": "[0, ]",
    "optim.lr": "(0, ]", "optim.momentum": "[0, 1)", "optim.betas": "[0, 1)", "optim.weight_decay": "[0, ]",
    "schedule.warmup_epochs": "[0, ]", "schedule.warmup_steps": "[0, ]", "schedule.warmup_start": "[0, 1]",
    "schedule.decay": "(0, 1]", "schedule.min_lr": "[0, ]", "schedule.cycle_epochs": "(0, ]",
    "schedule.cycle_mult": "[1, ]", "schedule.gamma": "(0, ]", "train.head_weights": "[0, ]",
    "train.epochs": "[1, ]", "train.batch_size": "[1, ]", "train.accumulate": "[1, ]", "train.clip_grad": "(0, ]",
    "train.seed": "[0, ]", "train.threads": "[1, ]", "train.log_every": "[1, ]",
    "val.every": "[0, ]", "val.batch_size": "[1, ]",
    "postproc.k": "[1, ]", "postproc.search": "[1, ]", "postproc.sigma": "(0, ]", "postproc.cutoff": "(0, ]",
}

#: list keys of fixed length
LENGTHS = {"data.mean": 5, "data.std": 5, "optim.betas": 2}


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` and `5E4` as floats (YAML 1.1 requires a dot: `1.0e-3`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_yaml(text: str, source: str = "<string>"):
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None


def read_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = parse_yaml(path.read_text(), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def merge(base: dict, over: dict, path: str = "") -> dict:
    """Deep merge: a new dict with `over`'s values on top of `base`'s (inputs untouched)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        sub = f"{path}.{key}" if path else str(key)
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            replace = sub in OPEN_SECTIONS and "name" in value and value.get("name") != old.get("name")
            out[key] = copy.deepcopy(value) if replace else merge(old, value, sub)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_base(name: str, here: Path) -> Path:
    for cand in (here / name, CONFIG_DIR / name):
        if cand.is_file():
            return cand.resolve()
    raise ConfigError(f"base config {name!r} named in {here} not found (looked in {here} and {CONFIG_DIR})")


def load_file_chain(path, _seen: tuple = ()) -> dict:
    """A config file merged on top of its `base:` files (recursively); the `base` key is removed."""
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise ConfigError(f"config files include each other in a cycle: {chain}")
    data = read_yaml(path)
    bases = data.pop("base", None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: 'base' must be a file name or a list of file names, got {bases!r}")
    out: dict = {}
    for b in bases:
        out = merge(out, load_file_chain(_resolve_base(b, path.parent), (*_seen, path)))
    return merge(out, data)


def parse_override(text: str) -> tuple[list[str], object]:
    """'train.lr=1e-3' -> (['train', 'lr'], 0.001). The value is YAML; an empty value is an empty string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.sub=value")
    key, value = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise ConfigError(f"--set {text!r}: empty key component in {key!r}")
    return keys, parse_yaml(value, f"--set {key}") if value.strip() else ""


def _in_open_section(dotted: str) -> bool:
    return any(dotted == s or dotted.startswith(s + ".") for s in OPEN_SECTIONS)


def apply_overrides(cfg: dict, overrides) -> dict:
    """Apply `--set` strings in order; a new dict is returned. A mapping given for a section of the fixed schema
    changes only the keys it names (`data.sensor={height: 32}` keeps the width and field of view); one given for an
    open section (OPEN_SECTIONS, e.g. `loss={name: ce}`) replaces that section whole."""
    out = copy.deepcopy(cfg)
    for text in overrides or ():
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        dotted = ".".join(keys)
        if isinstance(value, dict) and isinstance(node.get(keys[-1]), dict) and not _in_open_section(dotted):
            value = merge(node[keys[-1]], value, dotted)
        node[keys[-1]] = value
    return out


def _type_ok(default, value) -> tuple[bool, object]:
    """Is `value` acceptable where base.yaml has `default` (a null default: see NULLABLE)? Returns (ok, converted
    value)."""
    if value is None:
        return default is None, value
    if default is None:
        return True, value
    if isinstance(default, bool):
        return isinstance(value, bool), value
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool), value
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if isinstance(default, str):
        return isinstance(value, str), value
    if isinstance(default, list):
        return isinstance(value, list), value
    if isinstance(default, dict):
        return isinstance(value, dict), value
    return True, value


def validate(cfg: dict, schema: dict, path: str = "") -> dict:
    """Check `cfg` against `schema` (the defaults): unknown keys, types, choices. Returns a converted copy."""
    out = {}
    for key, value in cfg.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in schema:
            valid = ", ".join(sorted(map(str, schema)))
            where = f"section '{path}'" if path else "the top level"
            raise ConfigError(f"unknown config key '{sub}'; valid keys in {where}: {valid}")
        default = schema[key]
        if sub in OPEN_SECTIONS:  # a mapping, a name or (loss) a list of terms: the consumer checks it
            out[key] = value
            continue
        if default is None and value is not None and sub in NULLABLE:
            kind = NULLABLE[sub]
            ok, value = _type_ok(kind() if kind is not list else [], value)
            if not ok:
                raise ConfigError(f"config key '{sub}': expected {kind.__name__} or null, got "
                                  f"{type(value).__name__} {value!r}")
        ok, value = _type_ok(default, value)
        if not ok:
            want = "a mapping (section)" if isinstance(default, dict) else f"{type(default).__name__} like {default!r}"
            got = "null" if value is None else f"{type(value).__name__} {value!r}"
            raise ConfigError(f"config key '{sub}': expected {want}, got {got}")
        if isinstance(value, dict) and isinstance(default, dict):
            value = validate(value, default, sub)
        if sub in CHOICES and value not in CHOICES[sub]:
            raise ConfigError(f"config key '{sub}': {value!r} is not one of {list(CHOICES[sub])}")
        if value is not None:
            _check_range(sub, value)
        out[key] = value
    return out


def _parse_range(text: str):
    lo_open, hi_open = text[0] == "(", text[-1] == ")"
    lo, hi = (part.strip() for part in text[1:-1].split(","))
    return (float(lo) if lo else None), (float(hi) if hi else None), lo_open, hi_open


def _range_text(text: str) -> str:
    lo, hi, lo_open, hi_open = _parse_range(text)
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return " and ".join(parts) or "finite"


def _check_range(key: str, value) -> None:
    """ConfigError unless the number (or every number of the list) `value` of `key` lies in RANGES[key]."""
    if key in LENGTHS and isinstance(value, list) and len(value) != LENGTHS[key]:
        raise ConfigError(f"config key '{key}': expected a list of {LENGTHS[key]} numbers, got {value!r}")
    if key not in RANGES:
        return
    lo, hi, lo_open, hi_open = _parse_range(RANGES[key])
    for v in value if isinstance(value, list) else [value]:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (lo is None or (v > lo if lo_open else v >= lo))
        ok = ok and (hi is None or (v < hi if hi_open else v <= hi))
        if not ok:
            what = "every value" if isinstance(value, list) else "the value"
            raise ConfigError(f"config key '{key}': {what} must be {_range_text(RANGES[key])} (finite), got {value!r}")


def check_consistency(cfg: dict) -> None:
    """Checks that involve two keys (each key's own range is checked by `validate`)."""
    from ..data.sources import source_class
    source_class(cfg["data"]["format"])  # ConfigError naming the valid formats
    s = cfg["data"]["sensor"]
    if not s["fov_up"] > s["fov_down"]:
        raise ConfigError(f"config keys 'data.sensor.fov_up' ({s['fov_up']}) must be above 'data.sensor.fov_down' "
                          f"({s['fov_down']})")
    p = cfg["postproc"]
    if p["search"] % 2 == 0:
        raise ConfigError(f"config key 'postproc.search': the KNN window must be odd, got {p['search']}")
    if p["k"] > p["search"] ** 2:
        raise ConfigError(f"config key 'postproc.k': at most postproc.search^2 = {p['search'] ** 2} neighbours, "
                          f"got {p['k']}")
    if cfg["schedule"]["min_lr"] > cfg["optim"]["lr"]:
        raise ConfigError(f"config key 'schedule.min_lr' ({cfg['schedule']['min_lr']}) must not exceed 'optim.lr' "
                          f"({cfg['optim']['lr']})")
    for split, seqs in cfg["data"]["sequences"].items():
        for seq in seqs or ():
            if isinstance(seq, bool) or not isinstance(seq, (int, str)):
                raise ConfigError(f"config key 'data.sequences.{split}': expected sequence ids like 8 or '08', "
                                  f"got {seq!r}")


def resolve_config_path(path) -> Path:
    """The config file a user named: the path itself if it exists, else the shipped config of that name
    (`configs/demo.yaml` or `demo.yaml` run from any folder, or from a wheel install without a checkout)."""
    p = Path(path)
    if p.is_file() or p.is_absolute():
        return p
    parts = p.parts[1:] if p.parts[:1] == ("configs",) else p.parts
    shipped = CONFIG_DIR.joinpath(*parts) if parts else None
    return shipped if shipped is not None and shipped.is_file() else p


def load_config(path=None, overrides=(), defaults_path=DEFAULTS_PATH) -> dict:
    """The resolved config: base.yaml <- `path` (with its bases) <- overrides, validated."""
    defaults = read_yaml(defaults_path)
    cfg = defaults
    if path is not None:
        cfg = merge(cfg, load_file_chain(resolve_config_path(path)))
    cfg = validate(apply_overrides(cfg, overrides), defaults)
    check_consistency(cfg)
    return cfg


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=120)


def get(cfg: dict, dotted: str, default=None):
    node = cfg
    for k in dotted.split("."):
        if not isinstance(node, dict) or k not in node:
            return default
        node = node[k]
    return node


def flatten(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def changed_keys(old: dict, new: dict) -> list[str]:
    """Dotted keys whose value differs between two configs."""
    a, b = flatten(old), flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))


def diff(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every dotted key whose value differs."""
    a, b = flatten(old), flatten(new)
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in sorted(set(a) | set(b))
            if a.get(k, "<absent>") != b.get(k, "<absent>")]

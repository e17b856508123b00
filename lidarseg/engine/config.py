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
}


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


def apply_overrides(cfg: dict, overrides) -> dict:
    """Apply `--set` strings in order; a new dict is returned."""
    out = copy.deepcopy(cfg)
    for text in overrides or ():
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return out


def _type_ok(default, value) -> tuple[bool, object]:
    """Is `value` acceptable where base.yaml has `default`? Returns (ok, converted value)."""
    if default is None or value is None:
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
        ok, value = _type_ok(default, value)
        if not ok:
            raise ConfigError(f"config key '{sub}': expected {type(default).__name__} like {default!r}, "
                              f"got {type(value).__name__} {value!r}")
        if isinstance(value, dict) and isinstance(default, dict):
            value = validate(value, default, sub)
        if sub in CHOICES and value not in CHOICES[sub]:
            raise ConfigError(f"config key '{sub}': {value!r} is not one of {list(CHOICES[sub])}")
        out[key] = value
    return out


def load_config(path=None, overrides=(), defaults_path=DEFAULTS_PATH) -> dict:
    """The resolved config: base.yaml <- `path` (with its bases) <- overrides, validated."""
    defaults = read_yaml(defaults_path)
    cfg = defaults
    if path is not None:
        cfg = merge(cfg, load_file_chain(path))
    cfg = apply_overrides(cfg, overrides)
    return validate(cfg, defaults)


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


def diff(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every dotted key whose value differs."""
    a, b = flatten(old), flatten(new)
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in sorted(set(a) | set(b))
            if a.get(k, "<absent>") != b.get(k, "<absent>")]

"""Networks: RangeNet++ (`rangenet21`, `rangenet53`), KPRNet (`kprnet`), CENet (`cenet`) and SalsaNext
(`salsanext`), timm/torchvision style.

    model = build_model("rangenet53", num_classes=20, in_channels=5)                  # faithful sizes
    model = build_model("rangenet21", 20, 5, width=0.25, blocks=[1, 1, 1, 1, 1])      # CPU demo size
    model = build_model_from_config({"name": "kprnet", "backbone": "resnext50_32x4d"}, num_classes=20)

Every model returns logits and has an `input_mode` attribute ("range" or "kprnet"). `load_state_dict_strict`
loads a checkpoint and names missing/unexpected keys; `load_rangenet_checkpoint` loads RangeNet++'s released files.

Import name: `lidarseg.models` (an installed distribution puts this folder there, not at the top level of
site-packages). In a checkout, `import models` from the repository root gives the same module objects.
"""
from __future__ import annotations

import sys as _sys

if __name__ == "models":
    # the checkout's top-level name: hand out lidarseg.models' modules instead of a second copy (one registry, one
    # class per network); the rest of this file then runs once more in a discarded module
    import lidarseg.models as _real
    _sys.modules.update({"models" + k[len("lidarseg.models"):]: v for k, v in list(_sys.modules.items())
                         if k == "lidarseg.models" or k.startswith("lidarseg.models.")})

import inspect
import os
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from lidarseg.errors import ConfigError, DataError

__all__ = ["MODELS", "register_model", "list_models", "model_options", "build_model", "build_model_from_config",
           "load_state_dict_strict", "load_rangenet_checkpoint", "DEFAULT_IN_CHANNELS", "main_logits", "read_weights"]

MODELS: dict[str, Callable[..., nn.Module]] = {}
DEFAULT_IN_CHANNELS = {"rangenet21": 5, "rangenet53": 5, "kprnet": 2, "cenet": 5, "salsanext": 5}


def register_model(name: str, model_class: type | None = None):
    """Decorator registering a builder `fn(num_classes, in_channels, **options) -> nn.Module` under `name`, where
    the network is defined (timm / torchvision style). `model_class`: the class the builder forwards its options to
    (its constructor's keywords are the valid options)."""
    def deco(fn):
        if model_class is not None:
            fn.model_class = model_class
        MODELS[name] = fn
        return fn
    return deco


# the network families; importing them registers their builders
from . import cenet, kprnet, rangenet, salsanext  # noqa: E402,F401


def main_logits(output):
    """The main head's logits of a model's output: the output itself, or the first map of a list of logit maps
    (networks with auxiliary heads, e.g. CENet in training mode, return [main, aux1, ...])."""
    return output[0] if isinstance(output, (list, tuple)) else output


def list_models() -> list[str]:
    return sorted(MODELS)


def model_options(name: str) -> list[str]:
    """Keyword options of a builder: its own keywords, or those of the class it forwards **options to
    (`fn.model_class`)."""
    fn = MODELS[name]
    target = getattr(fn, "model_class", None)
    params = inspect.signature(target.__init__ if target is not None else fn).parameters
    skip = {"self", "num_classes", "in_channels", "depth"}
    return [p for p, v in params.items() if p not in skip
            and v.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)]


def build_model(name: str, num_classes: int = 20, in_channels: int | None = None, **options) -> nn.Module:
    """Build a registered network. Unknown names or options raise `ConfigError` listing the valid ones."""
    if name not in MODELS:
        raise ConfigError(f"model.name={name!r}: unknown model; expected one of {list_models()}")
    if in_channels is None:
        in_channels = DEFAULT_IN_CHANNELS.get(name, 5)
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"model {name!r}: unknown option(s) {unknown}; valid options are {valid}")
    try:
        return MODELS[name](int(num_classes), int(in_channels), **options)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: bad option value ({exc})") from exc


def build_model_from_config(cfg: Mapping, num_classes: int | None = None, in_channels: int | None = None) -> nn.Module:
    """Build from a config mapping: either the `model:` section (`{name: rangenet53, width: 0.25, ...}`) or a full
    config holding one. `num_classes`/`in_channels` in the section win over the arguments; the remaining keys are
    options of the builder. `options:` may also hold them as a nested mapping."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"model config: expected a mapping, got {type(cfg).__name__}")
    if "name" not in cfg and isinstance(cfg.get("model"), Mapping):
        cfg = cfg["model"]
    if "name" not in cfg:
        raise ConfigError(f"model config: missing key 'name'; expected one of {list_models()}")
    cfg = dict(cfg)
    name = cfg.pop("name")
    nc = cfg.pop("num_classes", None)
    nc = nc if nc is not None else (num_classes if num_classes is not None else 20)
    ic = cfg.pop("in_channels", None)
    ic = ic if ic is not None else in_channels
    nested = cfg.pop("options", None) or {}
    if not isinstance(nested, Mapping):
        raise ConfigError("model.options: expected a mapping")
    cfg.update(nested)
    return build_model(name, nc, ic, **cfg)


def _format_keys(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_state_dict_strict(model: nn.Module, state: Mapping, source: str = "checkpoint") -> None:
    """Load `state` into `model` requiring the exact same keys and shapes.

    `state` may be a state dict or a mapping holding one under "model" or "state_dict". A "module." prefix on every
    key (DataParallel / DDP) is stripped. Raises `DataError` naming the missing keys, the unexpected keys and the
    shape mismatches (at most 12 of each, with counts).
    """
    for k in ("state_dict", "model"):
        if isinstance(state.get(k), Mapping) and not isinstance(state.get(k), torch.Tensor):
            state = state[k]
            break
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    own = model.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state))
              if hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{source} does not match the model ({type(model).__name__})"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_format_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_format_keys(unexpected)}")
        if shapes:
            more = f" ... and {len(shapes) - 12} more" if len(shapes) > 12 else ""
            parts.append(f"shape mismatches ({len(shapes)}): " + "; ".join(shapes[:12]) + more)
        raise DataError("; ".join(parts))
    model.load_state_dict(state, strict=True)


def read_weights(path: str | os.PathLike) -> Mapping:
    """The state dict stored in a weights file: a lidarseg checkpoint (its "model"), a released checkpoint of the
    reference code (its "state_dict": CENet's `SENet_valid_best`, SalsaNext's `SalsaNext`) or a bare state dict.
    The file is unpickled in full (it may hold optimizer state and numpy values): read only files you trust.
    DataError if it is missing, unreadable or holds no state dict."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a data error
        raise DataError(f"{path}: cannot read a weights file ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"{path}: expected a state dict (a mapping of tensors), or a checkpoint holding one under "
                        "'model' or 'state_dict'")
    return obj


RANGENET_FILES = {"backbone": "backbone.", "segmentation_decoder": "decoder.", "segmentation_head": "head."}


def load_rangenet_checkpoint(model: nn.Module, directory: str | os.PathLike, suffix: str = "") -> None:
    """Load RangeNet++'s released model directory (files `backbone`, `segmentation_decoder`, `segmentation_head`,
    each a pickled state dict, optional `suffix` such as "_train") into a `RangeNet` by prefixing the keys with
    `backbone.`, `decoder.`, `head.`. Strict: a missing file, key or shape raises `DataError`. A
    `segmentation_CRF` file is not supported (we have no CRF) and is ignored. Remember that RangeNet++ applies
    softmax to the logits this model returns."""
    directory = Path(directory)
    state = {}
    for fname, prefix in RANGENET_FILES.items():
        path = directory / f"{fname}{suffix}"
        if not path.is_file():
            raise DataError(f"{path}: RangeNet++ checkpoint file not found (expected {list(RANGENET_FILES)} "
                            f"with suffix {suffix!r} in {directory})")
        try:
            part = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a data error
            raise DataError(f"{path}: cannot read a state dict ({exc})") from exc
        if not isinstance(part, Mapping):
            raise DataError(f"{path}: expected a state dict, got {type(part).__name__}")
        state.update({prefix + k: v for k, v in part.items()})
    load_state_dict_strict(model, state, source=f"RangeNet++ checkpoint {directory}")

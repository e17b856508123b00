"""ONNX export of the range-image networks (RangeNet++ family), a numerical check with onnxruntime and a latency
comparison, for deployment with onnxruntime or TensorRT.

    model, cfg, label_map = load_model("runs/demo/best.pt", torch.device("cpu"))
    inputs, _ = scan_inputs(cfg, label_map, 64, 512, batch=1)               # [1,5,64,512], normalised
    result = export_onnx(model, cfg, label_map, "model.onnx", check_inputs=inputs)
    read_metadata("model.onnx")["learning_map_inv"]                         # {0: 0, 1: 10, ...}

The ONNX graph has one input `range_image` float32 [B,5,H,W] (channels range, x, y, z, remission, each
(value - mean) / std where a point projects and 0 where the pixel is empty, exactly the training pipeline's
`input`) and one output `logits` float32 [B,C,H,W]. Its `metadata_props` hold, as JSON strings, what a deployer
needs to build that input and read the output: the sensor geometry, the channel order, mean and std, the class
names and `learning_map_inv` (train id -> raw SemanticKITTI id). See docs/deploy.md.

Exporter: `torch.onnx.export(..., dynamo=True)`, the torch.export-based exporter that is torch's default and
supported path since 2.9 (the TorchScript exporter is deprecated, warns on every call and is due for removal).
RangeNet's forward branches on shapes in Python (skip detection, width padding); torch.export resolves those
branches for the fixed H and W and keeps the batch symbolic when asked. torch.export specialises dimensions of
size 1, so a dynamic-batch export traces with an example batch of at least 2. The model is exported from a copy in
eval mode, on the CPU, in the contiguous memory format (a channels_last network computes the same function; the
copy keeps the exporter away from layout conversions). The graph is built in memory (no external data files), the
metadata added, and the bytes written through a temporary file in the target directory and renamed; with a check,
the file is only written once onnxruntime reproduces the torch logits.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import io
import json
import logging
import os
import statistics
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .bench.common import time_call
from .errors import ConfigError, DataError, LidarsegError

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "INPUT_CHANNELS", "DEFAULT_OPSET", "require_onnx", "check_writable",
           "check_exportable", "export_size", "onnx_metadata", "build_onnx", "export_onnx", "read_metadata",
           "scan_inputs", "CheckResult", "check_onnx", "latency"]

INPUT_NAME = "range_image"
OUTPUT_NAME = "logits"
INPUT_CHANNELS = ("range", "x", "y", "z", "remission")
DEFAULT_OPSET = 18  # the exporter's native opset; lower ones go through onnx's version converter
INSTALL_HINT = 'pip install -e ".[export]"'
MAX_PROTO_BYTES = 2**31 - 1  # protobuf's limit for one serialised message


def require_onnx(runtime: bool = True) -> None:
    """Raise LidarsegError naming the missing packages: onnx and onnxscript (export) and, with `runtime`,
    onnxruntime (check and timing)."""
    names = ["onnx", "onnxscript"] + (["onnxruntime"] if runtime else [])
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise LidarsegError(f"ONNX export needs {', '.join(missing)} (not installed); install the export extras "
                            f"with: {INSTALL_HINT}")


def check_writable(path) -> Path:
    """Fail early (DataError naming the path) if `path` cannot be written: it is a directory, or its directory
    cannot be created or written to. Creates the directory."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"output {path} is a directory; expected a file name such as {path / 'model.onnx'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DataError(f"output {path}: cannot write in directory {path.parent} ({exc.strerror or exc})") from None
    return path


def check_exportable(model: torch.nn.Module) -> torch.nn.Module:
    from .data.representation import representation_of
    mode = representation_of(model).name
    if mode != "range":  # the ONNX graph takes the range representation's input [B,5,H,W]
        raise ConfigError(f"export supports range-image networks (input_mode 'range': RangeNet, CENet, SalsaNext); "
                          f"this model ({type(model).__name__}) has input_mode {mode!r}: KPRNet's KPConv point head "
                          f"gathers per-point neighbours with data-dependent indices and is not exportable to ONNX")
    return model


def export_size(model: torch.nn.Module, cfg: dict, height: int | None = None, width: int | None = None
                ) -> tuple[int, int]:
    """(H, W) of the export: the given values, else the config's data.sensor. W must be a multiple of the network's
    total width stride (unless the model pads the width); ConfigError names the bad value."""
    from .data.projection import SensorGeometry
    geom = SensorGeometry.from_config(cfg["data"]["sensor"], source="data.sensor")
    h = geom.height if height is None else height
    w = geom.width if width is None else width
    for name, v in (("height", h), ("width", w)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"export {name}={v!r}: expected a positive integer")
    stride = int(getattr(model, "width_stride", 1))
    if w % stride and not getattr(model, "pad_width", False):
        lower = (w // stride) * stride
        hint = f"{lower} or {lower + stride}" if lower else f"{stride}"
        raise ConfigError(f"export width={w}: not divisible by {stride}, the network's total width stride "
                          f"(output stride); use a multiple of {stride} such as {hint}")
    return h, w


def onnx_metadata(cfg: dict, label_map, height: int, width: int, batch: int | str = 1) -> dict[str, str]:
    """The metadata_props of an export: {key: JSON string}. Keys: lidarseg_version, model, num_classes, sensor
    (height, width, fov_up, fov_down in degrees), projection, input_channels, mean, std, empty_pixel, input, output,
    class_names, learning_map_inv ({train id: raw id}; JSON object keys are strings)."""
    from . import __version__
    from .data.projection import SensorGeometry
    geom = SensorGeometry.from_config(cfg["data"]["sensor"], source="data.sensor")
    sensor = {"height": int(height), "width": int(width), "fov_up": float(geom.fov_up),
              "fov_down": float(geom.fov_down)}
    C = int(label_map.num_classes)
    meta = {
        "lidarseg_version": __version__,
        "model": dict(cfg["model"]),
        "num_classes": C,
        "sensor": sensor,
        "projection": "spherical (RangeNet++): column from the yaw, row from the pitch over [fov_down, fov_up], "
                      "the nearest point wins each pixel; see lidarseg.data.projection.spherical_projection",
        "input_channels": list(INPUT_CHANNELS),
        "mean": [float(v) for v in cfg["data"]["mean"]],
        "std": [float(v) for v in cfg["data"]["std"]],
        "empty_pixel": 0.0,
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [batch, len(INPUT_CHANNELS), height, width],
                  "value": "(channel - mean) / std where a point projects, empty_pixel elsewhere"},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [batch, C, height, width],
                   "value": "class logits; argmax over dim 1 = train id, learning_map_inv maps it to the raw id"},
        "class_names": list(label_map.names),
        "learning_map_inv": {str(k): int(v) for k, v in sorted(label_map.learning_map_inv.items())},
    }
    return {k: json.dumps(v) for k, v in meta.items()}


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's progress prints, warnings and INFO/WARNING logs; yields the captured text."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def build_onnx(model: torch.nn.Module, cfg: dict, label_map, *, height: int | None = None,
               width: int | None = None, batch: int = 1, dynamic_batch: bool = False, opset: int = DEFAULT_OPSET):
    """The ONNX ModelProto of a range-image network, with metadata: input `range_image` float32 [B,5,H,W] ->
    `logits` [B,C,H,W]; B is `batch`, or symbolic ("batch") with `dynamic_batch`. Nothing is written."""
    require_onnx(runtime=False)
    import onnx
    check_exportable(model)
    h, w = export_size(model, cfg, height, width)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"export batch={batch!r}: expected a positive integer")
    if isinstance(opset, bool) or not isinstance(opset, int) or not 7 <= opset <= 30:
        raise ConfigError(f"export opset={opset!r}: expected an ONNX opset number such as {DEFAULT_OPSET}")
    net = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    if getattr(net, "channels_last", False):
        net.channels_last = False  # RangeNet.forward would convert the input back to channels_last
    in_ch = int(getattr(net, "in_channels", len(INPUT_CHANNELS)))
    example_b = max(batch, 2) if dynamic_batch else batch  # torch.export specialises size-1 dims
    example = torch.zeros(example_b, in_ch, h, w)
    dynamic = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    name = cfg["model"].get("name", type(model).__name__)
    try:
        with _quiet_exporter() as log:
            program = torch.onnx.export(net, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes=dynamic, opset_version=opset, dynamo=True,
                                        external_data=False, verbose=False)
        proto = program.model_proto
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; report one line, not its traceback
        detail = str(exc).strip().splitlines()
        head = next((ln for ln in detail if ln.strip()), "")
        tail = [ln for ln in log.getvalue().strip().splitlines() if ln.strip()][-3:]
        raise LidarsegError(f"torch.onnx.export failed for {name} at [{example_b},{in_ch},{h},{w}], opset {opset}: "
                            f"{type(exc).__name__}: {head[:400]}" + (f" (exporter log: {' | '.join(tail)})"
                                                                     if tail else "")) from None
    props = onnx_metadata(cfg, label_map, h, w, "batch" if dynamic_batch else batch)
    kept = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.doc_string = (f"lidarseg {name}: {INPUT_NAME} [B,{in_ch},{h},{w}] (normalised range image) -> "
                        f"{OUTPUT_NAME} [B,{label_map.num_classes},{h},{w}]; see metadata_props and docs/deploy.md")
    if proto.ByteSize() > MAX_PROTO_BYTES:
        raise LidarsegError(f"{name}: the ONNX model is {proto.ByteSize() / 2**30:.1f} GiB, over protobuf's 2 GiB "
                            f"single-file limit")
    onnx.checker.check_model(proto)
    return proto


@dataclass
class CheckResult:
    """onnxruntime vs torch on the same input: max_abs_diff, scale (max |torch logit|), tolerance
    (rtol x max(scale, 1)), argmax_agreement (fraction of pixels with the same class), shape of the logits."""
    max_abs_diff: float
    scale: float
    tolerance: float
    argmax_agreement: float
    shape: tuple

    def line(self) -> str:
        return (f"max |onnxruntime - torch| = {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}, logit scale "
                f"{self.scale:.3g}); argmax agreement {100 * self.argmax_agreement:.3f} % of "
                f"{_pixels(self.shape)} pixels")


def _pixels(shape) -> int:
    n = 1
    for i, s in enumerate(shape):
        if i != 1:
            n *= int(s)
    return n


def _session(model_or_path, threads: int | None = None):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = str(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):
    """The model in eval mode for the block, its previous mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def _torch_logits(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    dev = next(model.parameters()).device
    with _eval_mode(model):
        return model(inputs.to(dev)).float().cpu()


def check_onnx(onnx_model, model: torch.nn.Module, inputs: torch.Tensor, rtol: float = 1e-3,
               threads: int | None = None) -> CheckResult:
    """Run `onnx_model` (a path or serialised bytes) with onnxruntime on `inputs` [B,5,H,W] and compare with the
    torch `model`'s logits [B,C,H,W]. Raises LidarsegError when max |difference| > rtol x max(1, max |logit|)."""
    require_onnx(runtime=True)
    import numpy as np
    ref = _torch_logits(model, inputs).numpy()
    out = _session(onnx_model, threads).run([OUTPUT_NAME], {INPUT_NAME: inputs.cpu().float().numpy()})[0]
    if out.shape != ref.shape:
        raise LidarsegError(f"ONNX check failed: onnxruntime logits have shape {list(out.shape)}, torch "
                            f"{list(ref.shape)}")
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    res = CheckResult(max_abs_diff=float(np.abs(out - ref).max()) if ref.size else 0.0, scale=scale,
                      tolerance=float(rtol) * max(scale, 1.0),
                      argmax_agreement=float((out.argmax(1) == ref.argmax(1)).mean()), shape=tuple(ref.shape))
    if not res.max_abs_diff <= res.tolerance:  # also catches NaN
        raise LidarsegError(f"ONNX check failed: {res.line()}; the exported graph does not reproduce the torch "
                            f"model (rtol {rtol:g})")
    return res


def export_onnx(model: torch.nn.Module, cfg: dict, label_map, path, *, height: int | None = None,
                width: int | None = None, batch: int = 1, dynamic_batch: bool = False, opset: int = DEFAULT_OPSET,
                check_inputs: torch.Tensor | None = None, rtol: float = 1e-3, threads: int | None = None) -> dict:
    """Export a range-image `model` to `path` (see `build_onnx` for the graph and metadata). With `check_inputs`
    [B,5,H,W], `check_onnx` runs on the bytes first and the file is only written if it passes.
    Returns {"path", "bytes", "opset", "height", "width", "batch" (int or "batch"), "check" (CheckResult or None)}."""
    from .data.io import atomic_write_bytes
    path = check_writable(path)
    proto = build_onnx(model, cfg, label_map, height=height, width=width, batch=batch, dynamic_batch=dynamic_batch,
                       opset=opset)
    data = proto.SerializeToString()
    check = None
    if check_inputs is not None:
        try:
            check = check_onnx(data, model, check_inputs, rtol, threads)
        except LidarsegError as exc:
            raise LidarsegError(f"{exc}; {path} was not written") from None
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise DataError(f"output {path}: cannot write ({exc.strerror or exc})") from None
    h, w = export_size(model, cfg, height, width)
    opsets = {o.domain: o.version for o in proto.opset_import}
    return {"path": path, "bytes": len(data), "opset": opsets.get("", opset), "height": h, "width": w,
            "batch": "batch" if dynamic_batch else batch, "check": check}


def read_metadata(path) -> dict:
    """The metadata_props of an ONNX file, JSON values decoded; `learning_map_inv` with int keys."""
    require_onnx(runtime=False)
    import onnx
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ONNX file not found: {path}")
    proto = onnx.load(str(path), load_external_data=False)
    meta = {}
    for p in proto.metadata_props:
        try:
            meta[p.key] = json.loads(p.value)
        except ValueError:
            meta[p.key] = p.value
    if isinstance(meta.get("learning_map_inv"), dict):
        meta["learning_map_inv"] = {int(k): int(v) for k, v in meta["learning_map_inv"].items()}
    return meta


def scan_inputs(cfg: dict, label_map, height: int, width: int, batch: int = 1, split: str | None = None
                ) -> tuple[torch.Tensor, str]:
    """A realistic network input [batch,5,H,W]: the first `batch` scans of `split` (default data.val_split) of the
    config's dataset through the training pipeline (projection at HxW, normalisation), repeated if the split is
    shorter; a seeded random normal tensor if the dataset cannot be read. Returns (input, description)."""
    from .data.projection import SensorGeometry
    from .engine import builders
    d = cfg["data"]
    split = split or d.get("val_split", "valid")
    try:
        sensor = {**SensorGeometry.from_config(d["sensor"], source="data.sensor").to_dict(), "height": int(height),
                  "width": int(width)}
        ds = builders.dataset({**cfg, "data": {**d, "sensor": sensor}}, "infer", "range", label_map, split=split,
                              train=False)
        if len(ds) == 0:
            raise DataError(f"split {split} has no scans")
        n = min(batch, len(ds))
        x = torch.stack([ds[i % len(ds)]["input"] for i in range(batch)])
        return x, f"{n} scan(s) of split {split} of {builders.data_root(cfg)}"
    except LidarsegError as exc:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, len(INPUT_CHANNELS), int(height), int(width), generator=g)
        return x, f"a random normal input (no dataset scan: {exc})"


def latency(onnx_path, model: torch.nn.Module, inputs: torch.Tensor, runs: int = 10, warmup: int = 2,
            threads: int | None = None) -> dict:
    """Median network time per scan (seconds) of onnxruntime and of torch on `inputs` [B,5,H,W] (one batch per
    run, divided by B), after `warmup` runs each. Informative only: {"onnxruntime", "torch", "runs", "threads"}."""
    require_onnx(runtime=True)
    threads = int(threads or torch.get_num_threads())
    sess = _session(onnx_path, threads)
    feed = {INPUT_NAME: inputs.cpu().float().numpy()}
    dev = next(model.parameters()).device
    x = inputs.to(dev)

    def run_torch():
        with torch.inference_mode():
            model(x)

    def run_ort():
        sess.run([OUTPUT_NAME], feed)

    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None
    out = {"runs": int(runs), "threads": threads, "batch": int(inputs.shape[0]), "device": dev.type}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with _eval_mode(model):
            out["onnxruntime"] = statistics.median(time_call(run_ort, max(1, runs), max(0, warmup))) / inputs.shape[0]
            out["torch"] = statistics.median(time_call(run_torch, max(1, runs), max(0, warmup), sync)) / inputs.shape[0]
    finally:
        torch.set_num_threads(before)
    return out

"""`lidarseg export`: a training checkpoint -> an ONNX file of the range-image network, for onnxruntime / TensorRT.

    lidarseg export --checkpoint runs/demo/best.pt --out runs/demo/model.onnx
    lidarseg export --checkpoint best.pt --out model.onnx --height 64 --width 2048 --dynamic-batch --opset 17

Input `range_image` float32 [B,5,H,W] (normalised as in training), output `logits` [B,C,H,W]; the sensor geometry,
channel order, mean/std and learning_map_inv are in the file's metadata (docs/deploy.md). Unless --no-check, the
export is run with onnxruntime on a scan of the config's dataset (a random input if it cannot be read), compared
with the torch logits (the file is only written if they agree) and both are timed on this CPU.
"""
from __future__ import annotations

from pathlib import Path


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by `lidarseg train` (last.pt/best.pt)")
    parser.add_argument("--out", required=True, help="ONNX file to write, e.g. model.onnx")
    parser.add_argument("--height", type=int, help="range image height (default: the config's data.sensor.height)")
    parser.add_argument("--width", type=int, help="range image width, a multiple of the network's output stride "
                        "(default: the config's data.sensor.width)")
    parser.add_argument("--batch", type=int, default=1, help="batch size of the graph (default: %(default)s)")
    parser.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension (any B >= 1)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 18, the exporter's own; "
                        "lower ones are converted by onnx)")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison and the timing "
                        "(onnxruntime is then not needed)")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="check: largest allowed max |onnxruntime - "
                        "torch|, relative to max(1, max |logit|) (default: %(default)g)")
    parser.add_argument("--data", help="dataset root of the check's scan (default: the data.root of the config)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per runtime, median reported; 0 = no "
                        "timing (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="CPU threads of torch and onnxruntime for the check and the "
                        "timing (default: the config's train.threads, else torch's default)")


def run(args) -> int:
    from ..errors import ConfigError
    from ..export import DEFAULT_OPSET, check_writable, export_onnx, latency, require_onnx, scan_inputs

    for name in ("batch", "threads", "opset"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name} {value}: expected a positive integer")
    for name in ("height", "width"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name} {value}: expected a positive integer")
    if args.runs < 0 or not args.tolerance > 0:
        raise ConfigError(f"--runs {args.runs} / --tolerance {args.tolerance}: expected runs >= 0, tolerance > 0")
    check = not args.no_check
    require_onnx(runtime=check)
    out = check_writable(args.out)

    import torch

    from ..engine.inference import load_model
    model, cfg, label_map = load_model(args.checkpoint, torch.device("cpu"))
    threads = args.threads or cfg["train"].get("threads") or torch.get_num_threads()
    torch.set_num_threads(int(threads))
    if args.data:
        cfg = {**cfg, "data": {**cfg["data"], "root": str(Path(args.data).expanduser().resolve())}}

    from ..export import check_exportable, export_size
    check_exportable(model)
    h, w = export_size(model, cfg, args.height, args.width)
    opset = args.opset or DEFAULT_OPSET
    b = "B" if args.dynamic_batch else str(args.batch)
    print(f"checkpoint {args.checkpoint}: {cfg['model']['name']}, {label_map.num_classes} classes; exporting "
          f"range_image [{b},5,{h},{w}] -> logits [{b},{label_map.num_classes},{h},{w}], opset {opset}"
          + (" (dynamic batch)" if args.dynamic_batch else ""))
    inputs = None
    if check:
        inputs, source = scan_inputs(cfg, label_map, h, w, batch=args.batch)
        print(f"check input: {source}")
    result = export_onnx(model, cfg, label_map, out, height=h, width=w, batch=args.batch,
                         dynamic_batch=args.dynamic_batch, opset=opset, check_inputs=inputs, rtol=args.tolerance,
                         threads=int(threads))
    if result["check"] is not None:
        print(f"check (onnxruntime vs torch, batch {args.batch}): {result['check'].line()}")
    print(f"wrote {out} ({result['bytes'] / 2**20:.1f} MiB, opset {result['opset']}); metadata: sensor, "
          f"input_channels, mean, std, learning_map_inv, class_names (docs/deploy.md)")
    if check and args.runs:
        t = latency(out, model, inputs, runs=args.runs, threads=int(threads))
        ratio = t["torch"] / t["onnxruntime"] if t["onnxruntime"] > 0 else float("nan")
        print(f"network latency per scan on this CPU (batch {t['batch']}, {t['threads']} thread(s), median of "
              f"{t['runs']} runs; informative only): onnxruntime {1000 * t['onnxruntime']:.2f} ms, torch "
              f"{1000 * t['torch']:.2f} ms (torch / onnxruntime = {ratio:.2f})")
    return 0

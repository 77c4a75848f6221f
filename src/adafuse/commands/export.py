"""``adafuse export``: a checkpoint as an ONNX graph (clip model or streaming step), checked with onnxruntime."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    p = sub.add_parser(
        "export",
        help="write a checkpoint as an ONNX graph (clip model or streaming step)",
        description="Export a trained checkpoint to ONNX with evaluation semantics (arg-max policies). "
        "--mode clip: clips (N, T, 3, H, W) -> logits (N, K) and the policy masks (N, T, G, 3) of every fusion. "
        "--mode stream: one frame of B streams with the state (causal-shift buffers, previous pooled inputs, "
        "previous conv1 outputs, LSTM state) as explicit inputs and outputs; needs a causal ResNet model. "
        "The graph computes every channel (masked-dense): it deploys AdaFuse's accuracy, not its savings. "
        "When onnxruntime is installed the file is run once on random input and compared with PyTorch.",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="an adafuse checkpoint (adafuse train)")
    p.add_argument("out", metavar="OUT", help="the .onnx file to write")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="output format (onnx)")
    p.add_argument("--mode", choices=["clip", "stream"], default="clip", help="clip model (default) or streaming step")
    p.add_argument("--batch", type=int, help="a fixed batch size (default: a dynamic batch axis)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.add_argument("--input-size", type=int, help="frame side (default: the checkpoint's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, export, check, report."""
    import importlib.util

    from adafuse.checkpoint import load_model
    from adafuse.inference.export import export_onnx, verify_onnx

    model, _ = load_model(args.checkpoint)
    export = export_onnx(model, args.out, mode=args.mode, batch_size=args.batch, opset=args.opset,
                         input_size=args.input_size)  # fmt: skip
    checked = importlib.util.find_spec("onnxruntime") is not None
    difference = verify_onnx(model, export) if checked else None
    result = {
        "path": str(export.path),
        "format": args.format,
        "mode": export.mode,
        "opset": export.opset,
        "batch": args.batch or "dynamic",
        "inputs": export.inputs,
        "outputs": export.outputs,
        "bytes": export.path.stat().st_size,
        "seconds": round(export.seconds, 2),
        "max_difference": difference,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    config = model.config
    print(f"{export.path}: {config.method} / {config.backbone}, {export.mode} mode, opset {export.opset}, "
          f"{result['bytes'] / 2**20:.1f} MiB, {export.seconds:.1f} s")  # fmt: skip
    for kind, values in (("in ", export.inputs), ("out", export.outputs)):
        for name, shape in values.items():
            print(f"  {kind} {name}  {list(shape)}")
    if difference is None:
        print("not checked (onnxruntime is not installed)")
    else:
        print(f"onnxruntime vs PyTorch: max difference {difference:.2e} (relative to the logits' scale)")
    return 0

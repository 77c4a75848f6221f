"""ONNX export of a recognizer: the clip model, or the streaming step with its state as explicit inputs/outputs.

::

    from adafuse.inference.export import export_onnx

    export_onnx(model, "clip.onnx")                    # clips (N, T, 3, H, W) -> logits (N, K), masks (N, T, G, 3)
    export_onnx(model, "step.onnx", mode="stream")     # frames (B, 3, H, W), state -> logits (B, K), masks, state

Graphs are written with ``torch.export`` (``torch.onnx.export(dynamo=True)``), PyTorch's supported exporter: it
traces shapes symbolically, so the batch is a dynamic axis it has proven (not assumed), and code it cannot capture
is an export error rather than a frozen constant. The arg-max policies become ``ArgMax`` + ``ScatterElements`` and
the temporal shift concatenations of slices. (The deprecated TorchScript exporter also gives correct graphs of these
models today, 10-30x faster, but its tracer silently freezes every Python-level decision into the graph.) An
exported graph is masked-dense: it computes every channel and multiplies the masks in, as the recognizer does. It
deploys AdaFuse's accuracy, not its savings; :class:`~adafuse.inference.SparseRecognizer` is what skips.

Every file carries metadata (``onnx.ModelProto.metadata_props``): ``adafuse.config`` (the model's
:class:`~adafuse.models.ModelConfig` as JSON: classes, input size, normalization), ``adafuse.mode`` and, in stream
mode, ``adafuse.state`` (the state tensors' names and per-stream shapes).
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from adafuse.errors import UserError
from adafuse.inference.stream_step import StreamingStep, check_streamable
from adafuse.layers.baseline_fusion import RandomFusion
from adafuse.models.recognizer import Recognizer

Mode = Literal["clip", "stream"]
Shape = tuple[int | str, ...]  # "batch" marks the dynamic axis
EXAMPLE_BATCH = 2  # torch.export specializes a dimension of size 1, so a dynamic batch is traced at 2


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ``.onnx`` file (weights inside). mode: ``"clip"`` or ``"stream"``. opset: the ONNX opset.
        inputs / outputs: graph input and output names with their shapes (``"batch"``: the dynamic axis).
        seconds: time the export took.
    """

    path: Path
    mode: Mode
    opset: int
    inputs: dict[str, Shape]
    outputs: dict[str, Shape]
    seconds: float


class _ClipGraph(nn.Module):
    """clips (N, T, 3, H, W) -> (logits (N, K), *policies): deterministic policies, flattened in ``names`` order."""

    def __init__(self, model: Recognizer, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, policies = self.model.forward_with_policies(clips, sample=False)
        return (logits, *(policies[name] for name in self.names))


def check_exportable(model: Recognizer, *, mode: Mode) -> None:
    """Raise :class:`~adafuse.errors.UserError` (one line) unless ``model`` exports in ``mode``."""
    if mode not in ("clip", "stream"):
        raise UserError(f"export mode must be 'clip' or 'stream', got {mode!r}")
    for name, fusion in model.fusions().items():
        if isinstance(fusion, RandomFusion):
            raise UserError(f"{name}: the random policy draws its masks from a seeded generator when it runs; "
                            "a graph would freeze one draw, so it is not exported")  # fmt: skip
    if mode == "stream":
        check_streamable(model)


def _batch_axes(graph: nn.Module, args: tuple[torch.Tensor, ...], dim: torch.export.Dim) -> tuple:
    """``dynamic_shapes`` marking axis 0 of every input: (clips,), (frames,) or (frames, (*state)) (``*state`` is
    one argument to ``torch.export``, absent when empty)."""
    if isinstance(graph, StreamingStep) and len(args) > 1:
        return ({0: dim}, tuple({0: dim} for _ in args[1:]))
    return ({0: dim},)


def _example_batch(batch_size: int | None) -> int:
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch size must be a positive integer, got {batch_size}")
    return EXAMPLE_BATCH if batch_size is None else batch_size


def export_onnx(
    model: Recognizer,
    path: str | Path,
    *,
    mode: Mode = "clip",
    batch_size: int | None = None,
    opset: int | None = None,
    input_size: int | None = None,
) -> OnnxExport:
    """Write ``model`` as an ONNX graph (evaluation semantics, arg-max policies); the model is left untouched.

    ``mode="clip"``: input ``clips`` (N, T, 3, H, W) -> ``logits`` (N, K) and one output per policy, named as
    :meth:`~adafuse.models.Recognizer.forward_with_policies` names them (``backbone.layer1.0.fusion``: the
    (N, T, G, 3) one-hot mask; CGNet's gated convs: the gated-off share per frame, (N·T,)).
    ``mode="stream"``: the :class:`~adafuse.inference.stream_step.StreamingStep` of a causal ResNet model: inputs
    ``frames`` (B, 3, H, W) and ``state.<name>`` for each state tensor, outputs ``logits`` (B, K), the masks
    (B, G, 3) by fusion name and ``next_state.<name>``, in the order of the state inputs. Zero state is a stream's
    first frame.

    Args:
        model: a recognizer (:func:`check_exportable` says which ones).
        path: the ``.onnx`` file to write (weights inside; a model over 2 GB is not supported).
        mode: ``"clip"`` or ``"stream"``.
        batch_size: a fixed N (or B); default: a dynamic batch axis named ``"batch"``.
        opset: the ONNX opset (default: the exporter's; below 18 through ONNX's version converter).
        input_size: frame side H = W; default ``model.config.input_size``.

    Raises:
        UserError: a model that cannot be exported in ``mode``, bad sizes, or the ``bench`` extra not installed.
    """
    try:
        import onnx  # noqa: F401 - the exporter needs both
        import onnxscript  # noqa: F401
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxscript: pip install 'adafuse[bench]'") from None
    check_exportable(model, mode=mode)
    batch = _example_batch(batch_size)
    size = input_size or model.config.input_size
    if size < 32:
        raise UserError(f"input size must be at least 32, got {size}")
    dim = torch.export.Dim("batch") if batch_size is None else None
    if mode == "clip":
        model = copy.deepcopy(model).eval()
        args = (torch.zeros(batch, model.num_segments, 3, size, size),)
        with torch.no_grad():
            names = list(model.forward_with_policies(args[0], sample=False)[1])
        graph: nn.Module = _ClipGraph(model, names).eval()
        input_names, output_names = ["clips"], ["logits", *names]
    else:
        graph = StreamingStep(model, input_size=size)
        args = (torch.zeros(batch, 3, size, size), *graph.init_state(batch))
        names = graph.policy_names
        input_names = ["frames", *(f"state.{n}" for n in graph.state_names)]
        output_names = ["logits", *names, *(f"next_state.{n}" for n in graph.state_names)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracing chatter is not the user's business
        program = torch.onnx.export(
            graph, args, dynamo=True, input_names=input_names, output_names=output_names, opset_version=opset,
            dynamic_shapes=None if dim is None else _batch_axes(graph, args, dim), external_data=False,
            verbose=False,
        )  # fmt: skip
    meta = {"adafuse.config": json.dumps(model.config.to_dict()), "adafuse.mode": mode}
    if mode == "stream":
        meta["adafuse.state"] = json.dumps({n: list(s[1:]) for n, s in graph.state_shapes(1).items()})
    program.model.metadata_props.update(meta)
    program.save(path)
    got = program.model.opset_imports[""]
    if opset is not None and got != opset:
        path.unlink()
        raise UserError(f"the exporter could not write opset {opset} (it produced {got}); try --opset {got} or more")

    def shapes(values) -> dict[str, Shape]:
        return {v.name: tuple(d if isinstance(d, int) else str(d) for d in v.shape) for v in values}

    return OnnxExport(path=path, mode=mode, opset=got, inputs=shapes(program.model.graph.inputs),
                      outputs=shapes(program.model.graph.outputs), seconds=time.perf_counter() - start)  # fmt: skip


def verify_onnx(model: Recognizer, export: OnnxExport, *, seed: int = 0) -> float:
    """Run an exported graph under onnxruntime (CPU) on random input and compare it with ``model``.

    Clip mode: a clip batch (3 videos with a dynamic batch, else the fixed one); stream mode: ``num_segments``
    frames from zero state against :meth:`~adafuse.models.Recognizer.frame_logits`. Returns the largest
    ``|onnxruntime − PyTorch|`` over the logits and the policy masks, divided by ``max(1, max |PyTorch logits|)``:
    float32 rounding gives about 1e-6; a wrong graph gives O(1).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("checking an export needs onnxruntime: pip install 'adafuse[bench]'") from None
    first = next(iter(export.inputs.values()))
    n = first[0] if isinstance(first[0], int) else 3
    size = first[-1]
    generator = torch.Generator().manual_seed(seed)
    clips = torch.randn(n, model.num_segments, 3, size, size, generator=generator)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits, policies = model.forward_with_policies(clips, per_frame=export.mode == "stream", sample=False)
    finally:
        model.train(was_training)
    session = ort.InferenceSession(str(export.path), providers=["CPUExecutionProvider"])
    names = list(export.outputs)
    if export.mode == "clip":
        outputs = [dict(zip(names, session.run(None, {"clips": clips.numpy()}), strict=True))]
        expected = [{"logits": logits, **policies}]
    else:
        state = {name: np.zeros([n, *shape[1:]], np.float32) for name, shape in list(export.inputs.items())[1:]}
        outputs, expected = [], []
        for t in range(model.num_segments):
            out = dict(zip(names, session.run(None, {"frames": clips[:, t].numpy(), **state}), strict=True))
            state = {name: out[f"next_{name}"] for name in state}
            outputs.append(out)
            expected.append({"logits": logits[:, t], **{k: v[:, t] for k, v in policies.items()}})
    scale = max(1.0, logits.abs().max().item())
    worst = 0.0
    for out, ref in zip(outputs, expected, strict=True):
        for name, value in ref.items():
            worst = max(worst, float(np.abs(out[name] - value.numpy()).max()) / scale)
    return worst

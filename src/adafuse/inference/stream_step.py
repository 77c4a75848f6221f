"""One frame of a causal recognizer as a pure function of (frames, state): the streaming graph ONNX export writes.

::

    step = StreamingStep(model)                     # a causal ResNet recognizer (TSN, causal TSM, AdaFuse, LSTM)
    state = step.init_state(batch_size=2)           # zeros: every stream at its first frame
    for frames in source:                           # (2, 3, H, W)
        logits, *rest = step(frames, *state)        # logits (2, K) == model.frame_logits(clip)[:, t]
        masks, state = rest[: len(step.policy_names)], rest[len(step.policy_names) :]
    # a new video in stream i: zero row i of every state tensor

Nothing is kept on the module: the state goes in and comes out as tensors, so a runtime that knows nothing of
PyTorch (onnxruntime, TensorRT) carries it. The step is masked-dense like the recognizer: every channel is
computed and the policy masks are multiplied in (:class:`~adafuse.inference.SparseRecognizer` is what skips).
Per residual block the state is, where the block needs it:

- ``<block>.shift`` (B, C_in/shift_div, H, W): the previous frame's first channels of the block input (causal TSM);
- ``<block>.pooled`` (B, C_in): the previous frame's pooled (shifted) block input, ``v_{t-1}`` of the policy;
- ``<block>.conv1`` (B, C, H', W'): the previous frame's raw conv1 output (post BN-ReLU, unfused), what REUSE copies;

and ``lstm.h``, ``lstm.c`` (B, hidden) for an LSTM consensus. Zeros are exactly a stream's first frame.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from adafuse.errors import UserError
from adafuse.layers.adaptive_fusion import AdaptiveFusion
from adafuse.layers.fusion import fuse
from adafuse.layers.temporal_shift import TemporalShift
from adafuse.models.recognizer import Recognizer
from adafuse.models.resnet import ResNet


def check_streamable(model: Recognizer) -> None:
    """Raise :class:`~adafuse.errors.UserError` (one line) unless ``model`` has a :class:`StreamingStep`."""
    if not isinstance(model.backbone, ResNet):
        raise UserError(f"the streaming step supports resnet* backbones only, got {model.config.backbone}")
    for block in model.backbone.blocks():
        if type(block.conv1) is not nn.Conv2d:
            raise UserError(f"the streaming step does not support {type(block.conv1).__name__} (e.g. CGNet) convs")
        if isinstance(block.shift, TemporalShift) and not block.shift.causal:
            raise UserError(
                "this model uses the bidirectional (offline) temporal shift, which looks one frame ahead; "
                "streaming needs a causal model (build_model(..., causal_shift=True))"
            )
        if block.fusion is not None and not isinstance(block.fusion, AdaptiveFusion):
            raise UserError(f"the streaming step supports learned AdaFuse policies only, not "
                            f"{type(block.fusion).__name__}")  # fmt: skip


def _conv_out(conv: nn.Conv2d | nn.MaxPool2d, h: int, w: int) -> tuple[int, int]:
    """Spatial output size of a convolution or pooling layer on an h × w input."""
    params = (conv.kernel_size, conv.stride, conv.padding, conv.dilation)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (v if isinstance(v, tuple) else (v, v) for v in params)
    return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1


class StreamingStep(nn.Module):
    """One frame of B independent streams of a causal ResNet recognizer, its state as explicit tensors.

    ``forward(frames, *state) -> (logits, *masks, *next_state)``: frames (B, 3, H, W) with H = W = ``input_size``;
    ``state`` the tensors named :attr:`state_names` (shapes :meth:`state_shapes`); logits (B, K), the frame logits
    of :meth:`~adafuse.models.Recognizer.frame_logits`; masks (B, G, 3) the deterministic (arg-max) policy masks of
    the fusions named :attr:`policy_names`; ``next_state`` the state for the next frame, in the order of the input.
    Evaluation semantics (BatchNorm statistics, no dropout, arg-max policies).

    Args:
        model: a causal recognizer (:func:`check_streamable`); the step holds an evaluation-mode copy of it, so the
            caller's model is left as it is.
        input_size: frame side; default ``model.config.input_size``.
    """

    def __init__(self, model: Recognizer, *, input_size: int | None = None) -> None:
        super().__init__()
        check_streamable(model)
        self.model = copy.deepcopy(model).eval()
        self.input_size = input_size or model.config.input_size
        net: ResNet = self.model.backbone
        shapes: dict[str, tuple[int, ...]] = {}
        h, w = _conv_out(net.maxpool, *_conv_out(net.conv1, self.input_size, self.input_size))
        for name, block in net.named_blocks():
            key, c_in = f"backbone.{name}", block.conv1.in_channels
            if isinstance(block.shift, TemporalShift):
                shapes[f"{key}.shift"] = (c_in // block.shift.shift_div, h, w)
            if block.fusion is not None and block.fusion.history:
                shapes[f"{key}.pooled"] = (c_in,)
                shapes[f"{key}.conv1"] = (block.conv1.out_channels, *_conv_out(block.conv1, h, w))
            h, w = _conv_out(block.conv2, *_conv_out(block.conv1, h, w))
        if self.model.lstm is not None:
            shapes["lstm.h"] = shapes["lstm.c"] = (self.model.lstm.hidden_size,)
        self._shapes = shapes
        self.state_names: list[str] = list(shapes)
        self.policy_names: list[str] = [f"backbone.{name}.fusion" for name, b in net.named_blocks() if b.fusion]
        self.eval()

    def state_shapes(self, batch_size: int) -> dict[str, tuple[int, ...]]:
        """The shape of every state tensor for ``batch_size`` streams, by name (the order of :attr:`state_names`)."""
        return {name: (batch_size, *shape) for name, shape in self._shapes.items()}

    def init_state(self, batch_size: int = 1) -> list[torch.Tensor]:
        """Zero state for ``batch_size`` streams (every stream at its first frame), in :attr:`state_names` order."""
        return [torch.zeros(shape) for shape in self.state_shapes(batch_size).values()]

    def forward(self, frames: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(state) != len(self.state_names):
            raise ValueError(f"the step takes {len(self.state_names)} state tensors ({', '.join(self.state_names)}), "
                             f"got {len(state)}")  # fmt: skip
        previous = dict(zip(self.state_names, state, strict=True))
        following: dict[str, torch.Tensor] = {}
        masks: list[torch.Tensor] = []
        net: ResNet = self.model.backbone
        x = net.stem(frames)
        for name, block in net.named_blocks():
            key = f"backbone.{name}"
            xs = x
            if isinstance(block.shift, TemporalShift):
                xs, following[f"{key}.shift"] = block.shift.step(x, previous[f"{key}.shift"])
            y = block.relu(block.bn1(block.conv1(xs)))
            fusion = block.fusion
            if fusion is not None:
                mask, v = fusion.step(xs, previous.get(f"{key}.pooled"))
                masks.append(mask)
                if fusion.history:
                    following[f"{key}.pooled"], following[f"{key}.conv1"] = v, y
                y = fuse(y, mask[:, None], previous=previous.get(f"{key}.conv1"))
            x = block.after_fusion(x, xs, y)
        features = torch.flatten(net.avgpool(x), 1)
        if self.model.lstm is not None:
            hc = (previous["lstm.h"][None], previous["lstm.c"][None])
            out, (h, c) = self.model.lstm(features[:, None], hc)
            features, following["lstm.h"], following["lstm.c"] = out[:, 0], h[0], c[0]
        logits = self.model.head(features)
        return (logits, *masks, *(following[name] for name in self.state_names))

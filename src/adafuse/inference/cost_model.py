"""When does slicing pay? A measured, per-layer cost model for the sparse executor.

A channel-sliced convolution is not free: its weight is gathered and re-laid out on every call, while the dense
convolution runs on a weight pre-packed once. On a CPU at batch 1 the sliced kernel wins in the early, activation-
heavy layers from modest sparsity on, but in the deep, weight-heavy layers only when few channels are active.
:meth:`CostModel.measure` times, for every dynamic convolution of an executor, the dense kernel and the sliced
kernel at a few active fractions on this machine and thread count, fits ``t(f) = a + b·f`` to the sliced times
and keeps the break-even fraction ``(t_dense − a) / b``. The executor slices a layer for a frame when the
frame's active fraction is below it, and runs it densely otherwise.

Kernels are timed with cold caches (a buffer larger than L2 is rewritten before every call), as inside a network
where each layer's weights were last touched a frame ago; a sliced second conv is timed with the gather that
assembles its input. Slicing a block's first conv has a deferred cost when its policy can REUSE: channels reused
at t+1 but not kept at t are computed at t+1 from the cached input of t, a second pass over that input. That pass
(timed as a sliced call on an eighth of the channels) is charged to slicing.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from adafuse.inference.kernels import FoldedConv, gather_units, to_channels_last

# Measurements are shared by all executors of a process: same shape + same thread count = same timings.
_MEASURED: dict[tuple, LayerTiming] = {}
_FLUSH_BYTES = 8 << 20  # rewritten before each timed call: larger than a core's L2


@dataclass(frozen=True)
class DynamicLayer:
    """A convolution the executor can slice.

    Attributes:
        conv: the folded convolution.
        kind: ``"out"`` (a policy selects its output channels: a block's first conv) or ``"in"`` (its input
            channels: the second conv).
        input_shape: (C_in, H, W) of its input at the executor's input size.
        lazy: slicing it now implies a lazy-reuse pass next frame (first conv of a block whose policy can REUSE).
    """

    conv: FoldedConv
    kind: str
    input_shape: tuple[int, int, int]
    lazy: bool = False


@dataclass(frozen=True)
class LayerTiming:
    """Measured kernel times of one layer, in microseconds, and the resulting break-even fraction."""

    dense_us: float
    sliced_us: tuple[tuple[float, float], ...]  # (active fraction, time)
    lazy_us: float  # the deferred lazy-reuse pass charged to slicing (0 without REUSE)
    threshold: float


class CostModel:
    """Per-layer break-even active fractions: slice a layer for a frame iff its active fraction < threshold.

    Args:
        thresholds: by layer name (as :meth:`adafuse.inference.SparseRecognizer.dynamic_layers` names them).
        default: threshold of layers not listed.
        timings: the measurements behind the thresholds, for reports.
    """

    def __init__(
        self,
        thresholds: Mapping[str, float] | None = None,
        *,
        default: float = 1.0,
        timings: Mapping[str, LayerTiming] | None = None,
    ) -> None:
        self.thresholds = dict(thresholds or {})
        self.default = default
        self.timings = dict(timings or {})

    @classmethod
    def always_sparse(cls) -> CostModel:
        """Slice every dynamic layer whatever its active fraction (the pure sparse path)."""
        return cls(default=math.inf)

    @classmethod
    def always_dense(cls) -> CostModel:
        """Never slice: every layer dense with pre-packed weights, skipped channels zeroed (the masked path)."""
        return cls(default=-math.inf)

    def threshold(self, name: str) -> float:
        """Break-even active fraction of layer ``name``."""
        return self.thresholds.get(name, self.default)

    @classmethod
    def measure(cls, layers: Mapping[str, DynamicLayer], *, repeats: int = 7) -> CostModel:
        """Time every layer's dense and sliced kernels at the current thread count (a second or two for a
        ResNet-50 at 224 px; layers of equal shape are timed once per process)."""
        thresholds, timings = {}, {}
        for name, layer in layers.items():
            conv = layer.conv
            key = (
                layer.kind, layer.lazy, layer.input_shape, conv.out_channels, conv.kernel_size, tuple(conv.stride),
                tuple(conv.padding), conv.unit, torch.get_num_threads(),
            )  # fmt: skip
            if key not in _MEASURED:
                _MEASURED[key] = _time_layer(layer, repeats=repeats)
            timings[name] = _MEASURED[key]
            thresholds[name] = timings[name].threshold
        return cls(thresholds, default=1.0, timings=timings)


def _time_layer(
    layer: DynamicLayer, *, repeats: int, fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
) -> LayerTiming:
    conv, (c, h, w) = layer.conv, layer.input_shape
    total = (conv.out_channels if layer.kind == "out" else conv.in_channels) // conv.unit
    generator = torch.Generator().manual_seed(0)
    x = to_channels_last(torch.randn(1, c, h, w, generator=generator))
    runs = {"dense": lambda: conv.dense(x, relu=True)}
    for f in fractions:
        n = max(1, round(f * total))
        units = torch.randperm(total, generator=generator)[:n].sort().values
        if layer.kind == "out":
            runs[f] = lambda units=units: conv.sliced_out(x, units, relu=True)
        else:  # the sliced input is gathered first, as the executor assembles it from the conv1 outputs
            runs[f] = lambda units=units: conv.sliced_in(gather_units(x, units, conv.unit), units, relu=True)
    if layer.lazy:
        units = torch.randperm(total, generator=generator)[: max(1, total // 8)].sort().values
        runs["lazy"] = lambda: conv.sliced_out(x, units, relu=True)
    executed = conv.executed_macs
    times = {k: [] for k in runs}
    order = list(runs)
    flush = torch.empty(_FLUSH_BYTES // 4)
    with torch.inference_mode():
        for k in order:  # warm-up: first calls pack weights and create oneDNN primitives
            runs[k]()
        for r in range(repeats):  # interleaved and shuffled, so a burst of load does not hit one kernel only
            random.Random(r).shuffle(order)
            for k in order:
                flush.fill_(r)
                start = time.perf_counter()
                runs[k]()
                times[k].append(time.perf_counter() - start)
    conv.executed_macs = executed
    us = {k: float(np.median(v)) * 1e6 for k, v in times.items()}
    dense, lazy = us.pop("dense"), us.pop("lazy", 0.0)
    points = tuple(us.items())
    slope, intercept = np.polyfit([f for f, _ in points], [t for _, t in points], 1)
    if slope <= 0:
        threshold = math.inf if intercept + lazy < dense else 0.0
    else:
        threshold = max(0.0, (dense - lazy - intercept) / slope)
    return LayerTiming(dense_us=dense, sliced_us=points, lazy_us=lazy, threshold=float(threshold))

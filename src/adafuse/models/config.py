"""What a model is: one frozen record from which checkpoints, transforms, executors and exporters read.

The analogue of torchvision's ``Weights.meta`` and timm's ``pretrained_cfg``: ``build_model`` makes a
:class:`ModelConfig` from its arguments, stores it on the recognizer (``model.config``) and checkpoints store
``config.to_dict()``. Nothing else about a model is bolted on afterwards.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Keys of older checkpoints and configs, and what they are called now.
LEGACY_KEYS = {"policy_groups": "policy_group_size"}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a recognizer and feed it.

    Attributes:
        backbone, method: registry names (``"custom"`` for a hand-built recognizer).
        num_classes: K. num_segments: T, the frames per clip every temporal module was built for.
        input_size: frame side the model was trained at. normalization: ``"imagenet"`` or ``"bgr255"``.
        classes: class names in label order, when known.
        The remaining fields are :func:`adafuse.models.build_model`'s options (see there).
    """

    backbone: str
    method: str
    num_classes: int
    num_segments: int = 8
    input_size: int = 224
    normalization: str = "imagenet"
    classes: tuple[str, ...] | None = None
    dropout: float = 0.5
    policy_hidden: int | None = 512
    policy_quota: int | None = None
    shared_policy: bool = False
    policy_group_size: int = 1
    tau: float = 0.67
    shift_div: int = 8
    causal_shift: bool = False
    shifted_shortcut: bool = False
    random_ratios: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    keep_ratio: float = 0.5
    cg_partitions: int = 4
    lstm_hidden: int = 512
    trn_features: int = 256
    arnet_backbones: tuple[str, ...] = ("resnet50", "resnet34", "resnet18")
    arnet_scales: tuple[float, ...] = (1.0, 0.75, 0.5, 0.375)
    arnet_skips: tuple[int, ...] = (1, 2, 4)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only (lists for tuples): YAML, JSON and ``torch.load(weights_only=True)`` safe."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; accepts the legacy key names of :data:`LEGACY_KEYS`."""
        values = {LEGACY_KEYS.get(k, k): v for k, v in values.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        for key in ("classes", "random_ratios", "arnet_backbones", "arnet_scales", "arnet_skips"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def build_kwargs(self) -> dict[str, Any]:
        """The :func:`adafuse.models.build_model` arguments that rebuild this model."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

"""Loading ImageNet weights into a backbone: from a local file or a torchvision weights name.

Loading is strict: every tensor of the file must land in the backbone with the same shape (the ImageNet
classifier is dropped on purpose), and the only keys the file may lack are those of modules the plain
backbone does not have (policy nets, CGNet thresholds). Anything else is an error, never silence. A network built
from a 2D backbone says how the 2D tensors map onto it with ``adapt_imagenet_state(state) -> (state, unused keys)``
(I3D inflates kernels; ECO-Lite uses BN-Inception up to inception-3c): the unused keys are reported as dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from adafuse.errors import UserError
from adafuse.models._registry import BackboneSpec


@dataclass
class LoadReport:
    """What a pretrained load did: ``loaded`` tensors copied, ``missing`` new keys left at their init,
    ``dropped`` classifier keys of the file that were not used."""

    source: str
    loaded: int
    missing: list[str]
    dropped: list[str]

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"loaded {self.loaded} tensors from {self.source}; new (randomly initialised): {len(self.missing)} "
            f"tensors; dropped ImageNet classifier: {', '.join(self.dropped) or 'none'}"
        )


def read_state_dict(source: str | Path, spec: BackboneSpec) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict behind ``source`` — a file path, or a torchvision weights name such as
    ``IMAGENET1K_V1`` / ``ResNet50_Weights.IMAGENET1K_V1`` — and a printable name of it."""
    path = Path(source).expanduser()
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input
            raise UserError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise UserError(f"{path}: expected a state dict of tensors")
        return {k.removeprefix("module."): v for k, v in state.items()}, str(path)
    if spec.torchvision_weights is None or "/" in str(source) or path.suffix:
        raise UserError(f"pretrained weights: no such file {str(source)!r}")
    from torchvision.models import get_weight

    name = str(source) if "." in str(source) else f"{spec.torchvision_weights}.{source}"
    try:
        weights = get_weight(name)
    except (ValueError, KeyError):
        raise UserError(f"pretrained weights: {source!r} is neither a file nor a torchvision weights name") from None
    try:
        return weights.get_state_dict(progress=False, check_hash=False), name
    except OSError as e:
        raise UserError(
            f"could not fetch {name} ({e}); without network, download {weights.url} elsewhere and pass the file path"
        ) from None


def load_backbone_weights(backbone: nn.Module, source: str | Path, spec: BackboneSpec) -> LoadReport:
    """Copy ImageNet weights into ``backbone`` (built from ``spec``), strictly; see the module docstring."""
    state, name = read_state_dict(source, spec)
    dropped = sorted(k for k in state if k.startswith(spec.classifier_prefixes))
    state = {k: v for k, v in state.items() if k not in dropped}
    file_keys = set(state)
    adapt = getattr(backbone, "adapt_imagenet_state", None)
    if adapt is not None:  # a network built from the 2D one (I3D inflation, ECO's partial trunk)
        state, unused = adapt(state)
        dropped = sorted([*dropped, *unused])
    own = backbone.state_dict()
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise UserError(f"{name}: {len(unexpected)} keys do not belong to {spec.name} (e.g. {unexpected[0]})")
    # The Caffe-converted BN-Inception of TSN/TSM (bn_inception-9f5701afb96c8044.pth) stores BatchNorm
    # vectors as (1, C); their loaders squeeze the leading 1, and so do we.
    state = {k: v[0] if v.shape == (1, *own[k].shape) else v for k, v in state.items()}
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise UserError(
                f"{name}: {key} has shape {tuple(value.shape)}, {spec.name} needs {tuple(own[key].shape)}"
            )
    with torch.device("meta"):
        plain = set(spec.builder().state_dict())  # the backbone with empty slots: what ImageNet must cover
    plain = {k for k in plain if not k.endswith("num_batches_tracked")}  # old torchvision files lack them
    absent = sorted(plain - file_keys)
    if absent:
        raise UserError(f"{name}: {len(absent)} {spec.name} weights are missing from the file (e.g. {absent[0]})")
    backbone.load_state_dict(state, strict=False)
    return LoadReport(source=name, loaded=len(state), missing=sorted(set(own) - set(state)), dropped=dropped)

"""``build_model``: one entry point from (backbone, method) names to a :class:`Recognizer`.

Methods are data: each row of :data:`METHODS` says which temporal slots a method fills.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from adafuse.errors import UserError
from adafuse.layers.actions import Action
from adafuse.layers.adaptive_fusion import (
    ADA_REUSE_ACTIONS,
    ADA_SKIP_ACTIONS,
    ADAFUSE_ACTIONS,
    AdaptiveFusion,
    SharedPolicyFCs,
)
from adafuse.layers.baseline_fusion import RandomFusion, ThresholdFusion
from adafuse.layers.channel_gating import ChannelGatedConv2d
from adafuse.layers.fusion import Fusion
from adafuse.layers.temporal_shift import TemporalShift
from adafuse.models._registry import get_backbone
from adafuse.models.arnet import ARNet
from adafuse.models.config import ModelConfig
from adafuse.models.eco import ECO
from adafuse.models.recognizer import Recognizer
from adafuse.models.resnet3d import inflated_resnet
from adafuse.models.weights import LoadReport, load_backbone_weights

log = logging.getLogger("adafuse")


@dataclass(frozen=True)
class MethodSpec:
    """Which slots a method fills.

    Attributes:
        shift: temporal shift on every block's residual branch (TSM).
        fusion: ``"adaptive"``, ``"random"``, ``"threshold"`` or None.
        actions: allowed actions of an adaptive fusion.
        last_stage_only: fusion only in the backbone's last stage ("TSM+Last").
        consensus: ``"avg"`` (TSN), ``"lstm"`` or ``"trn"`` (TRN's multi-scale relations).
        channel_gating: CGNet's gated first conv in every block.
        network: ``"frames"`` (the backbone over every frame, with the slots above), ``"i3d"`` (the backbone's
            3D inflation), ``"eco"`` (ECO on BN-Inception) or ``"arnet"`` (AR-Net; the backbone is its policy's).
        non_local: I3D with the non-local blocks of NL-I3D.
        two_d_branch: ECO with its 2D branch (full ECO); False: ECO-Lite.
    """

    shift: bool = False
    fusion: str | None = None
    actions: tuple[Action, ...] = ADAFUSE_ACTIONS
    last_stage_only: bool = False
    consensus: str = "avg"
    channel_gating: bool = False
    network: str = "frames"
    non_local: bool = False
    two_d_branch: bool = True


METHODS: dict[str, MethodSpec] = {
    "tsn": MethodSpec(),
    "tsm": MethodSpec(shift=True),
    "lstm": MethodSpec(consensus="lstm"),
    "cgnet": MethodSpec(channel_gating=True),
    "threshold": MethodSpec(fusion="threshold"),
    "random": MethodSpec(fusion="random"),
    "ada_skip": MethodSpec(fusion="adaptive", actions=ADA_SKIP_ACTIONS),
    "ada_reuse": MethodSpec(fusion="adaptive", actions=ADA_REUSE_ACTIONS),
    "adafuse_tsn": MethodSpec(fusion="adaptive"),
    "adafuse_tsm": MethodSpec(shift=True, fusion="adaptive"),
    "adafuse_tsm_last": MethodSpec(shift=True, fusion="adaptive", last_stage_only=True),
    "trn": MethodSpec(consensus="trn"),
    "i3d": MethodSpec(network="i3d"),
    "i3d_nl": MethodSpec(network="i3d", non_local=True),
    "eco": MethodSpec(network="eco"),
    "eco_lite": MethodSpec(network="eco", two_d_branch=False),
    "arnet": MethodSpec(network="arnet"),
}

# What each network needs of the backbone.
_NETWORK_BACKBONES = {"i3d": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet10_mini"),
                      "eco": ("bninception",), "arnet": ("mobilenet_v2",)}  # fmt: skip


def get_method(name: str) -> MethodSpec:
    """The spec of a method, or a one-line error listing the known names."""
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None


def build_model(
    *,
    backbone: str,
    method: str,
    num_classes: int,
    num_segments: int = 8,
    pretrained: str | None = None,
    input_size: int | None = None,
    normalization: str | None = None,
    classes: Sequence[str] | None = None,
    dropout: float = 0.5,
    policy_hidden: int | None = None,
    policy_quota: int | None = None,
    shared_policy: bool = False,
    policy_group_size: int = 1,
    tau: float = 0.67,
    shift_div: int = 8,
    causal_shift: bool = False,
    shifted_shortcut: bool = False,
    random_ratios: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
    keep_ratio: float = 0.5,
    cg_partitions: int = 4,
    lstm_hidden: int = 512,
    trn_features: int = 256,
    arnet_backbones: Sequence[str] = ("resnet50", "resnet34", "resnet18"),
    arnet_scales: Sequence[float] = (1.0, 0.75, 0.5, 0.375),
    arnet_skips: Sequence[int] = (1, 2, 4),
    seed: int = 0,
) -> Recognizer | ARNet:
    """Build a video recognizer for input (N, T, 3, H, W) -> logits (N, num_classes).

    The arguments (less ``pretrained``) become the model's frozen :class:`ModelConfig` (``model.config``), which
    checkpoints store and from which transforms and executors read.

    Args:
        backbone: a registered backbone (``adafuse.models.list_backbones()``).
        method: one of :data:`METHODS`.
        num_classes: K; num_segments: T, the frames per clip (fixed: every temporal module is built for it).
        pretrained: ImageNet weights for the backbone, a file or a torchvision weights name.
        input_size / normalization: the frames the model is fed (default: the backbone's native size and
            normalization); classes: class names in label order.
        policy_hidden / policy_quota: policy hidden size H, or quota Q (H = Q // C); default H = 512.
        shared_policy: share policy FC layers between blocks of equal shape.
        policy_group_size: channels per policy decision (contiguous groups; 1 = per channel).
        tau: Gumbel-softmax temperature. shift_div / causal_shift: TSM options.
        shifted_shortcut: the shifted block input also feeds the projection shortcuts (the official BateNet, which
            the authors' released TSM weights need); default: only the residual branch is shifted (original TSM).
        random_ratios: keep/reuse/skip probabilities of ``random``; keep_ratio: share kept by ``threshold``.
        cg_partitions: CGNet's p; lstm_hidden: LSTM width (also AR-Net's policy LSTM); seed: seed of the random
            policy at evaluation. trn_features: TRN's per-frame embedding width.
        arnet_backbones / arnet_scales / arnet_skips: AR-Net's branch networks (high to low resolution), their
            frame sides as shares of ``input_size`` followed by the policy's, and the skip lengths of its policy.
    """
    spec = get_backbone(backbone)
    m = get_method(method)
    for name, value in (("num_classes", num_classes), ("num_segments", num_segments),
                        ("policy_group_size", policy_group_size)):  # fmt: skip
        if int(value) < 1:
            raise UserError(f"{name} must be a positive integer, got {value}")
    if policy_hidden is not None and policy_quota is not None:
        raise UserError("give policy_hidden or policy_quota, not both")
    if policy_hidden is None and policy_quota is None:
        policy_hidden = 512
    if m.channel_gating and not spec.supports_channel_gating:
        raise UserError(f"method {method!r} needs a ResNet backbone, got {backbone!r}")
    if shifted_shortcut and not (m.shift and spec.supports_shifted_shortcut):
        raise UserError(f"shifted_shortcut needs a method with a temporal shift and a ResNet backbone, got method "
                        f"{method!r}, backbone {backbone!r}")  # fmt: skip
    needs = _NETWORK_BACKBONES.get(m.network)
    if needs is not None and backbone not in needs:
        raise UserError(f"method {method!r} needs backbone {' or '.join(needs)}, got {backbone!r}")
    if m.network == "frames" and spec.num_stages == 0 and (m.shift or m.fusion or m.channel_gating):
        raise UserError(f"backbone {backbone!r} has no temporal slots for method {method!r}")
    if m.network == "arnet":
        for name in arnet_backbones:
            get_backbone(name)
        if len(arnet_scales) != len(arnet_backbones) + 1 or not all(0 < s <= 1 for s in arnet_scales):
            raise UserError(f"arnet_scales needs one frame scale in (0, 1] per arnet_backbones entry and then the "
                            f"policy's: {len(arnet_backbones) + 1} values, got {list(arnet_scales)}")  # fmt: skip
        if not arnet_skips or min(arnet_skips) < 1:
            raise UserError(f"arnet_skips must be frame counts >= 1, got {list(arnet_skips)}")
    if classes is not None and len(classes) != num_classes:
        raise UserError(f"{len(classes)} class names for num_classes={num_classes}")
    config = ModelConfig(
        backbone=backbone, method=method, num_classes=num_classes, num_segments=num_segments,
        input_size=input_size or spec.input_size, normalization=normalization or spec.normalization,
        classes=tuple(classes) if classes is not None else None, dropout=dropout, policy_hidden=policy_hidden,
        policy_quota=policy_quota, shared_policy=shared_policy, policy_group_size=policy_group_size, tau=tau,
        shift_div=shift_div, causal_shift=causal_shift, shifted_shortcut=shifted_shortcut,
        random_ratios=tuple(random_ratios), keep_ratio=keep_ratio, cg_partitions=cg_partitions,
        lstm_hidden=lstm_hidden, trn_features=trn_features, arnet_backbones=tuple(arnet_backbones),
        arnet_scales=tuple(float(r) for r in arnet_scales), arnet_skips=tuple(int(k) for k in arnet_skips), seed=seed,
    )  # fmt: skip
    if m.network == "arnet":
        model = ARNet(branches=arnet_backbones, scales=arnet_scales, skips=arnet_skips,
                      num_classes=num_classes, num_segments=num_segments, hidden=lstm_hidden, dropout=dropout, tau=tau,
                      config=config)  # fmt: skip
        if pretrained:
            log.info(load_pretrained(model, pretrained).summary())
        return model

    slots = {}
    if m.shift:
        slots["shift_layer"] = lambda channels, stage: TemporalShift(
            num_segments=num_segments, shift_div=shift_div, causal=causal_shift
        )
    if m.channel_gating:
        slots["conv_layer"] = partial(ChannelGatedConv2d, partitions=cg_partitions)
    if m.fusion is not None:
        shared = SharedPolicyFCs() if shared_policy else None
        first_stage = spec.num_stages - 1 if m.last_stage_only else 0

        def fusion_layer(in_channels: int, channels: int, stage: int) -> Fusion | None:
            if stage < first_stage:
                return None
            if m.fusion == "random":
                return RandomFusion(channels, num_segments=num_segments, ratios=random_ratios,
                                    group_size=policy_group_size, seed=seed)  # fmt: skip
            if m.fusion == "threshold":
                return ThresholdFusion(channels, num_segments=num_segments, keep_ratio=keep_ratio,
                                       group_size=policy_group_size)  # fmt: skip
            return AdaptiveFusion(
                in_channels,
                channels,
                num_segments=num_segments,
                hidden=policy_hidden,
                quota=policy_quota,
                actions=m.actions,
                group_size=policy_group_size,
                tau=tau,
                shared=shared,
            )

        slots["fusion_layer"] = fusion_layer
    if m.network == "i3d":
        net = inflated_resnet(backbone, non_local=m.non_local)
    elif m.network == "eco":
        net = ECO(two_d_branch=m.two_d_branch)
    else:  # only backbones that support it take the option (checked above), so the others' builders stay as they are
        net = spec.builder(**slots, **({"shifted_shortcut": True} if shifted_shortcut else {}))
    model = Recognizer(net, num_classes=num_classes, num_segments=num_segments, dropout=dropout,
                       consensus=m.consensus, lstm_hidden=lstm_hidden, trn_features=trn_features,
                       config=config)  # fmt: skip
    if pretrained:
        log.info(load_pretrained(model, pretrained).summary())
    return model


def build_from_config(config: ModelConfig, *, pretrained: str | None = None) -> Recognizer | ARNet:
    """The recognizer a :class:`ModelConfig` describes (fresh weights, or ImageNet ones from ``pretrained``)."""
    if config.backbone == "custom":
        raise UserError("this model was built by hand (backbone 'custom'): build it again yourself and load its "
                        "weights with adafuse.checkpoint.load_weights(model, path)")  # fmt: skip
    return build_model(**config.build_kwargs(), pretrained=pretrained)


def load_pretrained(model: Recognizer | ARNet, source: str) -> LoadReport:
    """Load ImageNet backbone weights into a built recognizer; the report lists the new (head, policy)
    tensors left at their initialisation. AR-Net takes a torchvision weights name (``IMAGENET1K_V1``) and loads it
    into each of its networks (its policy's MobileNetV2 and every branch ResNet)."""
    if isinstance(model, ARNet):
        if Path(source).expanduser().is_file() or "." in str(source):
            raise UserError(f"AR-Net has several ImageNet networks: give a torchvision weights name such as "
                            f"IMAGENET1K_V1 (loaded into each of them), not {source!r}")  # fmt: skip
        parts = [("policy.backbone", model.policy.backbone, model.config.backbone)]
        parts += [(f"branches.{i}", b, n) for i, (b, n) in enumerate(zip(model.branches, model.config.arnet_backbones,
                                                                          strict=True))]  # fmt: skip
    else:
        parts = [("backbone", model.backbone, model.config.backbone)]
    loaded, missing, dropped = 0, [], []
    for prefix, net, name in parts:
        report = load_backbone_weights(net, source, get_backbone(name))
        loaded += report.loaded
        missing += [f"{prefix}.{k}" for k in report.missing]
        dropped += report.dropped
    covered = tuple(f"{prefix}." for prefix, _, _ in parts)
    missing += sorted(k for k in model.state_dict() if not k.startswith(covered))
    return LoadReport(source=report.source if len(parts) == 1 else str(source), loaded=loaded, missing=missing,
                      dropped=sorted(set(dropped)))  # fmt: skip

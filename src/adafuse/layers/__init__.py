"""Building blocks: fusion policies, temporal shift, channel gating."""

from adafuse.layers.actions import KEEP, REUSE, SKIP, Action
from adafuse.layers.adaptive_fusion import (
    ADA_REUSE_ACTIONS,
    ADA_SKIP_ACTIONS,
    ADAFUSE_ACTIONS,
    AdaptiveFusion,
    SharedPolicyFCs,
)
from adafuse.layers.baseline_fusion import RandomFusion, ThresholdFusion
from adafuse.layers.channel_gating import ChannelGatedConv2d
from adafuse.layers.fusion import FusedConvPair, Fusion, fuse
from adafuse.layers.gumbel import one_hot_argmax, sample_actions
from adafuse.layers.policy import PolicyNet, policy_hidden_size
from adafuse.layers.temporal_shift import TemporalShift

__all__ = [
    "ADAFUSE_ACTIONS",
    "ADA_REUSE_ACTIONS",
    "ADA_SKIP_ACTIONS",
    "KEEP",
    "REUSE",
    "SKIP",
    "Action",
    "AdaptiveFusion",
    "ChannelGatedConv2d",
    "FusedConvPair",
    "Fusion",
    "PolicyNet",
    "RandomFusion",
    "SharedPolicyFCs",
    "TemporalShift",
    "ThresholdFusion",
    "fuse",
    "one_hot_argmax",
    "policy_hidden_size",
    "sample_actions",
]

"""EfficientNet-b0…b3: torchvision's layout and numbers, the fusion placement, and the cost counter."""

import pytest
import torch
import torchvision

from adafuse.flops import count_params, profile
from adafuse.layers import AdaptiveFusion, TemporalShift
from adafuse.models import build_model, get_backbone, load_pretrained
from conftest import assert_all_keep_equals_reference

VARIANTS = ["efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3"]


def meta_model(backbone, method="tsn", num_classes=174, **kw):
    with torch.device("meta"):
        return build_model(backbone=backbone, method=method, num_classes=num_classes, num_segments=8, **kw)


def tiny(method, **kw):
    return build_model(backbone="efficientnet_b0", method=method, num_classes=5, num_segments=3, policy_hidden=16, **kw)


@pytest.mark.parametrize(
    ("name", "size", "features", "imagenet_params"),
    [
        ("efficientnet_b0", 224, 1280, 5_288_548),
        ("efficientnet_b1", 240, 1280, 7_794_184),
        ("efficientnet_b2", 260, 1408, 9_109_994),
        ("efficientnet_b3", 300, 1536, 12_233_232),
    ],
)
def test_layout_matches_torchvision(name, size, features, imagenet_params):
    spec = get_backbone(name)
    assert (spec.input_size, spec.num_stages, spec.supports_channel_gating) == (size, 7, False)
    assert spec.torchvision_weights == f"EfficientNet_B{name[-1]}_Weights"
    with torch.device("meta"):
        ours = spec.builder()
        theirs = getattr(torchvision.models, name)()
    assert ours.num_features == features
    expected = {k: v.shape for k, v in theirs.state_dict().items() if not k.startswith(spec.classifier_prefixes)}
    assert {k: v.shape for k, v in ours.state_dict().items()} == expected
    # stochastic depth grows linearly over the blocks exactly as in torchvision
    drop = [m.p for m in ours.modules() if isinstance(m, torchvision.ops.StochasticDepth)]
    assert drop == [m.p for m in theirs.modules() if isinstance(m, torchvision.ops.StochasticDepth)]
    # with a 1000-way head the count is torchvision's (the paper's 5.3/7.8/9.2/12.0M)
    assert count_params(meta_model(name, num_classes=1000)) == imagenet_params


@pytest.mark.parametrize(
    ("name", "paper", "conv_macs"),
    [("efficientnet_b0", 3.1, 3.08), ("efficientnet_b1", 5.6, 5.48), ("efficientnet_b2", 8.0, 7.94),
     ("efficientnet_b3", 14.4, 14.60)],
)  # fmt: skip
def test_dense_gmacs_at_native_resolution(name, paper, conv_macs):
    gmacs = profile(meta_model(name), input_size=get_backbone(name).input_size).dense_gmacs
    assert gmacs == pytest.approx(paper, rel=0.03)
    assert gmacs == pytest.approx(conv_macs, abs=0.01)  # performance notes §3: conv MACs incl. SE, + head


def test_torchvision_state_dict_loads_and_features_match(tmp_path):
    reference = torchvision.models.efficientnet_b0(weights=None).eval()
    with torch.no_grad():  # non-trivial BN statistics, so that eval-mode BN is really compared
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "efficientnet_b0.pth"
    torch.save(reference.state_dict(), path)
    file_state = reference.state_dict()

    ada = tiny("adafuse_tsn")
    report = load_pretrained(ada, str(path))
    assert report.dropped == ["classifier.1.bias", "classifier.1.weight"]
    assert report.loaded == len(file_state) - 2  # every backbone tensor of the file is used
    assert report.missing and all(".fusion." in k or k.startswith("head.") for k in report.missing)

    tsn = tiny("tsn").eval()
    assert load_pretrained(tsn, str(path)).missing == ["head.bias", "head.weight"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = torch.flatten(reference.avgpool(reference.features(x)), 1)
        torch.testing.assert_close(tsn.backbone(x), expected, rtol=0, atol=1e-5)


def test_fusion_placement_and_cost_links():
    model = tiny("adafuse_tsn")
    net = model.backbone
    blocks = list(net.blocks())
    assert len(blocks) == 16 and all(isinstance(b.fusion, AdaptiveFusion) for b in blocks)
    first, second = blocks[0], blocks[1]
    # expand ratio 1: fused after depthwise + SE (32 channels), read by the projection
    assert first.fusion.channels == 32 and first.first_conv is first.block[0][0] and first.first_conv.groups == 32
    assert first.second_conv is first.block[2][0] and first.second_conv.out_channels == 16
    # expanded: fused after the 1×1 expansion (16 -> 96), read by the depthwise conv; the policy sees 16
    assert second.fusion.channels == 96 and second.fusion.policy.fc0.in_features == 2 * 16
    assert second.first_conv.kernel_size == (1, 1) and second.second_conv.groups == 96
    table = profile(model, input_size=64)
    per_frame = {k: v / 3 for k, v in table.per_module.items()}
    up, down = table.fusion["backbone.features.2.0.fusion"]
    assert torch.allclose(up, torch.full((96,), per_frame["backbone.features.2.0.block.0.0"] / 96))
    assert torch.allclose(down, torch.full((96,), per_frame["backbone.features.2.0.block.1.0"] / 96))
    up, down = table.fusion["backbone.features.1.0.fusion"]
    assert torch.allclose(up, torch.full((32,), per_frame["backbone.features.1.0.block.0.0"] / 32))
    assert torch.allclose(down, torch.full((32,), per_frame["backbone.features.1.0.block.2.0"] / 32))


def test_slots_per_method():
    tsm = tiny("tsm")
    assert all(isinstance(b.shift, TemporalShift) and b.fusion is None for b in tsm.backbone.blocks())
    last = tiny("adafuse_tsm_last")
    fused = [i for i, stage in enumerate(last.backbone.features[1:-1]) for b in stage if b.fusion is not None]
    assert fused == [6]  # "Last" = the last of the 7 MBConv stages


@pytest.mark.parametrize(("method", "reference"), [("adafuse_tsn", "tsn"), ("adafuse_tsm_last", "tsm")])
def test_forward_shapes_and_all_keep_equals_dense(method, reference):
    assert_all_keep_equals_reference(tiny(reference), tiny(method), size=64)


def test_stochastic_depth_only_in_training():
    model = tiny("tsn")
    block = model.backbone.features[6][3]  # the last residual block: drop probability 0.2 · 14/16
    assert block.use_res_connect and block.stochastic_depth.p == pytest.approx(0.175)
    x = torch.randn(6, 192, 2, 2)
    block.eval()
    assert torch.equal(block(x), block(x))
    block.train()
    torch.manual_seed(1)
    outs = {tuple(block(x).flatten(1).sum(1).tolist()) for _ in range(10)}
    assert len(outs) > 1  # some rows drop their residual branch in some draws

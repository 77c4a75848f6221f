"""BN-Inception: the TSN/TSM checkpoint layout, the paper's parameter and MAC counts, per-branch costs."""

import pytest
import torch
from torch import nn

from adafuse.errors import UserError
from adafuse.flops import count_params, profile
from adafuse.layers import AdaptiveFusion, TemporalShift
from adafuse.models import build_model, get_backbone, load_pretrained
from conftest import assert_all_keep_equals_reference

# (C_in, C) of the 10 policies, reference §1.6
MODULE_CHANNELS = [
    (192, 256), (256, 320), (320, 576), (576, 576), (576, 576),
    (576, 608), (608, 608), (608, 1056), (1056, 1024), (1024, 1024),
]  # fmt: skip


def meta_model(method="tsn", **kw):
    with torch.device("meta"):
        return build_model(backbone="bninception", method=method, num_classes=174, num_segments=8, **kw)


def tiny(method):
    return build_model(backbone="bninception", method=method, num_classes=5, num_segments=3, policy_hidden=16)


@pytest.fixture(scope="module")
def tsn_state():
    """The backbone state dict of a randomly initialised TSN BN-Inception, as an ImageNet file would hold."""
    return tiny("tsn").backbone.state_dict()


def test_spec_and_checkpoint_key_names():
    spec = get_backbone("bninception")
    assert (spec.normalization, spec.num_stages, spec.torchvision_weights) == ("bgr255", 3, None)
    assert spec.classifier_prefixes == ("last_linear.", "fc.")
    with torch.device("meta"):
        net = spec.builder()
    assert net.num_features == 1024
    keys = set(net.state_dict())
    convs = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    # 3 stem convs, 7 per regular module (8), 5 per stride-2 module (3c, 4e); all with bias, each with a BN
    assert len(convs) == 3 + 8 * 7 + 2 * 5 and all(net.get_submodule(n).bias is not None for n in convs)
    assert len(keys) == len(convs) * (2 + 5)
    assert {
        "conv1_7x7_s2.weight", "conv1_7x7_s2.bias", "conv1_7x7_s2_bn.weight", "conv1_7x7_s2_bn.running_var",
        "conv2_3x3_reduce.weight", "conv2_3x3_bn.running_mean", "inception_3a_1x1.weight",
        "inception_3a_1x1_bn.running_mean", "inception_3a_3x3_reduce.bias", "inception_3a_double_3x3_1.weight",
        "inception_3a_double_3x3_2_bn.bias", "inception_3a_pool_proj.weight", "inception_3c_double_3x3_2.weight",
        "inception_4e_3x3_bn.weight", "inception_5b_pool_proj_bn.running_var",
    } <= keys  # fmt: skip
    assert not any(k.startswith(("inception_3c_1x1", "inception_3c_pool_proj", "inception_4e_1x1")) for k in keys)
    assert net.inception_3a_double_3x3_1.weight.shape == (96, 64, 3, 3)
    assert net.inception_4e_double_3x3_2.stride == (2, 2) and net.inception_5b_pool_proj.in_channels == 1024
    assert isinstance(net.inception_5b_pool, nn.MaxPool2d) and isinstance(net.inception_5a_pool, nn.AvgPool2d)
    assert all(m.eps == 1e-5 and m.affine for m in net.modules() if isinstance(m, nn.BatchNorm2d))


def test_param_counts_match_official_arithmetic():
    with torch.device("meta"):
        assert count_params(get_backbone("bninception").builder()) == 10_270_240
    tsn = count_params(meta_model())
    assert tsn == 10_448_590
    assert count_params(meta_model("adafuse_tsn", policy_hidden=128)) == 14_498_670
    for hidden in (16, 1000):  # P(H) = 31,486·H + 19,872 (reference §7.2)
        assert count_params(meta_model("adafuse_tsn", policy_hidden=hidden)) - tsn == 31_486 * hidden + 19_872


def test_dense_gmacs_and_module_shapes():
    model = meta_model("adafuse_tsn", policy_hidden=128)
    fused = {}
    for name, m in model.backbone.named_children():
        if isinstance(m, AdaptiveFusion):
            m.register_forward_hook(lambda m, i, o, name=name: fused.__setitem__(name, (i[0].shape, i[1].shape)))
    model(torch.empty(1, 8, 3, 224, 224, device="meta"))
    table = profile(model, input_size=224)
    sizes = [28] * 2 + [14] * 5 + [7] * 3  # 3x, 4x, 5x output resolutions
    expected = [(ci, c, s) for (ci, c), s in zip(MODULE_CHANNELS, sizes, strict=True)]
    assert [(x[1], y[1], y[2]) for x, y in fused.values()] == expected  # (C_in, C, H) per module
    tsn = profile(meta_model(), input_size=224).dense_gmacs
    assert tsn == pytest.approx(16.4, rel=0.01)  # paper; conv+linear MACs give 16.25
    assert tsn == pytest.approx(16.25, abs=0.01)
    # the policy nets are in the dense cost: per frame H·Σ(2·C_in + 3·C)
    policy = 8 * 128 * sum(2 * ci + 3 * c for ci, c in MODULE_CHANNELS)
    assert table.dense_macs - tsn * 1e9 == pytest.approx(policy)


def test_per_branch_cost_links():
    table = profile(meta_model("adafuse_tsn", policy_hidden=8), input_size=224)
    per_frame = {k.removeprefix("backbone."): v / 8 for k, v in table.per_module.items()}

    def per_channel(conv, channels):
        return per_frame[conv] / channels

    # 3a: producers are the last conv of each branch at its offset in the concatenation (64|64|96|32)
    up, down = table.fusion["backbone.inception_3a_fusion"]
    for conv, start, width in [("1x1", 0, 64), ("3x3", 64, 64), ("double_3x3_2", 128, 96), ("pool_proj", 224, 32)]:
        assert torch.allclose(up[start : start + width], torch.tensor(per_channel(f"inception_3a_{conv}", width)))
    # consumers: the first conv of every branch of 3b, each reading all 256 channels
    first = ["1x1", "3x3_reduce", "double_3x3_reduce", "pool_proj"]
    assert torch.allclose(down, torch.tensor(sum(per_channel(f"inception_3b_{c}", 256) for c in first)))
    # 3c: max-pooled pass-through channels cost nothing to produce; 4a reads them all
    up, down = table.fusion["backbone.inception_3c_fusion"]
    assert (up[:256] > 0).all() and (up[256:] == 0).all()
    assert torch.allclose(down, torch.tensor(sum(per_channel(f"inception_4a_{c}", 576) for c in first)))
    # 3b feeds 3c, which has no 1×1 branch and no projection
    _, down = table.fusion["backbone.inception_3b_fusion"]
    expected = per_channel("inception_3c_3x3_reduce", 320) + per_channel("inception_3c_double_3x3_reduce", 320)
    assert torch.allclose(down, torch.tensor(expected))
    # nothing reads 5b inside the trunk
    _, down = table.fusion["backbone.inception_5b_fusion"]
    assert (down == 0).all()


def test_own_state_dict_loads_strictly_into_adafuse(tmp_path, tsn_state):
    path = tmp_path / "bninception.pth"
    classifier = {"last_linear.weight": torch.zeros(1000, 1024), "last_linear.bias": torch.zeros(1000)}
    torch.save(tsn_state | classifier, path)
    model = tiny("adafuse_tsn")
    report = load_pretrained(model, str(path))
    assert report.dropped == ["last_linear.bias", "last_linear.weight"]
    assert report.loaded == len(tsn_state)
    assert report.missing and all("_fusion." in k or k.startswith("head.") for k in report.missing)
    own = model.backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in tsn_state.items())


def test_caffe_converted_layout_loads(tmp_path, tsn_state):
    # tsn-pytorch's bn_inception-9f5701afb96c8044.pth: BatchNorm vectors as (1, C), classifier "fc."
    state = {k: v[None] if "_bn." in k and v.dim() == 1 else v for k, v in tsn_state.items()}
    state |= {"fc.weight": torch.zeros(1000, 1024), "fc.bias": torch.zeros(1000)}
    torch.save(state, tmp_path / "caffe.pth")
    model = tiny("tsn")
    assert load_pretrained(model, str(tmp_path / "caffe.pth")).missing == ["head.bias", "head.weight"]
    assert torch.equal(model.backbone.conv1_7x7_s2_bn.running_var, tsn_state["conv1_7x7_s2_bn.running_var"])


def test_mismatched_files_are_errors(tmp_path, tsn_state):
    model = tiny("adafuse_tsn")
    shape = dict(tsn_state, **{"inception_4a_1x1.weight": torch.zeros(224, 576, 3, 3)})
    torch.save(shape, tmp_path / "shape.pth")
    with pytest.raises(UserError, match=r"inception_4a_1x1\.weight has shape \(224, 576, 3, 3\), bninception needs"):
        load_pretrained(model, str(tmp_path / "shape.pth"))
    torch.save(dict(tsn_state, **{"inception_6a_1x1.weight": torch.zeros(1)}), tmp_path / "extra.pth")
    with pytest.raises(UserError, match=r"1 keys do not belong to bninception \(e\.g\. inception_6a_1x1\.weight\)"):
        load_pretrained(model, str(tmp_path / "extra.pth"))


def test_slots_per_method():
    tsm = tiny("tsm").backbone
    assert all(isinstance(getattr(tsm, f"inception_{m}_shift"), TemporalShift) for m in tsm.branches)
    last = tiny("adafuse_tsm_last").backbone
    assert [m for m in last.branches if getattr(last, f"inception_{m}_fusion") is not None] == ["5a", "5b"]


@pytest.mark.parametrize(("method", "reference"), [("adafuse_tsn", "tsn"), ("adafuse_tsm_last", "tsm")])
def test_forward_shapes_and_all_keep_equals_dense(method, reference):
    assert_all_keep_equals_reference(tiny(reference), tiny(method), size=64)

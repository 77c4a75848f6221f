"""Parameter counts and dense MACs against the official arithmetic (reference §7) and the paper."""

import pytest
import torch

from adafuse.flops import count_params, profile
from adafuse.models import build_model


def meta_model(**kw):
    with torch.device("meta"):
        return build_model(num_classes=kw.pop("num_classes", 174), num_segments=8, **kw)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        (dict(backbone="resnet50", method="adafuse_tsm_last", policy_hidden=1024), 39_082_734),
        (dict(backbone="resnet50", method="adafuse_tsm_last", policy_hidden=2048), 54_296_302),
        (dict(backbone="resnet50", method="adafuse_tsm_last", policy_hidden=4096), 84_723_438),
        (dict(backbone="resnet50", method="adafuse_tsn", policy_quota=196608, shared_policy=True), 37_686_638),
        (dict(backbone="resnet50", method="adafuse_tsm", policy_quota=196608, shared_policy=True), 37_686_638),
        (dict(backbone="resnet18", method="tsn"), 11_265_774),
        (dict(backbone="resnet50", method="tsn"), 23_864_558),
        (dict(backbone="resnet18", method="adafuse_tsn", policy_hidden=512), 15_740_270),
        (dict(backbone="resnet18", method="adafuse_tsn", policy_quota=196608, shared_policy=True), 17_594_286),
        # LSTMCell(2048 -> 512) + 512 -> 174 head (reference §7.4)
        (dict(backbone="resnet50", method="lstm"), 28_844_270),
    ],
)
def test_param_counts_match_official_arithmetic(kw, expected):
    assert count_params(meta_model(**kw)) == expected


@pytest.mark.parametrize("hidden", [16, 512, 1000])
def test_policy_params_closed_forms(hidden):
    tsn50 = count_params(meta_model(backbone="resnet50", method="tsn"))
    last = count_params(meta_model(backbone="resnet50", method="adafuse_tsm_last", policy_hidden=hidden))
    assert last - tsn50 == 14_857 * hidden + 4_608
    tsn18 = count_params(meta_model(backbone="resnet18", method="tsn"))
    ada18 = count_params(meta_model(backbone="resnet18", method="adafuse_tsn", policy_hidden=hidden))
    assert ada18 - tsn18 == 8_728 * hidden + 5_760


def test_ablations_and_baselines_param_counts():
    tsn18 = count_params(meta_model(backbone="resnet18", method="tsn"))
    for method in ("tsm", "random", "threshold"):  # no parameters of their own
        assert count_params(meta_model(backbone="resnet18", method=method)) == tsn18
    h = 64
    # Ada. Skip: policy input C_in (no history), 2 actions: (C_in + 1)·H + 2H + (H + 1)·2C per block
    blocks18 = [(64, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
    skip = sum((ci + 1) * h + 2 * h + (h + 1) * 2 * c for ci, c in blocks18)
    assert count_params(meta_model(backbone="resnet18", method="ada_skip", policy_hidden=h)) - tsn18 == skip
    reuse = sum((2 * ci + 1) * h + 2 * h + (h + 1) * 2 * c for ci, c in blocks18)
    assert count_params(meta_model(backbone="resnet18", method="ada_reuse", policy_hidden=h)) - tsn18 == reuse
    # CGNet adds a threshold per conv1 output channel (BN without affine has no parameters)
    cg = count_params(meta_model(backbone="resnet18", method="cgnet"))
    assert cg - tsn18 == sum(c for _, c in blocks18)


@pytest.mark.parametrize(("backbone", "paper"), [("resnet18", 14.6), ("resnet50", 32.9)])
def test_dense_gmacs_match_paper(backbone, paper):
    table = profile(meta_model(backbone=backbone, method="tsn"), input_size=224)
    assert table.dense_gmacs == pytest.approx(paper, rel=0.01)


def test_per_block_macs_resnet50():
    table = profile(meta_model(backbone="resnet50", method="tsn"), input_size=224)
    per_frame = {k: v / 8 for k, v in table.per_module.items()}
    assert per_frame["backbone.layer1.0.conv1"] == 56 * 56 * 64 * 64  # 12.85 M
    assert per_frame["backbone.layer1.0.conv2"] == 56 * 56 * 64 * 64 * 9  # 115.6 M
    assert per_frame["backbone.layer4.0.conv1"] == 14 * 14 * 512 * 1024  # 102.8 M (stride on conv2)
    assert per_frame["backbone.layer4.0.conv2"] == 7 * 7 * 512 * 512 * 9  # 115.6 M
    assert per_frame["head"] == 2048 * 174


def test_policy_nets_are_in_the_dense_cost():
    tsn = profile(meta_model(backbone="resnet18", method="tsn")).dense_macs
    ada = profile(meta_model(backbone="resnet18", method="adafuse_tsn", policy_hidden=512)).dense_macs
    # per frame: H·Σ2·C_in (fc0) + H·Σ3·C (fc1) = (2,944 + 5,760)·H; BN and biases are not MACs
    assert ada - tsn == 8 * (2_944 + 5_760) * 512


def test_lstm_macs():
    tsn = profile(meta_model(backbone="resnet50", method="tsn")).dense_macs
    lstm = profile(meta_model(backbone="resnet50", method="lstm")).dense_macs
    assert lstm - tsn == 8 * (4 * (2048 * 512 + 512 * 512) + 512 * 174 - 2048 * 174)


def test_flops_command_json_and_errors(capsys):
    import json

    from adafuse.cli import main

    argv = ["flops", "--backbone", "resnet50", "--method", "adafuse_tsn", "--num-classes", "174",
            "--policy-quota", "196608", "--shared-policy", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params"] == 37_686_638 and result["policy_params"] == 13_822_080
    assert result["gflops"] == pytest.approx(32.70 + 0.25, abs=0.01)  # trunk + head, plus the shared policy nets
    assert main(["flops", "--backbone", "efficientnet_b3", "--method", "tsn", "--num-classes", "1000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_size"] == 300  # the backbone's native resolution
    for bad, message in ((["--backbone", "resnet5"], "unknown backbone 'resnet5'"),
                         (["--num-classes", "0"], "num_classes must be a positive integer, got 0")):
        args = {"--backbone": "resnet18", "--method": "tsn", "--num-classes": "10"}
        args.update(dict(zip(bad[::2], bad[1::2], strict=True)))
        assert main(["flops", *[x for kv in args.items() for x in kv]]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err

"""Every packaged config loads and builds; paper rows give the paper's model sizes."""

from pathlib import Path

import pytest
import torch

from adafuse.data.presets import get_preset
from adafuse.engine.config import load_config, model_kwargs
from adafuse.flops import count_params
from adafuse.models import build_model

CONFIGS = sorted((Path(__file__).parent.parent / "src" / "adafuse" / "configs").glob("*.yaml"))
PRESET = {"sthv1": "something_v1", "sthv2": "something_v2", "jester": "jester", "minik": "mini_kinetics"}


def build(path: Path):
    config = load_config(path)
    classes = get_preset(PRESET[path.stem.split("_")[0]]).num_classes if path.stem != "demo" else 8
    with torch.device("meta"):
        return config, build_model(**model_kwargs(config), num_classes=classes)


def test_there_is_a_config_per_paper_row():
    # 51 unique experiments of Tables 1, 2, 3, 5, 6, 7 + the demo + 11 comparison systems of Tables 4 and 5
    # + 2 with groups of 32
    assert len(CONFIGS) == 65


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds(path):
    config, model = build(path)
    assert model.config.method == config["model"]["method"]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("sthv1_r18_tsn", 11_265_774),
        ("sthv1_inc_tsn", 10_448_590),
        ("sthv1_inc_adafuse_tsn", 14_498_670),
        ("sthv1_r50_adafuse_tsn", 37_686_638),
        ("sthv2_r50_adafuse_tsm", 37_686_638),
        ("sthv2_r50_adafuse_tsm_last", 39_082_734),
        ("sthv2_r50_adafuse_tsm_last_h2048_l1", 54_296_302),
        ("sthv2_r50_adafuse_tsm_last_h4096_l1", 84_723_438),
        ("sthv1_r50_lstm", 28_844_270),
        ("sthv1_inc_trn", 13_141_218),
        ("sthv1_r50_i3d", 27_580_398),
        ("sthv1_r50_i3d_nl", 34_938_862),
        ("sthv1_inc_eco", 47_152_078),
        ("sthv1_inc_eco_lite_16", 37_385_230),
        ("sthv1_arnet", 62_495_103),
    ],
)
def test_paper_rows_have_the_papers_sizes(name, params):
    _, model = build(next(p for p in CONFIGS if p.stem == name))
    assert count_params(model) == params


def test_paper_presets_keep_the_papers_loss_and_the_default_uses_a_budget():
    for path in CONFIGS:
        loss = load_config(path)["loss"]
        if path.stem == "demo":
            assert loss["cost_target"] is not None and loss["efficiency_ramp_steps"] > 0
        else:  # λ·cost from the first step, as in the official code
            assert (loss["cost_target"], loss["efficiency_ramp_steps"]) == (None, 0), path.stem
    default = load_config(None)["loss"]
    assert 0 < default["cost_target"] < 1 and default["efficiency_ramp_steps"] > 0


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2"])
def test_cost_target_must_be_a_fraction(value):
    from adafuse.errors import UserError

    with pytest.raises(UserError, match=r"loss.cost_target must be in \(0, 1\], got "):
        load_config(None, [f"loss.cost_target={value}"])
    assert load_config(None, ["loss.cost_target=1"])["loss"]["cost_target"] == 1.0
    assert load_config(None, ["loss.cost_target=null"])["loss"]["cost_target"] is None


@pytest.mark.parametrize(("name", "hidden"), [("sthv1_r18_adafuse_tsn_g32", 512), ("sthv1_r50_adafuse_tsn_g32", None)])
def test_group_presets_decide_per_32_channels_with_the_papers_hidden_sizes(name, hidden):
    _, model = build(next(p for p in CONFIGS if p.stem == name))
    _, per_channel = build(next(p for p in CONFIGS if p.stem == name.removesuffix("_g32")))
    for grouped, reference in zip(model.fusions().values(), per_channel.fusions().values(), strict=True):
        assert grouped.group_size == 32 and grouped.decisions == reference.decisions // 32
        assert grouped.policy.fc0.out_features == reference.policy.fc0.out_features  # same H in every block

"""Policies are data; T has one source; the model knows what it is; the cost counter never touches the model."""

import pickle

import pytest
import torch

from adafuse.checkpoint import load_model, load_weights, read_checkpoint, save_model
from adafuse.errors import UserError
from adafuse.flops import adaptive_macs, profile
from adafuse.layers import SKIP, AdaptiveFusion, TemporalShift
from adafuse.layers.actions import actions_to_mask
from adafuse.models import ModelConfig, Recognizer, build_model
from adafuse.models.resnet import resnet10_mini
from conftest import force_policy, tiny_clip


def small(method="adafuse_tsn", t=3, **kwargs):
    return build_model(backbone="resnet10_mini", method=method, num_classes=5, num_segments=t, policy_hidden=8,
                       **kwargs)  # fmt: skip


def test_forced_actions_replace_the_policy_and_are_returned():
    model = small().eval()
    x = tiny_clip()
    skip = {name: actions_to_mask(torch.full((2, 3, f.decisions), int(SKIP))) for name, f in model.fusions().items()}
    forced_logits, policies = model.forward_with_policies(x, actions=skip)
    force_policy(model, SKIP)  # the same decisions through the policy nets
    assert torch.equal(forced_logits, model(x))
    assert all(torch.equal(policies[k], v) for k, v in skip.items())
    name = next(iter(skip))
    with pytest.raises(ValueError, match="policy mask of shape"):
        model.forward_with_policies(x, actions={name: skip[name][:, :2]})
    with pytest.raises(ValueError, match="modules without a policy: backbone.nothing"):
        model.forward_with_policies(x, actions={"backbone.nothing": skip[name]})


def test_no_mask_outlives_the_call():
    model = small().train()
    logits, policies = model.forward_with_policies(tiny_clip())
    held = [(n, k) for n, m in model.named_modules() for k, v in vars(m).items() if isinstance(v, torch.Tensor)]
    assert held == []  # nothing but parameters and buffers (which live in _parameters / _buffers)
    assert set(policies) == set(model.fusions()) and all(p.shape[:2] == (2, 3) for p in policies.values())


def test_profile_never_touches_the_model_even_with_shared_policy_fcs():
    # the paper's ResNet-50 presets share policy FCs; profiling once left meta tensors in the model
    model = build_model(backbone="resnet18", method="adafuse_tsn", num_classes=5, num_segments=2,
                        policy_quota=4096, shared_policy=True)  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = profile(model, input_size=32)
    after = model.state_dict()
    assert all(not v.is_meta and torch.equal(v, before[k]) for k, v in after.items())
    fcs = [f.policy.fc0 for f in model.fusions().values()]
    assert fcs[0] is fcs[1]  # still tied
    logits, policies = model.train().forward_with_policies(tiny_clip(t=2))
    logits.sum().backward()  # trains after profiling
    assert adaptive_macs(policies, table, batch_size=2).shape == (2,)
    assert profile(model, input_size=32).dense_macs == table.dense_macs  # and profiling is repeatable


def test_t_has_one_source_and_is_checked():
    model = small(t=3).eval()
    with pytest.raises(ValueError, match="built for num_segments=3 frames per clip, got 4"):
        model(tiny_clip(t=4))
    # a cost table made for T = 8 refuses masks of T = 4 (it used to return more than the dense cost)
    table8 = profile(small(t=8), input_size=32)
    policies4 = small(t=4).eval().forward_with_policies(tiny_clip(t=4))[1]
    with pytest.raises(ValueError, match=r"cost table expects \(2, 8, "):
        adaptive_macs(policies4, table8, batch_size=2)
    with pytest.raises(ValueError, match="missing"):
        adaptive_macs({}, table8, batch_size=2)
    # a hand-built recognizer whose modules disagree with its T
    net = resnet10_mini(shift_layer=lambda c, s: TemporalShift(num_segments=4))
    with pytest.raises(ValueError, match="built for num_segments=4, the recognizer for 3"):
        Recognizer(net, num_classes=5, num_segments=3)


def test_the_model_knows_what_it_is_and_checkpoints_carry_it(tmp_path):
    model = small(input_size=48, classes=list("abcde"), policy_group_size=4)
    assert model.config == ModelConfig.from_dict(model.config.to_dict())
    assert model.config.input_size == 48 and model.config.classes == tuple("abcde")
    save_model(tmp_path / "m.ckpt", model, dataset="/data/x.yaml")
    loaded, meta = load_model(tmp_path / "m.ckpt")
    assert loaded.config == model.config and meta["dataset"] == "/data/x.yaml"
    x = torch.randn(1, 3, 3, 48, 48)
    assert torch.equal(loaded(x), model.eval()(x))
    assert load_model(tmp_path / "m.ckpt", num_segments=5)[0].num_segments == 5


def test_format_1_checkpoints_still_load(tmp_path):
    model = small(policy_group_size=2).eval()
    build = {k: v for k, v in model.config.to_dict().items() if k not in ("input_size", "normalization", "classes")}
    build["policy_groups"] = build.pop("policy_group_size")  # the old name
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta = {"build": build, "classes": None, "input_size": 224, "normalization": "imagenet", "dataset": "d.yaml"}
    torch.save({"state_dict": state, "adafuse": meta}, tmp_path / "old.ckpt")
    loaded, _ = load_model(tmp_path / "old.ckpt")
    assert loaded.config == model.config
    x = tiny_clip()
    assert torch.equal(loaded(x), model(x))


def test_hand_built_recognizers_save_and_load_their_weights(tmp_path):
    model = Recognizer(resnet10_mini(), num_classes=4, num_segments=2).eval()
    assert model.config.backbone == "custom"
    save_model(tmp_path / "h.ckpt", model)
    with pytest.raises(UserError, match="built by hand"):
        load_model(tmp_path / "h.ckpt")
    again = load_weights(Recognizer(resnet10_mini(), num_classes=4, num_segments=2).eval(), tmp_path / "h.ckpt")
    x = tiny_clip(t=2)
    assert torch.equal(again(x), model(x))


class _Payload:
    def __reduce__(self):
        return (print, ("this ran",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoints_are_loaded_without_running_code(tmp_path, capsys):
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, "adafuse": {}, "x": _Payload()}, f)
    with pytest.raises(UserError, match="refused"):
        read_checkpoint(path)
    assert "this ran" not in capsys.readouterr().out


def test_seeded_sampling_is_repeatable_and_leaves_the_global_rng():
    model = small().eval()
    x = tiny_clip()
    state = torch.get_rng_state()
    a = model.forward_with_policies(x, sample=True, generator=torch.Generator().manual_seed(3))[1]
    b = model.forward_with_policies(x, sample=True, generator=torch.Generator().manual_seed(3))[1]
    assert all(torch.equal(a[k], b[k]) for k in a) and torch.equal(torch.get_rng_state(), state)


def test_lightning_module_loads_from_a_checkpoint(tmp_path):
    from adafuse.engine.config import DEFAULTS
    from adafuse.engine.module import RecognitionModule

    model = small(input_size=32).eval()
    save_model(tmp_path / "m.ckpt", model, train_config=DEFAULTS)
    module = RecognitionModule.load_from_checkpoint(tmp_path / "m.ckpt")
    assert module.model.config == model.config and module.table.dense_macs == profile(model, input_size=32).dense_macs
    x = tiny_clip()
    assert torch.equal(module.model.eval()(x), model(x))


def test_policy_group_size_config_key_and_its_old_name():
    from adafuse.engine.config import load_config

    assert load_config(None, ["model.policy_groups=4"])["model"]["policy_group_size"] == 4
    assert isinstance(next(iter(small(policy_group_size=4).fusions().values())), AdaptiveFusion)


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--policy-group-size", "3"], "must be divisible by policy_group_size (3)"),
     (["--policy-quota", "10"], "policy hidden size must be >= 1")],
)
def test_sizes_that_do_not_fit_the_backbone_are_one_line_errors(flags, message, capsys):
    from adafuse.cli import main

    assert main(["flops", "--backbone", "resnet18", "--method", "adafuse_tsn", "--num-classes", "3", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err

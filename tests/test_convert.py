"""The authors' released checkpoints: layout, conversion, strictness, round trip; the shifted projection shortcut.

The official files are not downloaded: ``authors_state_dict`` builds state dicts in their exact layout from the
facts of reference/official-implementation.md §9.2 (keys, shapes, shared-bank aliases, ``module.`` prefix), with
random values, and the file tests save them like torch 1.2 did (legacy, non-zip serialization).
"""

import json
import zipfile
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from adafuse.checkpoint import load_model
from adafuse.cli import main
from adafuse.convert import (
    authors_config,
    authors_structure,
    choose_method,
    from_authors_layout,
    to_authors_layout,
)
from adafuse.data.presets import preset_class_names
from adafuse.errors import UserError
from adafuse.flops import count_params
from adafuse.layers.actions import KEEP, REUSE, SKIP, mask_to_actions
from adafuse.models import build_model

P = "module.base_model."
QUOTA = 196608
# The released Something-V1 ResNet-50 models: (file name, policy stages, hidden H(C), shared, keys, parameters).
VARIANTS = {
    "tsn": ("sthv1_adatsn50.pth.tar", (1, 2, 3, 4), lambda c: QUOTA // c, True, 496, 37_686_638),
    "tsm": ("sthv1_adatsm50.pth.tar", (1, 2, 3, 4), lambda c: QUOTA // c, True, 496, 37_686_638),
    "last": ("sthv1_adatsm50last.pth.tar", (4,), lambda c: 1024, False, 347, 39_082_734),
}
METHOD = {"tsn": "adafuse_tsn", "tsm": "adafuse_tsm", "last": "adafuse_tsm_last"}


def authors_state_dict(variant: str, *, device: str = "cpu", num_classes: int = 174) -> dict[str, torch.Tensor]:
    """``DataParallel(TSN_Gate(batenet50, ...)).state_dict()`` of a released model, with random values; blocks
    that share FCs hold the very same tensors as the bank (``gate_fc0s`` / ``gate_fc1s``), as in a real file."""
    _, stages, hidden, shared, _, _ = VARIANTS[variant]
    g = torch.Generator().manual_seed(0)

    def rand(*shape, scale=0.02):
        if device == "meta":
            return torch.empty(*shape, device="meta")
        return torch.empty(*shape).uniform_(-scale, scale, generator=g)

    def bn(prefix, c):
        return {
            f"{prefix}.weight": rand(c, scale=0.1) + 1, f"{prefix}.bias": rand(c, scale=0.1),
            f"{prefix}.running_mean": rand(c, scale=0.1), f"{prefix}.running_var": rand(c, scale=0.1).abs() + 0.5,
            f"{prefix}.num_batches_tracked": torch.tensor(1000, device=device),
        }  # fmt: skip

    sd = {f"{P}conv1.weight": rand(64, 3, 7, 7), **bn(f"{P}bn1", 64)}
    bank: dict[str, torch.Tensor] = {}
    inplanes = 64
    for s, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True), 1):
        for b in range(blocks):
            p = f"{P}layer{s}.{b}"
            sd[f"{p}.conv1.weight"] = rand(planes, inplanes, 1, 1)
            sd.update(bn(f"{p}.bn1", planes))
            sd[f"{p}.conv2.weight"] = rand(planes, planes, 3, 3)
            sd.update(bn(f"{p}.bn2", planes))
            sd[f"{p}.conv3.weight"] = rand(4 * planes, planes, 1, 1)
            sd.update(bn(f"{p}.bn3", 4 * planes))
            if b == 0:
                sd[f"{p}.downsample0.weight"] = rand(4 * planes, inplanes, 1, 1)
                sd.update(bn(f"{p}.downsample1", 4 * planes))
            if s in stages:
                h, key = hidden(planes), f"{2 * inplanes}_{3 * planes}"
                fcs = {
                    "gate_fc0.weight": rand(h, 2 * inplanes), "gate_fc0.bias": rand(h),
                    "gate_fc1.weight": rand(3 * planes, h), "gate_fc1.bias": rand(3 * planes),
                }  # fmt: skip
                if shared:
                    for name in list(fcs):
                        fc, param = name.split(".")
                        fcs[name] = bank.setdefault(f"{P}{fc}s.{key}.{param}", fcs[name])
                sd.update({f"{p}.policy_net.{k}": v for k, v in fcs.items()})
                sd.update(bn(f"{p}.policy_net.gate_bn", h))
            inplanes = 4 * planes
    sd.update(bank)
    sd["module.new_fc.weight"] = rand(num_classes, 2048)
    sd["module.new_fc.bias"] = rand(num_classes)
    return sd


def distinct_params(sd: dict[str, torch.Tensor]) -> int:
    """Parameters of an official state dict: BatchNorm statistics aside, each shared tensor once."""
    seen = {id(v): v for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    return sum(v.numel() for v in seen.values())


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_generated_layout_is_the_documented_one(variant):
    _, _, _, _, keys, params = VARIANTS[variant]
    sd = authors_state_dict(variant, device="meta")
    assert len(sd) == keys
    assert distinct_params(sd) == params
    if variant != "last":
        banks = sorted(k.removeprefix(P).split(".")[1] for k in sd if k.startswith(f"{P}gate_fc0s.") and "weight" in k)
        assert banks == sorted(["128_192", "512_192", "512_384", "1024_384", "1024_768", "2048_768", "2048_1536",
                                "4096_1536"])  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS)
def test_structure_config_and_parameter_counts_from_the_keys(variant):
    name, stages, _, shared, _, params = VARIANTS[variant]
    sd = authors_state_dict(variant, device="meta")
    structure = authors_structure(sd)
    quota, hidden = (QUOTA, None) if variant != "last" else (None, 1024)
    assert structure == {"backbone": "resnet50", "num_classes": 174, "fused_stages": tuple(s - 1 for s in stages),
                         "policy_hidden": hidden, "policy_quota": quota, "shared_policy": shared}  # fmt: skip
    method, how = choose_method(structure["fused_stages"], name=name)
    assert method == METHOD[variant]
    assert how == ("keys (policy nets in layer4 only)" if variant == "last" else f"file name {name!r}")
    config = authors_config(sd, method=method, classes=preset_class_names("something_v1"))
    assert (config.num_segments, config.input_size, config.normalization) == (8, 224, "imagenet")
    assert config.shifted_shortcut == (variant != "tsn")
    with torch.device("meta"):
        model = build_model(**config.build_kwargs())
    assert count_params(model) == params
    ours = from_authors_layout(sd, config)
    assert set(ours) == set(model.state_dict())
    assert len(sd) - len(ours) == (32 if shared else 0)  # 8 bank entries × (fc0, fc1) × (weight, bias) dropped
    assert set(to_authors_layout(ours, config)) == set(sd)


def test_the_method_decision():
    every, last = (0, 1, 2, 3), (3,)
    assert choose_method(every, name="sthv1_adatsn50.pth.tar")[0] == "adafuse_tsn"
    assert choose_method(every, name="sthv1_adatsm50.pth.tar")[0] == "adafuse_tsm"
    assert choose_method(every, name="ckpt.best.pth.tar", method="adafuse_tsm") == ("adafuse_tsm", "--method")
    assert choose_method(last, name="ckpt.best.pth.tar")[0] == "adafuse_tsm_last"
    with pytest.raises(UserError, match="pass --method adafuse_tsn or adafuse_tsm"):
        choose_method(every, name="ckpt.best.pth.tar")
    with pytest.raises(UserError, match="pass --method"):
        choose_method(every, name="tsn_vs_tsm.pth.tar")
    with pytest.raises(UserError, match="every stage"):
        choose_method(every, method="adafuse_tsm_last")
    with pytest.raises(UserError, match="layer4 only"):
        choose_method(last, method="adafuse_tsm")
    with pytest.raises(UserError, match="says TSN"):
        choose_method(last, name="sthv1_adatsn50last.pth.tar")


def _layer(sd, block, name):
    return sd[f"{P}{block}.policy_net.{name}"]


def authors_forward(sd, clip, *, shift):
    """The official TSN_Gate(BateNet-50) at evaluation, with arg-max instead of sampled policies, written from the
    reference notes (§1.1–1.8, §9) on the authors' own keys: policy input [v_{t-1}, v_t] of the (shifted) block
    input, actions [skip, reuse, keep], fused = keep·y + reuse·y_{t-1}, and the shifted input into the projection
    shortcut. clip (N, T, 3, H, W) -> (video logits (N, K), {block: mask (N, T, C, 3) in their order})."""
    n, t = clip.shape[:2]

    def w(key):
        return sd[P + key]

    def bn(x, key):
        return F.batch_norm(x, w(f"{key}.running_mean"), w(f"{key}.running_var"), w(f"{key}.weight"),
                            w(f"{key}.bias"), training=False, eps=1e-5)  # fmt: skip

    def earlier(x):  # frame t takes frame t-1 (zeros first): (N·T, ...) viewed per video
        x = x.view(n, t, *x.shape[1:])
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1).flatten(0, 1)

    def temporal_shift(x):  # channels [0, C/8) from t+1, [C/8, 2C/8) from t-1
        fold = x.shape[1] // 8
        v = x.view(n, t, *x.shape[1:])
        ahead = torch.cat([v[:, 1:, :fold], torch.zeros_like(v[:, :1, :fold])], 1).flatten(0, 1)
        return torch.cat([ahead, earlier(x[:, fold : 2 * fold]), x[:, 2 * fold :]], 1)

    x = clip.flatten(0, 1)
    x = F.max_pool2d(F.relu(bn(F.conv2d(x, w("conv1.weight"), stride=2, padding=3), "bn1")), 3, 2, 1)
    masks = {}
    for s, blocks in enumerate((3, 4, 6, 3), 1):
        for b in range(blocks):
            p, stride = f"layer{s}.{b}", 2 if s > 1 and b == 0 else 1
            identity = x
            if shift:
                x = temporal_shift(x)
            y = F.relu(bn(F.conv2d(x, w(f"{p}.conv1.weight")), f"{p}.bn1"))
            if f"{P}{p}.policy_net.gate_fc0.weight" in sd:
                v = x.mean((2, 3))
                h = F.linear(torch.cat([earlier(v), v], 1), w(f"{p}.policy_net.gate_fc0.weight"),
                             w(f"{p}.policy_net.gate_fc0.bias"))  # fmt: skip
                h = F.relu(bn(h, f"{p}.policy_net.gate_bn"))
                logits = F.linear(h, w(f"{p}.policy_net.gate_fc1.weight"), w(f"{p}.policy_net.gate_fc1.bias"))
                mask = F.one_hot(logits.view(n * t, -1, 3).argmax(-1), 3).to(y.dtype)
                y = y * mask[..., 2, None, None] + earlier(y) * mask[..., 1, None, None]
                masks[p] = mask.view(n, t, -1, 3)
            y = F.relu(bn(F.conv2d(y, w(f"{p}.conv2.weight"), stride=stride, padding=1), f"{p}.bn2"))
            y = bn(F.conv2d(y, w(f"{p}.conv3.weight")), f"{p}.bn3")
            if b == 0:
                identity = bn(F.conv2d(x, w(f"{p}.downsample0.weight"), stride=stride), f"{p}.downsample1")
            x = F.relu(y + identity)
    frames = F.linear(x.mean((2, 3)), sd["module.new_fc.weight"], sd["module.new_fc.bias"])
    return frames.view(n, t, -1).mean(1), masks


def write_authors_file(folder, variant):
    """The variant saved like the authors' file (legacy format), with a hand-made policy in its first fused block:
    returns (the state dict, the file's path)."""
    sd = authors_state_dict(variant)
    block = "layer4.0" if variant == "last" else "layer1.0"
    # their action order per channel: [skip, reuse, keep]; channel c favours keep, reuse, skip for c % 3 = 0, 1, 2
    with torch.no_grad():
        _layer(sd, block, "gate_fc1.weight").zero_()  # in place: the shared bank's alias follows
        bias = torch.zeros(_layer(sd, block, "gate_fc1.bias").numel() // 3, 3)
        bias[0::3, 2], bias[1::3, 1], bias[2::3, 0] = 5.0, 5.0, 5.0
        _layer(sd, block, "gate_fc1.bias").copy_(bias.flatten())
    src = folder / VARIANTS[variant][0]
    torch.save({"state_dict": sd}, src, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(src)
    return sd, src


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_convert_load_strictly_and_round_trip(variant, tmp_path, capsys, one_thread):
    sd, src = write_authors_file(tmp_path, variant)
    out = tmp_path / "converted.ckpt"
    if variant == "tsm":  # the printed summary
        assert main(["convert", str(src), str(out)]) == 0
        text = capsys.readouterr().out
        assert "adafuse_tsm / resnet50 (method from file name 'sthv1_adatsm50.pth.tar'), 174 classes" in text
        assert "496 tensors read, 32 shared-bank aliases dropped" in text
    else:
        assert main(["convert", str(src), str(out), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["method"] == METHOD[variant] and report["params"] == VARIANTS[variant][5]
        assert report["tensors"] == VARIANTS[variant][4]

    model, meta = load_model(out)  # strict
    config = model.config
    assert (config.method, config.backbone, config.num_segments, config.input_size) == (METHOD[variant],
                                                                                       "resnet50", 8, 224)  # fmt: skip
    assert config.classes == tuple(preset_class_names("something_v1"))
    assert config.shifted_shortcut == (variant != "tsn")
    assert meta["converted_from"]["method"] == METHOD[variant]
    assert count_params(model) == VARIANTS[variant][5]

    # every tensor of the file is in the model, unchanged: ours -> authors' layout gives the file back
    ours = model.state_dict()
    back = to_authors_layout(ours, config)
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert torch.equal(back[key], value), key
    # and authors' layout -> ours is the identity on our side
    again = from_authors_layout(back, config)
    assert set(again) == set(ours)
    assert all(torch.equal(again[k], v) for k, v in ours.items())

    # the hand-made policy: their [skip, reuse, keep] biases make our model keep, reuse, skip
    fused = "backbone.layer4.0.fusion" if variant == "last" else "backbone.layer1.0.fusion"
    clip = torch.randn(1, 8, 3, 32, 32, dtype=torch.float64)
    model.double()
    with torch.no_grad():
        logits, policies = model.forward_with_policies(clip)
    actions = mask_to_actions(policies[fused])  # (1, 8, C)
    expected = torch.tensor([KEEP, REUSE, SKIP])[torch.arange(actions.shape[-1]) % 3]
    assert torch.equal(actions, expected.expand_as(actions))

    # the converted model computes the authors' function: their logits and decisions, from their keys
    sd64 = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    reference, their_masks = authors_forward(sd64, clip, shift=variant != "tsn")
    torch.testing.assert_close(logits, reference, rtol=1e-9, atol=1e-12)
    assert {f"backbone.{b}.fusion" for b in their_masks} == set(policies)
    for block, mask in their_masks.items():
        assert torch.equal(policies[f"backbone.{block}.fusion"], mask.flip(-1))  # [keep, reuse, skip]
    others = [mask_to_actions(m).flatten() for b, m in their_masks.items() if f"backbone.{b}.fusion" != fused]
    assert (torch.cat(others).bincount(minlength=3) > 0).all()  # random policies: the comparison saw every action
    if variant != "tsn":  # and it is sensitive to the shortcut: the original TSM block gives other logits
        for block in model.backbone.blocks():
            block.shifted_shortcut = False
        with torch.no_grad():
            assert not torch.allclose(model(clip), reference, rtol=1e-3, atol=0)


def test_loading_an_authors_file_says_convert_it(tmp_path, capsys):
    path = tmp_path / "sthv1_adatsm50.pth.tar"
    torch.save({"state_dict": {f"{P}conv1.weight": torch.zeros(1)}}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UserError, match=r"convert it first: adafuse convert .*sthv1_adatsm50.pth.tar OUT.ckpt"):
        load_model(path)
    assert main(["eval", "--checkpoint", str(path), "--json"]) == 2
    assert "adafuse convert" in capsys.readouterr().err


def _config(sd, variant="tsn"):
    return authors_config(sd, method=METHOD[variant], classes=preset_class_names("something_v1"))


def test_every_tensor_used_and_filled():
    sd = authors_state_dict("tsn", device="meta")
    config = _config(sd)
    extra = {**sd, f"{P}layer1.0.policy_net.gate_conv_embed.weight": torch.empty(64, 64, 3, 3, device="meta")}
    with pytest.raises(UserError, match=r"^module\.base_model\.layer1\.0\.policy_net\.gate_conv_embed\.weight has no"):
        from_authors_layout(extra, config)
    missing = {k: v for k, v in sd.items() if k != f"{P}layer2.0.downsample1.running_var"}
    with pytest.raises(UserError, match=r"no tensor for backbone\.layer2\.0\.downsample\.1\.running_var .*"
                       r"module\.base_model\.layer2\.0\.downsample1\.running_var"):  # fmt: skip
        from_authors_layout(missing, config)
    wrong = {**sd, "module.new_fc.bias": torch.empty(27, device="meta")}
    with pytest.raises(UserError, match=r"module\.new_fc\.bias has shape \(27,\); head\.bias .* needs \(174,\)"):
        from_authors_layout(wrong, config)
    stray = {**sd, "module.consensus.weight": torch.empty(1, device="meta")}
    with pytest.raises(UserError, match=r"module\.consensus\.weight: neither"):
        from_authors_layout(stray, config)
    unused = {**sd, f"{P}gate_fc0s.64_64.weight": torch.empty(4, 64, device="meta")}
    with pytest.raises(UserError, match="no block uses"):
        from_authors_layout(unused, config)


def test_the_shared_bank_must_alias_the_blocks():
    sd = authors_state_dict("tsn", device="meta")
    config = _config(sd)
    differs = dict(sd)
    differs[f"{P}gate_fc0s.128_192.weight"] = torch.zeros(3072, 128)
    differs[f"{P}layer1.0.policy_net.gate_fc0.weight"] = torch.ones(3072, 128)
    with pytest.raises(UserError, match=r"gate_fc0s\.128_192\.weight differs from .*layer1\.0\.policy_net"):
        from_authors_layout(differs, config)
    # blocks of one shape that do not share their FCs cannot become one shared FC
    unshared = dict(sd)
    unshared[f"{P}layer1.2.policy_net.gate_fc1.bias"] = torch.zeros(192)
    unshared[f"{P}gate_fc1s.512_192.bias"] = torch.ones(192)
    unshared[f"{P}layer1.1.policy_net.gate_fc1.bias"] = unshared[f"{P}gate_fc1s.512_192.bias"]
    with pytest.raises(UserError, match=r"gate_fc1s\.512_192\.bias differs from .*layer1\.2"):
        from_authors_layout(unshared, config)
    # a shared model needs the bank (else blocks' FCs could differ and one would silently win), and vice versa
    with pytest.raises(UserError, match="has no shared-policy bank"):
        from_authors_layout({k: v for k, v in sd.items() if "gate_fc0s" not in k and "gate_fc1s" not in k}, config)
    with pytest.raises(UserError, match="has a shared-policy bank but the model does not share"):
        from_authors_layout(sd, config.replace(shared_policy=False))


def test_what_the_keys_cannot_express():
    sd = authors_state_dict("last", device="meta")
    partial = {k: v for k, v in sd.items() if ".layer4.2.policy_net." not in k}
    with pytest.raises(UserError, match="layer4.2 has no policy net"):
        authors_structure(partial)
    no_policy = {k: v for k, v in sd.items() if ".policy_net." not in k}
    with pytest.raises(UserError, match="not an AdaFuse"):
        authors_structure(no_policy)
    with pytest.raises(UserError, match="27 class names"):
        authors_config(sd, method="adafuse_tsm_last", classes=preset_class_names("jester"))
    bare = {k.removeprefix("module."): v for k, v in sd.items()}
    with pytest.raises(UserError, match="starts with 'module.'"):
        authors_structure(bare)


def test_convert_cli_errors_are_one_line(tmp_path, capsys):
    src = tmp_path / "ckpt.best.pth.tar"
    torch.save({"state_dict": authors_state_dict("tsn", device="meta")}, src, _use_new_zipfile_serialization=False)
    assert main(["convert", str(src), str(tmp_path / "out.ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pass --method adafuse_tsn or adafuse_tsm" in err and str(src) in err
    assert main(["convert", str(src), str(tmp_path / "out.ckpt"), "--method", "adafuse_tsn", "--preset", "jester"]) == 2
    assert "174 outputs but 27 class names" in capsys.readouterr().err
    names = tmp_path / "classes.txt"
    names.write_text("a\nb\nc\n", encoding="utf-8")
    out = str(tmp_path / "out.ckpt")
    assert main(["convert", str(src), out, "--method", "adafuse_tsn", "--classes", str(names)]) == 2
    assert "174 outputs but 3 class names" in capsys.readouterr().err
    assert not (tmp_path / "out.ckpt").exists()


# ---- the shifted projection shortcut (the official BateNet's TSM block) ----


def test_shifted_shortcut_changes_only_the_projection_shortcuts_input(one_thread):
    kw = {"backbone": "resnet50", "method": "adafuse_tsm", "num_classes": 5, "num_segments": 4, "policy_hidden": 8}
    plain = build_model(**kw).eval()
    shifted = build_model(**kw, shifted_shortcut=True).eval()
    shifted.load_state_dict(plain.state_dict())  # strict: the option adds no tensors
    clip = torch.randn(2, 4, 3, 32, 32)

    def record(model, swap=False):
        """Inputs of every block and of its projection conv; ``swap`` replaces the projection's input."""
        seen, hooks = {}, []

        def both(n, module, args, xs):
            seen[n], seen[f"{n}.xs"] = args[0], xs

        for name, block in model.backbone.named_blocks():
            # the shift sees the block input x and gives the shifted xs (a block is entered by a method call: no hook)
            hooks.append(block.shift.register_forward_hook(partial(both, name)))
            if block.downsample is not None:

                def hook(m, a, n=name):
                    seen[f"{n}.proj"] = a[0]
                    return (seen[n],) if swap else None

                hooks.append(block.downsample[0].register_forward_pre_hook(hook))
        with torch.no_grad():
            out = model.forward_with_policies(clip)
        for h in hooks:
            h.remove()
        return out, seen

    (logits_p, pol_p), seen_p = record(plain)
    (logits_s, pol_s), seen_s = record(shifted)
    projections = [k for k in seen_s if k.endswith(".proj")]
    assert len(projections) == 4  # layer1.0 ... layer4.0
    for key in projections:
        block = key.removesuffix(".proj")
        assert torch.equal(seen_p[key], seen_p[block])  # original TSM: the unshifted block input
        assert torch.equal(seen_s[key], seen_s[f"{block}.xs"])  # BateNet: the shifted one
        assert not torch.equal(seen_s[f"{block}.xs"], seen_s[block])
    assert not torch.allclose(logits_p, logits_s)
    # nothing else differs: fed the unshifted input, the projections make the shifted model the plain one
    (logits_back, pol_back), _ = record(shifted, swap=True)
    assert torch.equal(logits_back, logits_p)
    assert all(torch.equal(pol_back[k], pol_p[k]) for k in pol_p)


def test_shifted_shortcut_needs_a_shift_and_a_resnet():
    with pytest.raises(UserError, match="shifted_shortcut needs a method with a temporal shift"):
        build_model(backbone="resnet18", method="adafuse_tsn", num_classes=3, shifted_shortcut=True)
    with pytest.raises(UserError, match="ResNet backbone"):
        build_model(backbone="efficientnet_b0", method="tsm", num_classes=3, shifted_shortcut=True)


def test_shifted_shortcut_is_a_config_key_and_survives_a_checkpoint(tmp_path):
    from adafuse.checkpoint import save_model
    from adafuse.engine.config import load_config, model_kwargs

    config = load_config(None, ["model.backbone=resnet18", "model.method=tsm", "model.shifted_shortcut=true"])
    model = build_model(**model_kwargs(config), num_classes=3)
    assert model.config.shifted_shortcut and model.backbone.layer2[0].shifted_shortcut
    save_model(tmp_path / "m.ckpt", model)
    assert load_model(tmp_path / "m.ckpt")[0].backbone.layer2[0].shifted_shortcut

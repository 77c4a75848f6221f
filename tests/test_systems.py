"""The paper's comparison systems (TRN, I3D, NL-I3D, ECO, AR-Net): hand-computed heads and costs, inflation of 2D
ImageNet weights, the evaluation-time ensemble, and the paper's model sizes."""

import itertools

import pytest
import torch
from torch import nn

from adafuse.checkpoint import save_model
from adafuse.errors import UserError
from adafuse.flops import adaptive_macs, count_params, profile
from adafuse.layers.relation import RelationConsensus
from adafuse.models import build_model, load_pretrained
from adafuse.models.bninception import BNInception
from adafuse.models.resnet import resnet10_mini, resnet18

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only add contention


def _random_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """Random tensors in ``net``'s shapes (BatchNorm variances positive), as an ImageNet file would hold."""
    return {k: (torch.rand_like(v) + 0.5 if k.endswith("running_var") else torch.randn_like(v))
            if v.is_floating_point() else v for k, v in net.state_dict().items()}  # fmt: skip


def _set(linear: nn.Linear, weight, bias) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        linear.bias.copy_(torch.tensor(bias, dtype=torch.float32))


def test_trn_relation_head_by_hand():
    head = RelationConsensus(2, 1, num_segments=3, features=1, bottleneck=1, dropout=0.0)
    _set(head.embed, [[1.0, -1.0]], [0.0])  # f_t = x_t0 - x_t1
    g3, g2 = head.g  # scales 3 and 2
    _set(g3[1], [[1.0, 2.0, 3.0]], [0.0])
    _set(g3[3], [[1.0]], [0.0])
    _set(g2[1], [[1.0, -1.0]], [0.5])
    _set(g2[3], [[2.0]], [0.0])
    frames = torch.tensor([[[3.0, 1.0], [0.0, 1.0], [2.0, 0.0]]])  # f = 2, -1, 2
    # g3: relu(f) = (2, 0, 2) -> 2 + 0 + 6 = 8.  g2 over (0,1), (0,2), (1,2): relu(f) pairs (2,0), (2,2), (0,2)
    # -> 2*relu(2.5) + 2*relu(0.5) + 2*relu(-1.5) = 5 + 1 + 0 = 6.  All three pairs are drawn: 8 + 6 = 14.
    assert head.eval()(frames).item() == pytest.approx(14.0)
    assert head.train()(frames).item() == pytest.approx(14.0)


def test_trn_evaluation_is_the_expectation_of_the_training_draws(monkeypatch):
    head = RelationConsensus(4, 3, num_segments=4, features=5, bottleneck=6, relations=1, dropout=0.0)
    frames = torch.randn(2, 4, 4)
    expected = head.eval()(frames)
    # Training draws one subset per scale below T (scale 3: 4 subsets, then scale 2: 6): average every draw.
    outs = []
    for first, second in itertools.product(range(4), range(6)):
        picks = iter([first, second])
        monkeypatch.setattr(torch, "randperm", lambda n, _p=picks: torch.tensor([next(_p)]))
        outs.append(head.train()(frames))
    assert torch.allclose(torch.stack(outs).mean(0), expected, atol=1e-6)


def test_trn_has_no_frame_logits_and_needs_two_frames():
    model = build_model(backbone="resnet10_mini", method="trn", num_classes=3, num_segments=3)
    assert model(torch.randn(2, 3, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match="no frame logits"):
        model.frame_logits(torch.randn(1, 3, 3, 32, 32))
    with pytest.raises(ValueError, match="at least 2 frames"):
        build_model(backbone="resnet10_mini", method="trn", num_classes=3, num_segments=1)


@pytest.fixture
def resnet2d_file(tmp_path):
    """A 2D ImageNet-style state dict of resnet10_mini (torchvision keys + fc), written by the test."""
    net = resnet10_mini()
    state = _random_state(net)
    state["fc.weight"], state["fc.bias"] = torch.randn(10, 128), torch.randn(10)
    path = tmp_path / "r10.pth"
    torch.save(state, path)
    return path, state


def test_i3d_loads_2d_imagenet_weights_by_inflation(resnet2d_file):
    path, state = resnet2d_file
    model = build_model(backbone="resnet10_mini", method="i3d", num_classes=4, num_segments=8)
    report = load_pretrained(model, str(path))
    assert report.dropped == ["fc.bias", "fc.weight"] and report.missing == ["head.bias", "head.weight"]
    net = model.backbone
    # conv1 5×7×7: five copies of the 2D kernel, divided by 5; layer1.0.conv1 3×3×3; layer2.1.conv1 (odd) 1×3×3
    assert torch.allclose(net.conv1.weight, state["conv1.weight"].unsqueeze(2).repeat(1, 1, 5, 1, 1) / 5)
    assert net.layer1[0].conv1.weight.shape[2] == 3 and net.layer1[0].conv2.weight.shape[2] == 1
    assert torch.allclose(net.layer1[0].conv1.weight.sum(2), state["layer1.0.conv1.weight"], atol=1e-6)
    assert torch.equal(net.layer1[0].bn1.running_var, state["layer1.0.bn1.running_var"])
    # On a clip of identical frames an inflated kernel gives the 2D conv away from the clip's ends.
    frame = torch.randn(1, 3, 32, 32)
    clip = frame[:, :, None].repeat(1, 1, 9, 1, 1)
    conv2d = nn.functional.conv2d(frame, state["conv1.weight"], stride=2, padding=3)
    assert torch.allclose(net.conv1(clip)[:, :, 2], conv2d, atol=1e-4)


def test_non_local_blocks_start_as_the_identity(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(_random_state(resnet18()), path)
    plain = build_model(backbone="resnet18", method="i3d", num_classes=4, num_segments=4).eval()
    nl = build_model(backbone="resnet18", method="i3d_nl", num_classes=4, num_segments=4).eval()
    load_pretrained(plain, str(path))
    report = load_pretrained(nl, str(path))
    assert sorted({k.split(".non_local.")[0] for k in report.missing if ".non_local." in k}) == [
        "backbone.layer2.1", "backbone.layer3.1"]  # after the odd blocks of layer2 and layer3
    clips = torch.randn(2, 4, 3, 32, 32)
    assert torch.allclose(plain.backbone(clips), nl.backbone(clips), atol=1e-5)


def test_3d_models_count_their_convs_and_attention():
    model = build_model(backbone="resnet10_mini", method="i3d_nl", num_classes=4, num_segments=4)
    table = profile(model, input_size=32)
    # conv1 5×7×7, 3 -> 16 channels, output 2 × 16 × 16 (stride 2 everywhere): every output element, one window
    assert table.per_module["backbone.conv1"] == 16 * 2 * 16 * 16 * 3 * 5 * 7 * 7
    assert not any("non_local" in k for k in table.per_module)  # one block per stage: no odd block, no NL block
    big = build_model(backbone="resnet50", method="i3d_nl", num_classes=4, num_segments=8)
    macs = profile(big, input_size=64).per_module
    # layer2.1's block: 512 channels at 1 × 8 × 8 = 64 positions, keys pooled to 16; inner 256
    assert macs["backbone.layer2.1.non_local.affinity"] == 64 * 16 * 256
    assert macs["backbone.layer2.1.non_local.aggregate"] == 64 * 256 * 16


def test_eco_loads_bninception_weights_into_its_2d_part(tmp_path):
    state = _random_state(BNInception())
    torch.save(state, tmp_path / "bni.pth")
    lite = build_model(backbone="bninception", method="eco_lite", num_classes=3, num_segments=4)
    report = load_pretrained(lite, str(tmp_path / "bni.pth"))
    assert "inception_5b_1x1.weight" in report.dropped and "inception_3c_3x3.weight" in report.dropped
    assert torch.equal(lite.backbone.trunk.inception_3c_double_3x3_1.weight, state["inception_3c_double_3x3_1.weight"])
    assert all(k.startswith(("backbone.head3d", "head.")) for k in report.missing if "num_batches" not in k)
    full = build_model(backbone="bninception", method="eco", num_classes=3, num_segments=4)
    assert not load_pretrained(full, str(tmp_path / "bni.pth")).dropped
    assert full(torch.randn(1, 4, 3, 64, 64)).shape == (1, 3) and full.backbone.num_features == 1536


def _tiny_arnet(**kw):
    return build_model(backbone="mobilenet_v2", method="arnet", num_classes=3, num_segments=4, input_size=64,
                       arnet_backbones=("resnet10_mini", "resnet10_mini"), arnet_scales=(1.0, 0.5, 0.5),
                       arnet_skips=(1, 2), **kw)  # fmt: skip


def _rows(*actions: int, width: int) -> torch.Tensor:
    return nn.functional.one_hot(torch.tensor(actions), width).float()


def test_arnet_policy_cost_by_hand():
    model = _tiny_arnet().eval()
    assert model.action_names() == ["resnet10_mini@64", "resnet10_mini@32", "policy@32", "skip1", "skip2", "covered"]
    table = profile(model, input_size=64)
    per_frame = {k: v / 4 for k, v in table.per_module.items()}
    cost = {p: sum(v for k, v in per_frame.items() if k == p or k.startswith(f"{p}.")) for p in
            ("branches.0", "classifiers.0", "branches.1", "classifiers.1", "policy")}  # fmt: skip
    c0, c1 = cost["branches.0"] + cost["classifiers.0"], cost["branches.1"] + cost["classifiers.1"]
    p = cost["policy"]
    assert table.dense_macs == pytest.approx(4 * (c0 + c1 + p))
    # frames: branch 0, skip 2 (covers the next frame), covered, the policy's own prediction
    mask = _rows(0, 4, 5, 2, width=6)[None]
    macs = adaptive_macs({"policy": mask}, table, batch_size=1)
    assert macs.item() == pytest.approx((c0 + p) + p + 0 + p, rel=1e-6)
    clips = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        logits, policies = model.forward_with_policies(clips, actions={"policy": mask})
        branch0 = model.classifiers[0](model.branches[0](clips[0, :1]))  # frame 0 at 64 px, by branch 0
        policy_logits = model.decide(clips, sample=False, forced=mask)[1]  # the policy's own frame predictions
    assert torch.equal(policies["policy"], mask)
    # the video prediction: the mean over the two frames that were not skipped (frame 0 and frame 3)
    assert torch.allclose(logits, (branch0 + policy_logits[:, 3]) / 2, atol=1e-5)


def test_arnet_skip_decisions_cover_the_next_frames():
    model = _tiny_arnet().eval()
    with torch.no_grad():  # the policy always prefers "skip 2"
        model.policy.actions.weight.zero_()
        model.policy.actions.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0]))
    _, policies = model.forward_with_policies(torch.randn(2, 4, 3, 64, 64))
    assert torch.equal(policies["policy"], _rows(4, 5, 4, 5, width=6).expand(2, -1, -1))
    table = profile(model, input_size=64)
    macs = adaptive_macs(policies, table, batch_size=2)
    savings = table.choice["policy"]
    assert torch.allclose(macs, torch.full((2,), table.dense_macs - 2 * savings[4].item() - 2 * savings[5].item()))
    with pytest.raises(ValueError, match="cost table expects"):
        adaptive_macs({"policy": policies["policy"][..., :5]}, table, batch_size=2)


def test_arnet_trains_through_its_gumbel_policy_and_efficiency_loss():
    model = _tiny_arnet().train()
    table = profile(model, input_size=64)
    logits, policies = model.forward_with_policies(torch.randn(2, 4, 3, 64, 64))
    cost = adaptive_macs(policies, table, batch_size=2).mean() / table.dense_macs
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 1])) + cost
    loss.backward()
    assert model.policy.actions.weight.grad.abs().sum() > 0  # the cost reaches the policy (straight-through)


def test_arnet_needs_a_torchvision_weights_name_and_consistent_options():
    with pytest.raises(UserError, match="torchvision weights name"):
        load_pretrained(_tiny_arnet(), "/some/file.pth")
    with pytest.raises(UserError, match="arnet_scales"):
        build_model(backbone="mobilenet_v2", method="arnet", num_classes=3, arnet_scales=(1.0, 0.5))
    with pytest.raises(UserError, match="needs backbone mobilenet_v2"):
        build_model(backbone="resnet18", method="arnet", num_classes=3)
    with pytest.raises(UserError, match="needs backbone bninception"):
        build_model(backbone="resnet18", method="eco", num_classes=3)


@pytest.mark.parametrize(
    ("kwargs", "paper_params"),
    [
        # Kinetics-400 heads: the published sizes of these models are those of their Kinetics versions
        ({"backbone": "resnet50", "method": "i3d", "num_segments": 32, "num_classes": 400}, 28.0e6),
        ({"backbone": "resnet50", "method": "i3d_nl", "num_segments": 32, "num_classes": 400}, 35.3e6),
        ({"backbone": "bninception", "method": "eco", "num_segments": 8, "num_classes": 400}, 47.5e6),
        ({"backbone": "bninception", "method": "eco_lite", "num_segments": 16, "num_classes": 400}, 150e6 / 4),
        ({"backbone": "mobilenet_v2", "method": "arnet", "num_segments": 16, "num_classes": 174}, 63.0e6),
    ],
)
def test_comparison_systems_have_the_published_sizes(kwargs, paper_params):
    with torch.device("meta"):
        model = build_model(**kwargs)
    assert count_params(model) == pytest.approx(paper_params, rel=0.01)


def test_ensemble_averages_the_members_softmax(tmp_path):
    from adafuse.engine.evaluate import evaluate_checkpoint, evaluate_ensemble

    data = _two_class_dataset(tmp_path)
    paths = []
    for t in (2, 3):
        model = build_model(backbone="resnet10_mini", method="tsn", num_classes=2, num_segments=t, input_size=32,
                            classes=("push", "pull"))  # fmt: skip
        paths.append(tmp_path / f"m{t}.ckpt")
        save_model(paths[-1], model, dataset=str(data))
    one = [evaluate_checkpoint(p, batch_size=2, workers=0, progress=False, keep_scores=True) for p in paths]
    both = evaluate_ensemble(paths, batch_size=2, workers=0, progress=False)
    scores = (one[0]["scores"] + one[1]["scores"]) / 2
    assert both["top1"] == pytest.approx(100 * (scores.argmax(1) == one[0]["labels"]).float().mean().item())
    assert both["gflops"] == pytest.approx(one[0]["gflops"] + one[1]["gflops"]) and both["num_segments"] == 5
    with pytest.raises(UserError, match="at least two"):
        evaluate_ensemble(paths[:1])


def _two_class_dataset(root):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    lines = []
    for i in range(4):
        (root / "frames" / f"v{i}").mkdir(parents=True)
        for f in range(1, 5):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / "frames" / f"v{i}" /
                                                                                    f"{f:05d}.jpg")
        lines.append(f"v{i} 4 {i % 2}")
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("push\npull\n")
    (root / "dataset.yaml").write_text(
        "preset: custom\nformat: frames\nroot: frames\ntrain_list: val.txt\nval_list: val.txt\n"
        "classes: classes.txt\ntemplate: '{:05d}.jpg'\nnum_classes: 2\nflip: false\n"
    )
    return root / "dataset.yaml"

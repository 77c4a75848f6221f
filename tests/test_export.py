"""ONNX export: onnxruntime computes what PyTorch computes (clip model and streaming step); refusals are one line."""

import json

import numpy as np
import pytest
import torch

from adafuse.checkpoint import save_model
from adafuse.cli import main
from adafuse.errors import UserError
from adafuse.inference.stream_step import StreamingStep
from adafuse.layers import TemporalShift
from adafuse.models import ModelConfig, build_model
from test_sparse import SIZE, assert_same, tiny

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
from adafuse.inference.export import export_onnx, verify_onnx  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

CAUSAL = {"causal_shift": True}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``(method, mode, **kwargs) -> (model, OnnxExport)``: each tiny ResNet exported once per module (exports take
    seconds). Clip models have T = 3; stream models T = 5, so that the reference clip is several frames long."""
    cache = {}

    def get(method: str, mode: str, **kwargs):
        key = (method, mode, tuple(sorted(kwargs.items())))
        if key not in cache:
            torch.manual_seed(len(cache))
            model = tiny("resnet10_mini", method, t=3 if mode == "clip" else 5, input_size=SIZE, **kwargs)
            path = tmp_path_factory.mktemp("onnx") / f"{method}_{mode}.onnx"
            state = {k: v.clone() for k, v in model.state_dict().items()}
            export = export_onnx(model.train(), path, mode=mode)
            assert model.training and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
            cache[key] = model.eval(), export  # the export left the model as it was
        return cache[key]

    return get


def session(export):
    return ort.InferenceSession(str(export.path), providers=["CPUExecutionProvider"])


@pytest.mark.slow  # one export (seconds) per model
@pytest.mark.parametrize(
    ("method", "kwargs"), [("tsn", {}), ("tsm", {}), ("adafuse_tsn", {}), ("adafuse_tsm_last", CAUSAL)]
)
def test_clip_graph_equals_pytorch_at_any_batch(exported, method, kwargs):
    model, export = exported(method, "clip", **kwargs)
    names = list(model.fusions())
    assert export.inputs == {"clips": ("batch", 3, 3, SIZE, SIZE)}
    assert list(export.outputs) == ["logits", *names]
    assert export.outputs["logits"] == ("batch", 5)
    sess = session(export)
    for n in (1, 3):  # exported with a dynamic batch; 3 is neither the traced size nor 1
        clips = torch.randn(n, 3, 3, SIZE, SIZE)
        logits, *masks = sess.run(None, {"clips": clips.numpy()})
        with torch.no_grad():
            expected, policies = model.forward_with_policies(clips)
        assert_same(torch.from_numpy(logits), expected)
        for name, mask in zip(names, masks, strict=True):
            assert torch.equal(torch.from_numpy(mask), policies[name]), name
    if names:  # the policies really decide: every action occurs, so equal masks mean something
        decided = torch.cat([p.flatten(0, -2) for p in policies.values()]).sum(0)
        assert (decided > 0).all()


def play(sess, export, a: torch.Tensor, b: torch.Tensor) -> tuple[list[dict], list[dict]]:
    """Two streams through the exported step: stream 0 plays clip a; stream 1 plays b's first two frames, is reset
    (its rows of the state zeroed) and plays b again from the start. Returns the outputs by name per frame, split
    into (stream 0's frames, stream 1's frames after the reset)."""
    names = list(export.outputs)
    state = {n: np.zeros([2, *s[1:]], np.float32) for n, s in list(export.inputs.items())[1:]}
    before, after = [], []
    for t in range(a.shape[1]):
        j = t if t < 2 else t - 2
        if t == 2:
            for value in state.values():
                value[1] = 0.0
        frames = torch.cat([a[:, t], b[:, j]]).numpy()
        out = dict(zip(names, sess.run(None, {"frames": frames, **state}), strict=True))
        state = {n: out[f"next_{n}"] for n in state}
        before.append({k: v[0] for k, v in out.items()})
        if t >= 2:
            after.append({k: v[1] for k, v in out.items()})
    return before, after


@pytest.mark.slow  # one export (seconds) per model
@pytest.mark.parametrize(("method", "kwargs"), [("adafuse_tsm_last", CAUSAL), ("lstm", {})])
def test_stream_graph_equals_frame_logits_with_resets(exported, method, kwargs):
    model, export = exported(method, "stream", **kwargs)
    step = StreamingStep(model)
    assert list(export.inputs) == ["frames", *(f"state.{n}" for n in step.state_names)]
    assert list(export.outputs) == ["logits", *step.policy_names, *(f"next_state.{n}" for n in step.state_names)]
    assert all(shape[0] == "batch" for shape in [*export.inputs.values(), *export.outputs.values()])
    a, b = torch.randn(1, 5, 3, SIZE, SIZE), torch.randn(1, 5, 3, SIZE, SIZE)
    with torch.no_grad():
        (logits_a, masks_a), (logits_b, masks_b) = (model.forward_with_policies(c, per_frame=True) for c in (a, b))
    before, after = play(session(export), export, a, b)
    for t, out in enumerate(before):
        assert_same(torch.from_numpy(out["logits"]), logits_a[0, t])
        for name in step.policy_names:
            assert torch.equal(torch.from_numpy(out[name]), masks_a[name][0, t])
    for t, out in enumerate(after):  # after the reset, stream 1 is at b's first frame again
        assert_same(torch.from_numpy(out["logits"]), logits_b[0, t])
        for name in step.policy_names:
            assert torch.equal(torch.from_numpy(out[name]), masks_b[name][0, t])

    meta = {p.key: p.value for p in onnx.load(str(export.path), load_external_data=False).metadata_props}
    assert ModelConfig.from_dict(json.loads(meta["adafuse.config"])) == model.config
    assert meta["adafuse.mode"] == "stream"
    assert json.loads(meta["adafuse.state"]) == {n: list(s[1:]) for n, s in step.state_shapes(1).items()}


@pytest.mark.parametrize(
    ("backbone", "method", "kwargs"),
    [("resnet18", "adafuse_tsn", {}), ("resnet50", "adafuse_tsm", CAUSAL), ("resnet18", "ada_skip", {}),
     ("resnet10_mini", "tsm", CAUSAL), ("resnet10_mini", "tsn", {}), ("resnet10_mini", "lstm", {}),
     ("resnet18", "adafuse_tsm", {**CAUSAL, "shifted_shortcut": True})],  # the authors' BateNet shortcut
)  # fmt: skip
def test_streaming_step_equals_frame_logits(backbone, method, kwargs):
    model = tiny(backbone, method, t=4, input_size=SIZE, **kwargs)
    clip = torch.randn(2, 4, 3, SIZE, SIZE)
    with torch.no_grad():
        expected, policies = model.forward_with_policies(clip, per_frame=True)
        step = StreamingStep(model)
        state = step.init_state(2)
        for t in range(4):
            logits, *rest = step(clip[:, t], *state)
            masks, state = rest[: len(step.policy_names)], rest[len(step.policy_names) :]
            assert_same(logits, expected[:, t])
            for name, mask in zip(step.policy_names, masks, strict=True):
                assert torch.equal(mask, policies[name][:, t])
    assert [tuple(s.shape) for s in state] == list(step.state_shapes(2).values())
    kinds = {name.rsplit(".", 1)[1] for name in step.state_names}
    assert kinds == {
        "adafuse_tsn": {"pooled", "conv1"}, "adafuse_tsm": {"shift", "pooled", "conv1"}, "ada_skip": set(),
        "tsm": {"shift"}, "tsn": set(), "lstm": {"h", "c"},
    }[method]  # fmt: skip


def test_shapes_of_the_step_state():
    model = build_model(backbone="resnet50", method="adafuse_tsm", num_classes=5, num_segments=2, causal_shift=True,
                        policy_hidden=8)  # fmt: skip
    shapes = StreamingStep(model).state_shapes(3)  # 224 px: the first block sees 56², the last 7²
    assert shapes["backbone.layer1.0.shift"] == (3, 64 // 8, 56, 56)
    assert shapes["backbone.layer1.0.pooled"] == (3, 64)
    assert shapes["backbone.layer1.0.conv1"] == (3, 64, 56, 56)
    assert shapes["backbone.layer2.0.conv1"] == (3, 128, 56, 56)  # stride 2 is on conv2 (torchvision v1.5)
    assert shapes["backbone.layer4.2.shift"] == (3, 2048 // 8, 7, 7)
    assert shapes["backbone.layer4.2.conv1"] == (3, 512, 7, 7)
    assert model.training  # the step holds an evaluation copy; the caller's model is left as it is


def test_cli_export_with_a_fixed_batch(tmp_path, capsys):
    model = tiny("resnet10_mini", "tsn", t=2, input_size=SIZE)
    save_model(tmp_path / "tsn.ckpt", model)
    out = tmp_path / "deploy" / "tsn.onnx"
    assert main(["export", str(tmp_path / "tsn.ckpt"), "--format", "onnx", str(out), "--batch", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["inputs"] == {"clips": [2, 2, 3, SIZE, SIZE]} and result["outputs"] == {"logits": [2, 5]}
    assert result["mode"] == "clip" and result["batch"] == 2 and result["bytes"] == out.stat().st_size
    assert result["max_difference"] < 1e-4
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    clips = torch.randn(2, 2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert_same(torch.from_numpy(sess.run(None, {"clips": clips.numpy()})[0]), model(clips))
    with pytest.raises(Exception, match="dimensions"):  # a fixed batch is fixed
        sess.run(None, {"clips": torch.randn(3, 2, 3, SIZE, SIZE).numpy()})


@pytest.mark.slow  # one export (seconds) per model
def test_verify_catches_a_graph_of_other_weights(exported):
    model, export = exported("adafuse_tsm_last", "clip", **CAUSAL)
    assert verify_onnx(model, export) < 1e-4
    other = tiny("resnet10_mini", "adafuse_tsm_last", t=3, input_size=SIZE, **CAUSAL)
    assert verify_onnx(other, export) > 1e-2


@pytest.mark.parametrize(
    ("method", "backbone", "kwargs", "mode", "message"),
    [
        ("tsm", "resnet10_mini", {}, "stream", "bidirectional"),
        ("cgnet", "resnet10_mini", {}, "stream", "CGNet"),
        ("threshold", "resnet10_mini", {}, "stream", "ThresholdFusion"),
        ("random", "resnet10_mini", {}, "clip", "random policy"),
        ("adafuse_tsn", "efficientnet_b0", {}, "stream", "resnet"),
        ("tsn", "resnet10_mini", {}, "video", "mode"),
        ("tsn", "resnet10_mini", {"batch_size": 0}, "clip", "batch size"),
    ],
)
def test_what_cannot_be_exported_is_refused(tmp_path, method, backbone, kwargs, mode, message):
    model = build_model(backbone=backbone, method=method, num_classes=5, num_segments=2, policy_hidden=8)
    with pytest.raises(UserError, match=message):
        export_onnx(model, tmp_path / "m.onnx", mode=mode, **kwargs)
    assert not (tmp_path / "m.onnx").exists()


def test_cli_refusal_is_one_line_and_status_2(tmp_path, capsys):
    save_model(tmp_path / "tsm.ckpt", build_model(backbone="resnet10_mini", method="tsm", num_classes=5,
                                                  num_segments=2))  # fmt: skip
    assert main(["export", str(tmp_path / "tsm.ckpt"), str(tmp_path / "m.onnx"), "--mode", "stream"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "causal_shift=True" in err
    assert main(["export", str(tmp_path / "missing.ckpt"), str(tmp_path / "m.onnx")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="one frame ahead"):
        TemporalShift(num_segments=2).step(torch.zeros(1, 8, 2, 2), torch.zeros(1, 1, 2, 2))

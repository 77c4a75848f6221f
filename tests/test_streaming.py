"""Streaming: frame by frame equals the offline model; executed MACs equal Eq. 5; independent streams; reset."""

import pytest
import torch

from adafuse.errors import UserError
from adafuse.flops import profile
from adafuse.inference import SparseRecognizer, StreamingRecognizer
from adafuse.layers import KEEP, REUSE, SKIP
from adafuse.models import build_model
from conftest import force_policy
from test_sparse import SIZE, assert_same, eq5_macs, executed, tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def run_stream(executor: SparseRecognizer, clip: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Frame logits (N, T, K) of N streams and the policy masks (N, T, G, 3) they decided."""
    state = executor.init_state(clip.shape[0])
    logits, frames = [], []
    for t in range(clip.shape[1]):
        out, policies = executor.step(clip[:, t], state)
        logits.append(out)
        frames.append(policies)
    return torch.stack(logits, dim=1), {name: torch.cat([f[name] for f in frames], dim=1) for name in frames[0]}


@pytest.mark.parametrize("dispatch", ["kernel", "auto", "dense"])
@pytest.mark.parametrize(
    ("backbone", "method", "kwargs"),
    [
        ("resnet10_mini", "adafuse_tsn", {}),
        ("resnet18", "adafuse_tsn", {"policy_group_size": 8}),
        ("resnet50", "adafuse_tsm", {"causal_shift": True, "policy_group_size": 16}),
        ("resnet50", "adafuse_tsn", {"policy_group_size": 16}),  # no shift: lazy reuse reads the block input itself
        ("resnet18", "adafuse_tsm", {"causal_shift": True, "policy_group_size": 8, "shifted_shortcut": True}),
        ("resnet18", "ada_skip", {"policy_group_size": 4}),
    ],
)
def test_streaming_equals_the_model_and_runs_eq5(backbone, method, kwargs, dispatch):
    model = tiny(backbone, method, t=5, **kwargs)
    clip = torch.randn(2, 5, 3, SIZE, SIZE)
    with torch.no_grad():
        expected, policies = model.forward_with_policies(clip, per_frame=True)  # offline, causal
    executor = SparseRecognizer.from_model(model, dispatch=dispatch)
    logits, masks = run_stream(executor, clip)
    assert_same(logits, expected)
    assert all(torch.equal(masks[name], policies[name]) for name in policies)
    if dispatch == "kernel":  # lazy reuse computes, one frame later, exactly the conv1 groups Eq. 5 charges
        assert executor.stats.macs == pytest.approx(eq5_macs(profile(model, input_size=SIZE), executed(policies)),
                                                    rel=1e-12)  # fmt: skip


@pytest.mark.parametrize("action", [KEEP, REUSE, SKIP])
def test_streaming_all_keep_all_reuse_all_skip(action):
    model = tiny("resnet18", t=3, policy_group_size=16)
    force_policy(model, action)
    clip = torch.randn(1, 3, 3, SIZE, SIZE)
    with torch.no_grad():
        expected, policies = model.forward_with_policies(clip, per_frame=True)
    executor = SparseRecognizer.from_model(model, dispatch="kernel")
    assert_same(run_stream(executor, clip)[0], expected)
    assert executor.stats.macs == pytest.approx(eq5_macs(profile(model, input_size=SIZE), executed(policies)),
                                                rel=1e-12)  # fmt: skip


def test_stream_wrapper_window_average_and_forced_actions():
    model = tiny("resnet18", t=5, policy_group_size=8)
    clip = torch.randn(2, 5, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model.frame_logits(clip)
    stream = StreamingRecognizer(model, batch_size=2, window=3)
    for t in range(clip.shape[1]):
        assert_same(stream.step(clip[:, t]), expected[:, t])
    assert_same(stream.average(), expected[:, -3:].mean(dim=1))  # running average over the window
    assert stream.state.frames.tolist() == [5, 5]
    executor, state = stream.executor, stream.executor.init_state(2)
    forced = {name: torch.zeros(2, 1, f.decisions, 3).index_fill_(-1, torch.tensor(int(SKIP)), 1.0)
              for name, f in model.fusions().items()}  # fmt: skip
    _, masks = executor.step(clip[:, 0], state, actions=forced)
    assert all(torch.equal(masks[k], forced[k]) for k in forced)
    with pytest.raises(ValueError, match="policy mask of shape"):
        executor.step(clip[:, 1], state, actions={k: v[:, 0] for k, v in forced.items()})
    with pytest.raises(ValueError, match="for 2 streams"):
        executor.step(clip[:1, 1], state)


def test_streams_are_independent_and_reset_restarts_one():
    model = tiny("resnet18", t=4, policy_group_size=8)
    executor = SparseRecognizer.from_model(model, dispatch="kernel")
    a, b = torch.randn(1, 4, 3, SIZE, SIZE), torch.randn(1, 4, 3, SIZE, SIZE)
    with torch.no_grad():
        expected_a, expected_b = model.frame_logits(a), model.frame_logits(b)
    stream = StreamingRecognizer(executor, batch_size=2)  # window None: the whole video
    for t in range(2):  # stream 0 plays a; stream 1 plays b's first two frames, then restarts on b from the start
        stream.step(torch.cat([a[:, t], b[:, t]]))
    stream.reset(1)
    assert stream.state.frames.tolist() == [2, 0]
    for t in range(2):
        logits = stream.step(torch.cat([a[:, t + 2], b[:, t]]))
        assert_same(logits[0], expected_a[0, t + 2])
        assert_same(logits[1], expected_b[0, t])
    assert_same(stream.average()[0], expected_a[0].mean(0))
    assert_same(stream.average()[1], expected_b[0, :2].mean(0))
    stream.reset()
    assert_same(stream.step(torch.cat([a[:, 0], a[:, 0]])), expected_a[:, 0].expand(2, -1))


def test_single_stream_takes_a_bare_frame():
    model = tiny("resnet18", t=2)
    stream = StreamingRecognizer(model, dispatch="dense")
    clip = torch.randn(1, 2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model.frame_logits(clip)
    assert_same(stream.step(clip[0, 0]), expected[:, 0])
    assert_same(stream.step(clip[0, 1]), expected[:, 1])


def test_offline_bidirectional_tsm_is_refused():
    model = build_model(backbone="resnet18", method="adafuse_tsm", num_classes=5, num_segments=3, policy_hidden=8)
    with pytest.raises(UserError, match="causal_shift=True"):
        StreamingRecognizer(model)
    with pytest.raises(UserError, match="causal_shift=True"):
        SparseRecognizer.from_model(model).init_state(1)  # the clip executor runs it; streaming it does not
    with pytest.raises(ValueError, match="window"):
        StreamingRecognizer(tiny(), window=0)

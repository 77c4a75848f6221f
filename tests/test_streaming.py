"""Streaming recognizer: frame by frame equals the offline model; independent streams; window average; reset."""

import pytest
import torch

from adafuse.errors import UserError
from adafuse.inference import CostModel, SparseRecognizer, StreamingRecognizer
from adafuse.models import build_model
from test_sparse import SIZE, assert_same, tiny

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("backbone", "method", "kwargs"),
    [("resnet18", "adafuse_tsn", {}), ("resnet50", "adafuse_tsm", {"causal_shift": True}), ("resnet18", "tsn", {})],
)
def test_streaming_equals_offline_per_frame(backbone, method, kwargs):
    model = tiny(backbone, method, t=5, **kwargs)
    clip = torch.randn(2, 5, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model.frame_logits(clip)  # (2, 5, K): offline, causal
    stream = StreamingRecognizer(model, batch_size=2, window=3, input_size=SIZE, cost_model=CostModel(default=0.6))
    for t in range(clip.shape[1]):
        assert_same(stream.step(clip[:, t]), expected[:, t])
    assert_same(stream.average(), expected[:, -3:].mean(dim=1))  # running average over the window
    assert stream.state.frames.tolist() == [5, 5]


def test_streams_are_independent_and_reset_restarts_one():
    model = tiny("resnet18", t=4)
    engine = SparseRecognizer.from_model(model, input_size=SIZE, cost_model=CostModel.always_sparse())
    a, b = torch.randn(1, 4, 3, SIZE, SIZE), torch.randn(1, 4, 3, SIZE, SIZE)
    with torch.no_grad():
        expected_a, expected_b = model.frame_logits(a), model.frame_logits(b)
    stream = StreamingRecognizer(engine, batch_size=2)  # window None: the whole video
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
    stream = StreamingRecognizer(model, input_size=SIZE, cost_model=CostModel.always_dense())
    clip = torch.randn(1, 2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model.frame_logits(clip)
    assert_same(stream.step(clip[0, 0]), expected[:, 0])
    assert_same(stream.step(clip[0, 1]), expected[:, 1])


def test_offline_bidirectional_tsm_is_refused():
    model = build_model(backbone="resnet18", method="adafuse_tsm", num_classes=5, num_segments=3, policy_hidden=8)
    with pytest.raises(UserError, match="causal_shift=True"):
        StreamingRecognizer(model, input_size=SIZE, cost_model=CostModel.always_sparse())
    with pytest.raises(ValueError, match="window"):
        StreamingRecognizer(tiny(), window=0, input_size=SIZE, cost_model=CostModel.always_sparse())

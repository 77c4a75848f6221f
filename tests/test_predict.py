"""``adafuse predict`` on a tiny video and checkpoint; bad input."""

import json

import av
import numpy as np
import pytest
import torch

from adafuse.checkpoint import load_model, save_model
from adafuse.cli import main
from adafuse.inference import StreamingRecognizer
from adafuse.models import build_model

CLASSES = ["push", "pull", "wave"]


pytestmark = pytest.mark.usefixtures("one_thread")


def write_video(path, frames: int = 6, width: int = 56, height: int = 40) -> np.ndarray:
    """A small MPEG-4 video of random frames; returns the frames (T, H, W, 3) uint8."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for image in pixels:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return pixels


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    write_video(root / "clip.mp4")
    torch.manual_seed(0)
    common = {"num_classes": 3, "num_segments": 4, "policy_hidden": 8, "classes": CLASSES, "input_size": 32}
    model = build_model(backbone="resnet18", method="adafuse_tsn", **common)
    torch.nn.init.normal_(model.head.weight, 0.0, 0.1)
    save_model(root / "model.ckpt", model.eval())
    save_model(root / "tsm.ckpt", build_model(backbone="resnet18", method="adafuse_tsm", **common))
    torch.save({"weights": 1}, root / "foreign.ckpt")
    (root / "notavideo.mp4").write_bytes(b"this is not a video")
    return root, model.eval()


def test_predict_json_matches_the_offline_model(files, capsys):
    root, model = files
    assert main(["predict", "--checkpoint", str(root / "model.ckpt"), str(root / "clip.mp4"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["label"] in CLASSES and result["frames"] == 6 and result["fps"] > 0
    assert sum(result["policy"].values()) == pytest.approx(1.0)
    # the label is the average of the offline model's frame logits over the decoded, transformed frames
    from adafuse.data.readers import iter_frames
    from adafuse.data.transforms import EvalTransform

    images = [f.to_image() for f in iter_frames(root / "clip.mp4")]
    clip = EvalTransform.for_model(model.config)([images])  # (1, T, 3, 32, 32)
    offline, _ = load_model(root / "model.ckpt", num_segments=clip.shape[1])  # the same weights, for T frames
    with torch.no_grad():
        probs = offline.frame_logits(clip).mean(1)[0].softmax(0)
    assert result["label"] == CLASSES[int(probs.argmax())]
    assert result["confidence"] == pytest.approx(float(probs.max()), abs=1e-4)


def test_predict_prints_label_speed_and_shares(files, capsys):
    root, _ = files
    assert main(["predict", "--checkpoint", str(root / "model.ckpt"), str(root / "clip.mp4"), "--max-frames", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 frames" in out and "frames/s" in out and "keep" in out and "skip" in out


@pytest.mark.parametrize(
    ("checkpoint", "video", "message"),
    [
        ("model.ckpt", "missing.mp4", "no such file"),
        ("model.ckpt", "notavideo.mp4", "cannot decode"),
        ("foreign.ckpt", "clip.mp4", "not an adafuse checkpoint"),
        ("missing.ckpt", "clip.mp4", "no such file"),
        ("tsm.ckpt", "clip.mp4", "causal"),
    ],
)
def test_predict_bad_input_is_one_line_and_exit_2(files, capsys, checkpoint, video, message):
    root, _ = files
    assert main(["predict", "--checkpoint", str(root / checkpoint), str(root / video)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_streaming_recognizer_on_a_checkpoint_roundtrip(files):
    root, model = files
    loaded, _ = load_model(root / "model.ckpt")
    assert loaded.config == model.config
    stream = StreamingRecognizer(loaded, dispatch="kernel")
    clip = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        expected = model.frame_logits(clip)
    for t in range(2):
        torch.testing.assert_close(stream.step(clip[0, t]), expected[:, t], atol=1e-4, rtol=1e-4)

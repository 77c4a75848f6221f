"""benchmarks/dense_layers.py at a tiny size: ONNX Runtime's graph is read back layer by layer, every layer is
timed on each engine, and the kinds add up to the network."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "dense_layers.py"


def test_dense_layers_reads_every_convolution_of_the_graph(tmp_path):
    pytest.importorskip("onnxruntime")
    command = [
        sys.executable,
        str(SCRIPT),
        "--out",
        str(tmp_path),
        "--backbone",
        "resnet18",
        "--size",
        "32",
        "--frames",
        "2",
        "--rounds",
        "1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    rows = {r["kind"]: r for r in json.loads(done.stdout)["rows"]}
    # ResNet-18: the stem, 8 basic blocks of two 3×3 (the second with the residual), 3 projection shortcuts
    assert {k: r["count"] for k, r in rows.items()} == {
        "stem 7×7": 1,
        "3×3": 8,
        "3×3 + residual": 8,
        "1×1 projection shortcut": 3,
        "all convolutions": 20,
    }
    # MACs of a 32 px ResNet-18 frame, by hand: stem 3·64·49·16², stages of 8², 4², 2², 1² pixels after the stem
    stem = 3 * 64 * 49 * 16 * 16
    body = sum(2 * 2 * c * c * 9 * s * s for c, s in ((64, 8), (128, 4), (256, 2), (512, 1)))
    body -= sum(c * c * 9 * s * s // 2 for c, s in ((128, 4), (256, 2), (512, 1)))  # first 3×3 of a stage: C/2 in
    shortcuts = sum(c // 2 * c * s * s for c, s in ((128, 4), (256, 2), (512, 1)))
    assert rows["all convolutions"]["gmacs"] * 1e9 == pytest.approx(2 * (stem + body + shortcuts))
    for r in rows.values():
        engines = ("onnxruntime", "executor", "executor_alone", "onednn_nhwc_alone", "onednn_blocked_alone")
        assert all(r[e] > 0 for e in engines)
    assert rows["stem 7×7"]["group_kernel_alone"] is None and rows["3×3"]["group_kernel_alone"] > 0
    assert "| 3×3 + residual | 8 |" in (tmp_path / "dense_layers.md").read_text()
    network = json.loads(done.stdout)["network_ms"]
    assert network["onnxruntime"] > 0 and network["executor"] > 0

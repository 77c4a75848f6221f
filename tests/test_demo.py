"""The built-in demo runs end to end (tiny: one epoch on a few videos) and reports what the README promises."""

import json

import pytest

from adafuse.cli import main


@pytest.mark.slow
def test_demo_end_to_end_json(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--num-videos", "48", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in summary["results"]] == ["tsn", "adafuse_tsn"]
    tsn, ada = summary["results"]
    assert tsn["gflops"] == pytest.approx(tsn["gflops_dense"])  # TSN computes everything
    assert ada["gflops"] < ada["gflops_dense"]  # policies skip or reuse something
    assert ada["params"] > tsn["params"]  # the policy nets
    assert all(0 <= r["top1"] <= 100 for r in summary["results"]) and summary["seconds"] > 0
    assert all(0 <= r["best_top1"] <= 100 for r in summary["results"])  # best.ckpt's, beside last's
    for plot in summary["plots"]:
        assert (out / plot.split("/")[-1]).stat().st_size > 1000
    assert json.loads((out / "results.json").read_text())["results"] == summary["results"]
    # running it again replaces the previous demo instead of refusing
    assert main(["demo", "--out", str(out), "--epochs", "1", "--num-videos", "48", "--json"]) == 0


def test_demo_rejects_bad_epochs(capsys):
    assert main(["demo", "--epochs", "0"]) == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err

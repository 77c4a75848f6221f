"""``adafuse bench latency`` at tiny sizes: the paths, the JSON contract, the ratios' definitions, bad input."""

import json

import pytest
import torch

from adafuse.bench.latency import DENSE_PATHS, ForcedPolicy, parse_policy
from adafuse.cli import main
from adafuse.inference import SparseRecognizer
from adafuse.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--backbone", "resnet18", "--threads", "1", "--input-size", "32", "--policy-hidden", "8",
        "--rounds", "2", "--warmup", "1", "--num-segments", "3", "--json"]  # fmt: skip


def bench(capsys, *args: str) -> dict:
    assert main(["bench", "latency", *TINY, *args]) == 0
    return json.loads(capsys.readouterr().out)


def check_row(row: dict, *, dense: list[str], policy: str) -> None:
    for key in ("dense_ms", "masked_ms", "sparse_ms", "mac_ratio", "time_ratio", "best_dense_ms",
                "time_ratio_best_dense", "executed_mac_ratio"):  # fmt: skip
        assert isinstance(row[key], float) and row[key] > 0, key
    assert set(row["paths_ms"]) == {*dense, f"masked:{policy}", f"sparse:{policy}"}
    assert row["best_dense"] in dense
    assert row["best_dense_ms"] == min(row["paths_ms"][k] for k in dense)
    assert row["time_ratio_best_dense"] == pytest.approx(row["sparse_ms"] / row["best_dense_ms"])
    assert row["time_ratio"] == pytest.approx(row["sparse_ms"] / row["dense_ms"])
    assert row["time_over_mac"] == pytest.approx(row["time_ratio_best_dense"] / row["mac_ratio"])
    assert row["dense_ms"] == row["paths_ms"]["eager"] and row["sparse_ms"] == row["paths_ms"][f"sparse:{policy}"]
    assert all(row["paths_min_ms"][k] <= row["paths_ms"][k] for k in row["paths_ms"])


@pytest.mark.parametrize("mode", ["clip", "stream"])
def test_json_reports_every_path_and_the_best_dense(capsys, mode):
    result = bench(capsys, "--mode", mode, "--baselines", "eager", "executor", "--policy", "0.5,0.25,0.25", "keep",
                   "--policy-group-size", "8")  # fmt: skip
    forced, keep = result["results"]
    for row, policy in ((forced, "0.5,0.25,0.25"), (keep, "keep")):
        check_row(row, dense=["eager", "executor"], policy=policy)
        assert row["mode"] == mode and row["num_segments"] == (3 if mode == "clip" else 1)
        assert row["policy_group_size"] == 8 and row["threads"] == 1
    assert forced["paths_ms"]["executor"] == keep["paths_ms"]["executor"]  # one run: the dense paths are shared
    assert {k: v for k, v in result.items() if k != "results"} == forced
    assert forced["shares"] == pytest.approx({"keep": 0.5, "reuse": 0.25, "skip": 0.25}, abs=0.02)
    assert 0.5 < forced["mac_ratio"] < 0.9 and keep["mac_ratio"] > 1.0  # all kept: the policy nets cost extra
    # what the executor ran, over the dense executor: Eq. 5 less the first frames' REUSE (run as SKIP)
    assert forced["executed_mac_ratio"] <= forced["mac_ratio"] + 1e-9
    assert keep["executed_mac_ratio"] == pytest.approx(keep["mac_ratio"], rel=1e-9)


def test_table_prints_each_combination_once(capsys):
    table = [a for a in TINY if a != "--json"]
    assert main(["bench", "latency", *table, "--baselines", "executor", "--policy", "keep", "0.5,0.25,0.25",
                 "--policy-group-size", "8", "16"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| backbone") and sum(line.startswith("| backbone") for line in lines) == 1
    rows = [line.split(" | ")[3:5] for line in lines[2:]]  # (group, policy) of each row
    assert [(g, p.split(" ")[0]) for g, p in rows] == [("8", "keep"), ("8", "0.5,0.25,0.25"),
                                                       ("16", "keep"), ("16", "0.5,0.25,0.25")]  # fmt: skip


@pytest.mark.slow
def test_onnxruntime_and_compile_baselines(capsys):
    result = bench(capsys, "--policy", "paper", "--policy-group-size", "16", "--profile")
    check_row(result, dense=list(DENSE_PATHS), policy="paper")
    assert result["unavailable"] == {}
    profile = result["profile_ms"]["sparse"]
    assert profile["group kernels"] > 0 and profile["total"] >= profile["group kernels"]


def test_bad_arguments_are_one_line_and_exit_2(capsys):
    for args in (["--policy", "0.5,0.5,0.5"], ["--rounds", "0"], ["--clock", "cpu", "--threads", "2"],
                 ["--policy", "trained"]):  # fmt: skip
        assert main(["bench", "latency", *TINY, *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error" in err


def test_policy_specs_and_exact_share_masks():
    assert parse_policy("keep") == ((1.0, 0.0, 0.0),) * 4
    assert parse_policy("0.2,0.3,0.5") == ((0.2, 0.3, 0.5),) * 4
    assert len(parse_policy("paper")) == 4
    model = build_model(backbone="resnet18", method="adafuse_tsn", num_classes=5, num_segments=3, policy_hidden=8,
                        policy_group_size=16)  # fmt: skip
    masks = ForcedPolicy(SparseRecognizer.from_model(model), parse_policy("paper"), seed=0).masks(4)
    for name, mask in masks.items():
        stage = int(name.split(".")[1][5:]) - 1
        g = mask.shape[2]
        assert mask.shape == (1, 4, g, 3) and torch.equal(mask.sum(-1), torch.ones(1, 4, g))
        counts = mask.sum(2)[0]  # (4 frames, 3): exactly round(share · G) of each action in every frame
        keep, reuse, _ = parse_policy("paper")[stage]
        assert counts[:, 0].tolist() == [round(keep * g)] * 4 and counts[:, 1].tolist() == [round(reuse * g)] * 4

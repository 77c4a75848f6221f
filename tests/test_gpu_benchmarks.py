"""The GPU benchmarks run end to end at a tiny size on the CPU (the kernels in Triton's interpreter), and the
one-command GPU check collects every phase's table and status even when a phase fails or overruns."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "benchmarks"


def run(script: str, *args: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.slow  # ~15 s
def test_training_benchmark_times_profiles_and_compares(tmp_path):
    report = run("gpu_train.py", "--backbone", "resnet10_mini", "--input-size", "32", "--num-segments", "2",
                 "--batch-size", "2", "--warmup", "1", "--steps", "1", "--rounds", "2", "--models", "tsm",
                 "adafuse_tsm_last", "--modes", "eager", "channels_last", "--profile", "--out", str(tmp_path))
    rows = {(r["method"], r["mode"]): r for r in report["rows"]}
    assert set(rows) == {(m, mode) for m in ("tsm", "adafuse_tsm_last") for mode in ("eager", "channels_last")}
    for (method, mode), r in rows.items():
        assert r["rounds"] == 2 and r["min_s"] <= r["step_s"]
        base = rows[("tsm", mode)]["step_s"]
        assert r["vs_baseline"] == (pytest.approx(r["step_s"] / base) if method != "tsm" else None)
    assert set(report["best_ratio"]) == {"adafuse_tsm_last"}
    parts = report["profiles"]["adafuse_tsm_last/eager"]
    assert parts["convolutions"] > 0 and parts["policy nets"] > 0 and parts["mask arithmetic"] > 0
    assert report["profiles"]["tsm/eager"]["policy nets"] == 0  # nothing is attributed to parts a model lacks
    assert "| adafuse_tsm_last | eager |" in (tmp_path / "gpu_train.md").read_text()


@pytest.mark.slow  # ~20 s: the sparse executor runs in Triton's interpreter
def test_inference_benchmark_runs_every_path_and_checks_exactness(tmp_path):
    report = run("gpu_infer.py", "--backbone", "resnet10_mini", "--input-size", "32", "--num-segments", "2",
                 "--batch-sizes", "1", "--group-size", "16", "--policies", "paper", "--dense", "eager", "engine",
                 "--rounds", "1", "--iters", "1", "--out", str(tmp_path), env={"TRITON_INTERPRET": "1"})
    (row,) = report["rows"]
    assert set(row["ms"]) == {"eager", "engine", "masked", "sparse", "budget"}
    assert row["best_dense"] in ("eager", "engine") and row["logit_error"] < 1e-4
    assert 0 < row["mac_ratio"] < 1 and 0 < row["budget_mac_ratio"] < 1
    assert row["time_over_mac"] == pytest.approx(row["time_ratio"] / row["mac_ratio"])


def test_gpu_check_reports_every_phase_even_failed_or_overrunning(tmp_path, monkeypatch):
    sys.path.insert(0, str(BENCH))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(BENCH))
    table = tmp_path / "t.md"
    py = sys.executable
    monkeypatch.setattr(gpu_check, "phases", lambda out: [
        ("good", [py, "-c", f"open({str(table)!r}, 'w').write('| a table |')"], 30, table),
        ("broken", [py, "-c", "raise SystemExit('boom')"], 30, None),
        ("slow", [py, "-c", "import time; print('started', flush=True); time.sleep(30)"], 2, None),
    ])  # fmt: skip
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    text = (tmp_path / "gpu_check.md").read_text()
    assert "## good: ok" in text and "| a table |" in text
    assert "## broken: exit 1" in text and "boom" in text
    assert "## slow: stopped at its 2 s limit" in text and "started" in text
    phases = json.loads((tmp_path / "gpu_check.json").read_text())["phases"]
    assert [p["status"] for p in phases] == ["ok", "exit 1", "stopped at its 2 s limit"]

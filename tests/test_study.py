"""The study script runs end to end in its smoke-test mode and resumes from its kept results."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "study.py"


@pytest.mark.slow
def test_study_quick_runs_and_resumes(tmp_path):
    command = [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--quick"]
    first = subprocess.run(command, capture_output=True, text=True, check=True)
    rows = json.loads(first.stdout)["rows"]
    assert {(r["kind"], r["method"]) for r in rows} == {
        (k, m) for k in ("temporal", "static", "camera") for m in ("tsn", "random", "adafuse_tsn")
    }
    checks = json.loads(first.stdout)["acceptance"]  # the default recipe against TSN, per temporal benchmark
    assert [(c["kind"], c["seed"]) for c in checks] == [("camera", 0), ("temporal", 0)]
    assert all(c["pass"] == (c["gain"] >= 15 and c["gflops_ratio"] <= 0.75 and c["reuse"] >= 0.1) for c in checks)
    assert all(r["gflops"] < 0.051 for r in rows if r["method"] != "tsn")  # fusion policies save MACs
    kept = {p: p.stat().st_mtime_ns for p in (tmp_path / "results").glob("*.json")}
    assert len(kept) == 9 and (tmp_path / "tradeoff_camera.png").is_file()
    assert (tmp_path / "policy_blocks_static.png").is_file()
    (next(iter(kept))).unlink()  # as if the study had been interrupted before its last run
    again = subprocess.run(command, capture_output=True, text=True, check=True)
    assert json.loads(again.stdout)["rows"] == rows  # the missing run is redone identically (seeded)
    rewritten = [p for p, mtime in kept.items() if p.stat().st_mtime_ns != mtime]
    assert rewritten == [next(iter(kept))]  # and only that one: finished runs are kept


def test_plain_runs_use_the_papers_lambda_and_the_sweeps_override_it():
    sys.path.insert(0, str(SCRIPT.parent))
    import study
    from adafuse.engine.config import load_config, resolve_config

    runs = {r["name"]: r for r in study.plan([0])}
    demo = load_config(resolve_config("demo"))["loss"]
    plain = load_config(resolve_config("demo"), runs["temporal_adafuse_tsn_plain_s0"]["overrides"])["loss"]
    assert demo["efficiency_weight"] == 40.0 and demo["cost_target"] == 0.6  # the budget's stiff λ
    assert (plain["efficiency_weight"], plain["cost_target"], plain["efficiency_ramp_steps"]) == (0.1, None, 0)
    swept = [r for r in runs.values() if r["overrides"][-1:] == ["loss.efficiency_weight=0.4"]]
    assert len(swept) == 1 and study.variant(swept[0]["overrides"]) == "plain λ=0.4"
    assert load_config(resolve_config("demo"), swept[0]["overrides"])["loss"]["efficiency_weight"] == 0.4
    assert study.variant(list(study.PLAIN)) == "plain λ=0.1"
    # the sweeps at fewer seeds than the rest
    some = study.plan([0, 1, 2], sweep_seeds=[0])
    def is_sweep(name: str) -> bool:  # a plain run at another λ, or another hidden size
        return "_policy_hidden" in name or ("_plain_" in name and "_plain_s" not in name)

    sweeps = [r for r in some if is_sweep(r["name"])]
    assert len(sweeps) == len(study.LAMBDAS) + len(study.HIDDEN) and {r["seed"] for r in sweeps} == {0}
    assert {r["seed"] for r in some if r["overrides"] == ["loss.cost_target=0.5"]} == {0, 1, 2}
    assert len(study.plan([0, 1, 2])) - len(some) == 2 * (len(study.LAMBDAS) + len(study.HIDDEN))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args", "key"),
    [
        ("systems_study.py", ["--quick", "--systems", "trn"], "system"),
        ("group_study.py", ["--groups", "8", "--seeds", "0", "--epochs", "1", "--num-videos", "48"], "group"),
    ],
)
def test_other_studies_train_each_run_once(tmp_path, script, args, key):
    """The systems and group studies train their runs (with the study's resumable fit_run) and keep the results:
    a second call trains nothing and reports the same rows."""
    command = [sys.executable, str(SCRIPT.with_name(script)), "--out", str(tmp_path), "--threads", "1", *args]
    first = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[0])
    assert [r[key] for r in first["rows"]] and all(0 <= r["top1"] <= 100 for r in first["rows"])
    checkpoints = sorted(tmp_path.glob("runs/*/checkpoints/last.ckpt"))
    assert checkpoints and len(checkpoints) == len(list((tmp_path / "results").glob("*.json")))
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    again = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[0])
    assert again["rows"] == first["rows"] and [p.stat().st_mtime_ns for p in checkpoints] == stamps

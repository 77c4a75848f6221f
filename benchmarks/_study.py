"""What the synthetic studies (study.py, systems_study.py, group_study.py) share: training one run resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def fit_run(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train one run of a study (``config``'s ``trainer.out`` is ``run_dir``), resuming it when it has a last
    checkpoint; returns :func:`adafuse.engine.train.fit`'s result. An interrupted run is not a result: the study
    stops (SystemExit), and running it again resumes that run."""
    from adafuse.engine.train import fit

    trained = fit(config, resume=(run_dir / "checkpoints" / "last.ckpt").is_file())
    if trained["interrupted"]:
        raise SystemExit(f"interrupted: {run_dir}; run the study again to continue")
    return trained

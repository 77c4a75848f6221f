"""Every packaged config runs end to end at a tiny size: a training step, checkpoints, evaluation, `adafuse flops`.

The paper's ResNet-50 presets (shared policy FCs) once crashed at start while the suite only counted their
parameters. Here each distinct model recipe of ``configs/`` (the model section, the loss and the optimiser; configs
that differ only in the dataset, schedule length or paths share one) is built with its own flags and trained for
one step on a generated 2-class dataset at T = 2, saved, evaluated from its checkpoint and counted by the CLI
(configs that differ only in T, like ECO_En Lite's four members, share one too).
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adafuse.checkpoint import load_model
from adafuse.cli import main
from adafuse.engine.config import CONFIGS, load_config
from adafuse.engine.evaluate import evaluate_checkpoint
from adafuse.engine.train import fit
from adafuse.flops import count_params, profile

# The smallest frames each backbone family takes (BN-Inception's ceil-mode pools need more).
SIZE = {"bninception": 64}


def recipe(path: Path) -> str:
    c = load_config(path)
    model = {k: v for k, v in c["model"].items() if k != "num_segments"}  # every run here is at T = 2
    return json.dumps([model, c["loss"], c["optim"]["optimizer"], c["optim"]["freeze_bn"]], sort_keys=True)


def groups() -> list[list[str]]:
    by_recipe: dict[str, list[str]] = {}
    for path in sorted(CONFIGS.glob("*.yaml")):
        by_recipe.setdefault(recipe(path), []).append(path.stem)
    return list(by_recipe.values())


GROUPS = groups()


def test_the_groups_cover_every_config():
    assert sorted(n for g in GROUPS for n in g) == sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    assert len(GROUPS) >= 29


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """2 classes, 4 training and 2 validation videos of 4 random 72×72 frames, in the `custom` layout."""
    root = tmp_path_factory.mktemp("two_classes")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        lines = []
        for i in range(count):
            name = f"{split}{i}"
            (root / "frames" / name).mkdir(parents=True)
            for f in range(1, 5):
                pixels = rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "frames" / name / f"{f:05d}.jpg")
            lines.append(f"{name} 4 {i % 2}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("push\npull\n")
    (root / "dataset.yaml").write_text(
        "preset: custom\nformat: frames\nroot: frames\ntrain_list: train.txt\nval_list: val.txt\n"
        "classes: classes.txt\ntemplate: '{:05d}.jpg'\nnum_classes: 2\nflip: false\n"
    )
    return root / "dataset.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("names", GROUPS, ids=lambda g: g[0] if len(g) == 1 else f"{g[0]}+{len(g) - 1}")
def test_config_trains_saves_evaluates_and_counts(names, dataset, tmp_path, capsys, one_thread):
    name = names[0]
    base = load_config(CONFIGS / f"{name}.yaml")
    size = SIZE.get(base["model"]["backbone"], 32)
    config = load_config(CONFIGS / f"{name}.yaml", [
        "model.pretrained=null", "model.num_segments=2", f"data.dataset={dataset}", f"data.input_size={size}",
        "data.batch_size=2", "data.val_batch_size=2", "data.workers=0", "optim.epochs=1",
        "trainer.limit_train_batches=1", "trainer.devices=1", "trainer.num_nodes=1", "trainer.strategy=auto",
        "trainer.accelerator=cpu", "trainer.progress=false", "trainer.tensorboard=false",
        f"trainer.out={tmp_path / 'run'}",
    ])  # fmt: skip
    result = fit(config)
    assert result["validation"] is not None and 0 <= result["validation"]["top1"] <= 100
    model, _ = load_model(result["last"])
    for key, value in base["model"].items():  # the checkpoint's model is the config's, flag by flag
        if key not in ("pretrained", "num_segments"):
            got = getattr(model.config, key)
            assert (list(got) if isinstance(got, tuple) else got) == value or (key, value) == ("policy_hidden", None)
    evaluated = evaluate_checkpoint(result["last"], batch_size=2, workers=0, progress=False)
    table = profile(model, input_size=size)
    assert evaluated["videos"] == 2 and evaluated["params"] == count_params(model)
    assert evaluated["gflops_dense"] == pytest.approx(table.dense_gmacs)
    assert evaluated["gflops"] <= evaluated["gflops_dense"] * (1 + 1e-6)
    assert main(["flops", "--config", name, "--num-classes", "2", "--num-segments", "2", "--input-size", str(size),
                 "--json"]) == 0  # fmt: skip
    counted = json.loads(capsys.readouterr().out)
    assert counted["params"] == count_params(model)
    assert counted["gflops"] == pytest.approx(table.dense_gmacs, abs=1e-4)
    for path in Path(result["out"]).rglob("*.ckpt"):  # up to 0.7 GB each for the biggest policy nets
        path.unlink()

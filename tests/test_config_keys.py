"""Every config key is discoverable: ``adafuse train --help-config``, ``adafuse config show`` and the table in
docs/training.md come from one source, and the docs' custom dataset.yaml example is a valid descriptor."""

import json
import re
from pathlib import Path

import yaml

from adafuse.cli import main
from adafuse.data.spec import load_dataset_yaml
from adafuse.engine.config import DEFAULTS, KEY_HELP, load_config, reference_table, resolve_config

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_key_has_a_meaning():
    keys = {f"{section}.{name}" for section, entries in DEFAULTS.items() for name in entries}
    assert keys == set(KEY_HELP)
    assert all(text and "\n" not in text for text in KEY_HELP.values())


def test_help_config_lists_every_key_with_default_and_values(capsys):
    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert out == reference_table()
    assert "| `trainer.seed` | `0` | int >= 0 | seed of the initialisation" in out
    assert "| `optim.schedule` | `step` | step, cosine |" in out
    assert len(out.splitlines()) == 2 + sum(len(entries) for entries in DEFAULTS.values())


def test_the_docs_table_is_the_generated_one():
    text = (DOCS / "training.md").read_text()
    table = re.search(r"<!-- config-keys: begin.*?-->\n(.*?)<!-- config-keys: end -->", text, re.S)
    assert table is not None and table.group(1) == reference_table()


def test_config_show_prints_a_resolved_preset(capsys):
    assert main(["config", "show", "demo", "optim.lr=0.01"]) == 0
    out = capsys.readouterr().out
    expected = load_config(resolve_config("demo"), ["optim.lr=0.01"])
    assert yaml.safe_load(out) == expected  # the output is itself a config file
    assert "  lr: 0.01  # learning rate\n" in out and "  seed: 0  # seed of the initialisation" in out
    assert main(["config", "show", "demo", "--json", "trainer.seed=3"]) == 0
    assert json.loads(capsys.readouterr().out)["trainer"]["seed"] == 3
    assert main(["config", "show", "nope"]) == 2
    assert "unknown config 'nope'" in capsys.readouterr().err


def test_the_custom_dataset_example_in_the_docs_loads(tmp_path):
    text = (DOCS / "data.md").read_text()
    example = re.search(r"<!-- custom-dataset-example -->\n```yaml\n(.*?)```", text, re.S).group(1)
    (tmp_path / "dataset.yaml").write_text(example)
    (tmp_path / "classes.txt").write_text("pour\nstir\nwipe\n")
    spec = load_dataset_yaml(tmp_path / "dataset.yaml")
    assert spec.preset == "custom" and spec.class_names == ("pour", "stir", "wipe")
    assert spec.format == "video" and spec.flip is True and spec.root == tmp_path / "videos"

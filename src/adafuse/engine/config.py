"""Experiment configs: YAML files with four sections, command-line overrides, a resolved copy per run.

Every key has a default here; a config file names only what differs, ``key.path=value`` overrides any
field (the value is parsed as YAML: ``optim.lr=0.01``, ``optim.lr_steps=[20,40]``), and the resolved
config is written as ``config.yaml`` in the run folder. Unknown keys and wrong types are errors naming the
file and line. ``model`` holds :func:`adafuse.models.build_model` arguments, so a config row *is* a model.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from adafuse.errors import UserError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # the packaged configs: one per paper experiment


def resolve_config(name: str | Path) -> Path:
    """A config file path, or the packaged config of that name (``configs/<name>.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    packaged = CONFIGS / f"{str(name).removesuffix('.yaml')}.yaml"
    if packaged.is_file() and "/" not in str(name):
        return packaged
    known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
    raise UserError(f"unknown config {str(name)!r}: not a file and not a packaged config ({known})")

DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {
        "backbone": "resnet50",
        "method": "adafuse_tsn",
        "num_segments": 8,
        "pretrained": None,  # a file or a torchvision weights name (e.g. IMAGENET1K_V1)
        "dropout": 0.5,
        "policy_hidden": None,  # H; default 512 when policy_quota is not given either
        "policy_quota": None,
        "shared_policy": False,
        "policy_group_size": 1,  # channels per policy decision (contiguous groups; old name: policy_groups)
        "tau": 0.67,
        "shift_div": 8,
        "causal_shift": False,
        "random_ratios": [1 / 3, 1 / 3, 1 / 3],
        "keep_ratio": 0.5,
        "cg_partitions": 4,
        "lstm_hidden": 512,
    },
    "data": {
        "dataset": None,  # path of a dataset.yaml (adafuse synth / adafuse prepare lists write one)
        "input_size": 224,
        "normalization": None,  # default: the backbone's (imagenet; bgr255 for bninception)
        "batch_size": 8,  # per process
        "val_batch_size": None,  # default: batch_size
        "workers": 2,
        "on_error": "raise",  # or "skip": warn, count and drop unreadable samples
        "min_frames": 1,  # drop (and count) videos listed with fewer frames; the official code drops under 3
    },
    "loss": {
        "efficiency_weight": 0.1,  # λ of Eq. 6
        "cost": "normalized",  # adaptive / dense MACs; "absolute": GMACs per frame (the official scale)
        "cost_mode": "real",  # Eq. 5; "upb": skip savings only (the official upper bound)
        "efficiency_after_epoch": 0,  # the cost term is on from this epoch (the official --eff_loss_after)
        "cg_threshold_weight": 1.0e-4,  # CGNet's threshold loss
    },
    "optim": {
        "optimizer": "sgd",  # or "adamw" (handy from scratch)
        "schedule": "step",  # ×lr_gamma at lr_steps (epochs); or "cosine" (per step, to zero)
        "epochs": 50,
        "lr": 0.02,
        "lr_steps": [20, 40],
        "lr_gamma": 0.1,
        "momentum": 0.9,
        "weight_decay": 5.0e-4,  # not on BatchNorm parameters and biases
        "clip_grad": 20.0,
        "policy_lr_scale": 1.0,  # learning-rate multiplier of the policy nets
        "freeze_bn": False,  # BatchNorm uses running statistics, affine fixed (fine-tuning with small batches)
    },
    "trainer": {
        "out": "runs/experiment",
        "seed": 0,
        "accelerator": "auto",
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
        "precision": "auto",  # 16-mixed on GPU, 32 on CPU
        "sync_batchnorm": False,
        "accumulate": 1,
        "checkpoint_every_steps": 0,  # 0: at the end of each epoch only
        "log_every_steps": 10,
        "tensorboard": True,
        "progress": True,
        "max_steps": -1,
        "limit_train_batches": None,
        "limit_val_batches": None,
        "compile": False,  # torch.compile the training forward, loss and backward (first steps pay the compilation)
        "channels_last": False,  # NHWC weights and activations: the layout of a GPU's tensor-core convolutions
    },
}

# Old key names users have in their files, and what they are called now.
ALIASES = {"model.policy_groups": "model.policy_group_size"}

# Keys whose default is None or whose value may take several types: accepted types.
_TYPES: dict[str, tuple[type, ...]] = {
    "model.pretrained": (str,),
    "model.policy_hidden": (int,),
    "model.policy_quota": (int,),
    "data.dataset": (str,),
    "data.normalization": (str,),
    "data.val_batch_size": (int,),
    "trainer.devices": (int, str, list),
    "trainer.precision": (str, int),
    "trainer.limit_train_batches": (int, float),
    "trainer.limit_val_batches": (int, float),
}

_CHOICES: dict[str, tuple[Any, ...]] = {
    "loss.cost": ("normalized", "absolute"),
    "optim.optimizer": ("sgd", "adamw"),
    "optim.schedule": ("step", "cosine"),
    "loss.cost_mode": ("real", "upb"),
    "data.on_error": ("raise", "skip"),
    "data.normalization": ("imagenet", "bgr255", None),
}


def _check(key: str, value: Any, where: str) -> Any:
    section, name = key.split(".")
    default = DEFAULTS[section][name]
    types = _TYPES.get(key) or (type(default),)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if value is not None or default is not None:
        if value is None and key not in _TYPES:
            raise UserError(f"{where}: {key} cannot be empty")
        if value is not None and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            want = " or ".join(t.__name__ for t in types)
            raise UserError(f"{where}: {key} must be {want}, got {value!r}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise UserError(f"{where}: {key} must be one of {', '.join(map(str, _CHOICES[key]))}, got {value!r}")
    return value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Defaults, updated by the YAML file at ``path`` and then by ``overrides`` (``"section.key=value"``)."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config {path}: no such file")
        text = path.read_text(encoding="utf-8")
        try:
            node, values = yaml.compose(text), yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise UserError(f"{path}:{mark.line + 1 if mark else 1}: not valid YAML") from None
        if values is None:
            values, node = {}, None
        if not isinstance(values, dict):
            raise UserError(f"{path}: expected sections {', '.join(DEFAULTS)}")
        lines = _key_lines(node)
        for section, entries in values.items():
            if section not in DEFAULTS:
                raise UserError(f"{path}:{lines.get(section, 1)}: unknown section {section!r}")
            if not isinstance(entries, dict):
                raise UserError(f"{path}:{lines.get(section, 1)}: section {section!r} must be a mapping")
            for name, value in entries.items():
                where = f"{path}:{lines.get(f'{section}.{name}', 1)}"
                key = ALIASES.get(f"{section}.{name}", f"{section}.{name}")
                name = key.split(".")[1]
                if name not in DEFAULTS[section]:
                    raise UserError(f"{where}: unknown key {key!r}")
                config[section][name] = _check(key, value, where)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or key.count(".") != 1:
            raise UserError(f"override {item!r}: expected section.key=value, e.g. optim.lr=0.01")
        key = ALIASES.get(key, key)
        section, name = key.split(".")
        if section not in DEFAULTS or name not in DEFAULTS[section]:
            raise UserError(f"override {item!r}: unknown key {key!r}")
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            raise UserError(f"override {item!r}: value is not valid YAML") from None
        config[section][name] = _check(key, value, f"override {item!r}")
    return config


def _key_lines(node: yaml.Node | None) -> dict[str, int]:
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            lines[k.value] = k.start_mark.line + 1
            if isinstance(v, yaml.MappingNode):
                for k2, _ in v.value:
                    lines[f"{k.value}.{k2.value}"] = k2.start_mark.line + 1
    return lines


def save_config(config: dict[str, Any], path: str | Path) -> None:
    """Write the resolved config (the run's record of what was trained)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def model_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """:func:`adafuse.models.build_model` arguments of a config (without ``pretrained``) plus ``num_classes``."""
    kwargs = {k: v for k, v in config["model"].items() if k != "pretrained"}
    kwargs["random_ratios"] = tuple(kwargs["random_ratios"])
    return kwargs

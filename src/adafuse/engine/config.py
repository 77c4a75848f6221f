"""Experiment configs: YAML files with five sections, command-line overrides, a resolved copy per run.

Every key has a default here; a config file names only what differs, ``key.path=value`` overrides any
field (the value is parsed as YAML: ``optim.lr=0.01``, ``optim.lr_steps=[20,40]``), and the resolved
config is written as ``config.yaml`` in the run folder. Unknown keys, wrong types, out-of-range values and
unknown choices are errors naming the key and the file and line; :data:`KEY_HELP` says what each key means.
``model`` holds :func:`adafuse.models.build_model` arguments, so a config row *is* a model.
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
        "shifted_shortcut": False,  # the official BateNet: projection shortcuts take the shifted input (TSM)
        "random_ratios": [1 / 3, 1 / 3, 1 / 3],
        "keep_ratio": 0.5,
        "cg_partitions": 4,
        "lstm_hidden": 512,
        "trn_features": 256,
        "arnet_backbones": ["resnet50", "resnet34", "resnet18"],
        "arnet_scales": [1.0, 0.75, 0.5, 0.375],
        "arnet_skips": [1, 2, 4],
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
        "cost_target": 0.6,  # budget: λ·max(0, cost − target·dense), a fraction of the dense cost; null: λ·cost
        "efficiency_after_epoch": 0,  # the cost term is on from this epoch (the official --eff_loss_after)
        "efficiency_ramp_steps": 200,  # ... and λ rises linearly to its value over this many steps (0: a switch)
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
        "threads": None,  # torch CPU threads; default: the CPUs left after the loader workers
        "log_every_steps": 10,
        "tensorboard": True,
        "progress": True,
        "max_steps": -1,
        "limit_train_batches": None,
        "limit_val_batches": None,
        "compile": False,
        "channels_last": False,
    },
}

# Old key names users have in their files, and what they are called now.
ALIASES = {"model.policy_groups": "model.policy_group_size"}

# Keys whose default is None or whose value may take several types: accepted types.
_TYPES: dict[str, tuple[type, ...]] = {
    "model.pretrained": (str,),
    "model.policy_hidden": (int,),
    "model.policy_quota": (int,),
    "loss.cost_target": (float,),
    "data.dataset": (str,),
    "data.normalization": (str,),
    "data.val_batch_size": (int,),
    "trainer.threads": (int,),
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
    "trainer.accelerator": ("auto", "cpu", "gpu", "cuda", "mps"),
    "trainer.precision": ("auto", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", 32, 16, 64),
}

# Keys whose accepted values are more than a type and a range: checked in _check, described here.
_VALUES: dict[str, str] = {
    "trainer.devices": "int >= 1, auto, or a list of device indices",
    "trainer.limit_train_batches": "int >= 0 (batches), float in [0, 1] (share), or null",
    "trainer.limit_val_batches": "int >= 0 (batches), float in [0, 1] (share), or null",
}


class _Range:
    """An interval of allowed numbers, printed as ``>= 1``, ``> 0`` or ``in [0, 1)``."""

    def __init__(self, low: float, high: float | None = None, *, open_low: bool = False, open_high: bool = False):
        self.low, self.high, self.open_low, self.open_high = low, high, open_low, open_high

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"


_POSITIVE, _NON_NEGATIVE = _Range(0, open_low=True), _Range(0)
_AT_LEAST_ONE = _Range(1)
# Allowed values of numeric keys (list keys: every element). Checked where the config is loaded.
_RANGES: dict[str, _Range] = {
    "model.num_segments": _AT_LEAST_ONE,
    "model.dropout": _Range(0, 1, open_high=True),
    "model.policy_hidden": _AT_LEAST_ONE,
    "model.policy_quota": _AT_LEAST_ONE,
    "model.policy_group_size": _AT_LEAST_ONE,
    "model.tau": _POSITIVE,
    "model.shift_div": _AT_LEAST_ONE,
    "model.random_ratios": _Range(0, 1),
    "model.keep_ratio": _Range(0, 1),
    "model.cg_partitions": _AT_LEAST_ONE,
    "model.lstm_hidden": _AT_LEAST_ONE,
    "model.trn_features": _AT_LEAST_ONE,
    "model.arnet_scales": _Range(0, 1, open_low=True),
    "model.arnet_skips": _AT_LEAST_ONE,
    "data.input_size": _Range(32),  # every backbone downsamples 32x
    "data.batch_size": _AT_LEAST_ONE,
    "data.val_batch_size": _AT_LEAST_ONE,
    "data.workers": _NON_NEGATIVE,
    "data.min_frames": _AT_LEAST_ONE,
    "loss.efficiency_weight": _NON_NEGATIVE,
    "loss.cost_target": _Range(0, 1, open_low=True),  # null: the plain λ·cost
    "loss.efficiency_after_epoch": _NON_NEGATIVE,
    "loss.efficiency_ramp_steps": _NON_NEGATIVE,
    "loss.cg_threshold_weight": _NON_NEGATIVE,
    "optim.epochs": _AT_LEAST_ONE,
    "optim.lr": _POSITIVE,
    "optim.lr_steps": _NON_NEGATIVE,
    "optim.lr_gamma": _POSITIVE,
    "optim.momentum": _Range(0, 1, open_high=True),
    "optim.weight_decay": _NON_NEGATIVE,
    "optim.clip_grad": _NON_NEGATIVE,
    "optim.policy_lr_scale": _POSITIVE,
    "trainer.seed": _NON_NEGATIVE,
    "trainer.devices": _AT_LEAST_ONE,  # when a count
    "trainer.num_nodes": _AT_LEAST_ONE,
    "trainer.accumulate": _AT_LEAST_ONE,
    "trainer.checkpoint_every_steps": _NON_NEGATIVE,
    "trainer.threads": _AT_LEAST_ONE,
    "trainer.log_every_steps": _AT_LEAST_ONE,
    "trainer.max_steps": _Range(-1),
    "trainer.limit_train_batches": _NON_NEGATIVE,
    "trainer.limit_val_batches": _NON_NEGATIVE,
}

# One line of meaning per key: `adafuse train --help-config` and the table in docs/training.md.
KEY_HELP: dict[str, str] = {
    "model.backbone": "2D CNN: resnet18/34/50/101, resnet10_mini, bninception, efficientnet_b0..b3, mobilenet_v2 "
    "(i3d inflates a resnet; eco needs bninception; arnet's policy is mobilenet_v2)",
    "model.method": "tsn, tsm, lstm, cgnet, threshold, random, ada_skip, ada_reuse, adafuse_tsn, adafuse_tsm, "
    "adafuse_tsm_last; comparison systems: trn, i3d, i3d_nl, eco, eco_lite, arnet",
    "model.num_segments": "frames per clip, T",
    "model.pretrained": "backbone weights: a file or a torchvision weights name (IMAGENET1K_V1); null: from scratch",
    "model.dropout": "dropout before the classifier",
    "model.policy_hidden": "policy hidden size H (default 512 when policy_quota is not given either)",
    "model.policy_quota": "policy hidden quota Q: H = Q // C per block (instead of policy_hidden)",
    "model.shared_policy": "share the policy FCs between blocks of equal shape",
    "model.policy_group_size": "channels per policy decision (contiguous groups; old name: policy_groups)",
    "model.tau": "Gumbel-softmax temperature",
    "model.shift_div": "TSM: 1/shift_div of the channels shift each way",
    "model.causal_shift": "TSM: shift from the past only (needed to stream TSM frame by frame)",
    "model.shifted_shortcut": "TSM: the projection shortcuts take the shifted input too (the official BateNet; "
    "the authors' released weights)",
    "model.random_ratios": "random: keep/reuse/skip probabilities",
    "model.keep_ratio": "threshold: share of channels kept",
    "model.cg_partitions": "CGNet: partitions p",
    "model.lstm_hidden": "lstm: hidden width (also AR-Net's policy LSTM)",
    "model.trn_features": "trn: per-frame embedding width the relations see (TRN's img_feature_dim)",
    "model.arnet_backbones": "arnet: one network per resolution, high to low",
    "model.arnet_scales": "arnet: frame side of each arnet_backbones entry as a share of data.input_size, then the "
    "policy's",
    "model.arnet_skips": "arnet: skip lengths the policy may choose (skip k: this frame and the next k-1)",
    "data.dataset": "path of a dataset.yaml (adafuse synth / adafuse prepare lists write one)",
    "data.input_size": "side S of the square crops the model sees",
    "data.normalization": "input normalisation; null: the backbone's (bgr255 for bninception, else imagenet)",
    "data.batch_size": "videos per batch, per process",
    "data.val_batch_size": "validation batch size; null: batch_size",
    "data.workers": "loader processes per training process",
    "data.on_error": "raise on an unreadable sample, or skip it with a warning and a count per epoch",
    "data.min_frames": "drop (and count) videos listed with fewer frames; the official code drops under 3",
    "loss.efficiency_weight": "λ of Eq. 6 (weight of the cost term)",
    "loss.cost": "normalized: adaptive / dense MACs; absolute: GMACs per frame (the official scale)",
    "loss.cost_mode": "real: Eq. 5; upb: skip savings only (the official upper bound)",
    "loss.cost_target": "budget, a fraction of the dense cost: λ·max(0, cost − target·dense); null: the plain λ·cost",
    "loss.efficiency_after_epoch": "the cost term is on from this epoch (the official --eff_loss_after)",
    "loss.efficiency_ramp_steps": "λ rises linearly from 0 over this many steps from that epoch; 0: a switch",
    "loss.cg_threshold_weight": "CGNet's threshold loss weight",
    "optim.optimizer": "sgd (momentum) or adamw",
    "optim.schedule": "step: ×lr_gamma at lr_steps (epochs); cosine: per step, to zero",
    "optim.epochs": "training epochs",
    "optim.lr": "learning rate",
    "optim.lr_steps": "step schedule: epochs at which the learning rate is multiplied by lr_gamma",
    "optim.lr_gamma": "step schedule: factor at each lr_steps epoch",
    "optim.momentum": "SGD momentum",
    "optim.weight_decay": "weight decay (none on BatchNorm parameters and biases)",
    "optim.clip_grad": "gradient-norm clipping; 0: off",
    "optim.policy_lr_scale": "learning-rate multiplier of the policy nets",
    "optim.freeze_bn": "BatchNorm uses its running statistics, affine fixed (fine-tuning with small batches)",
    "trainer.out": "run folder: config.yaml, checkpoints/, metrics.csv, tb/",
    "trainer.seed": "seed of the initialisation, the data order, augmentation and policy noise",
    "trainer.accelerator": "where to train (gpu and cuda are the same); auto: a GPU when there is one",
    "trainer.devices": "devices (processes) per node: a count, a list of indices, or auto",
    "trainer.num_nodes": "machines",
    "trainer.strategy": "Lightning strategy: auto, ddp, ddp_spawn, ...",
    "trainer.precision": "numeric precision; auto: 16-mixed on a GPU, 32-true on the CPU",
    "trainer.sync_batchnorm": "synchronise BatchNorm statistics across processes",
    "trainer.accumulate": "batches per optimizer step (gradient accumulation)",
    "trainer.checkpoint_every_steps": "also write last.ckpt every N optimizer steps; 0: after each epoch only",
    "trainer.threads": "torch CPU threads per process; null: the CPUs left after the loader workers (at least 1)",
    "trainer.log_every_steps": "metrics.csv / TensorBoard row every N steps",
    "trainer.tensorboard": "write TensorBoard events under tb/",
    "trainer.progress": "progress on stderr: a bar on a terminal, a plain line a minute in a log",
    "trainer.max_steps": "stop after N optimizer steps; -1: run all epochs",
    "trainer.limit_train_batches": "batches per epoch: a count (int) or a share (float); null: all",
    "trainer.limit_val_batches": "validation batches: a count (int) or a share (float); 0: no validation",
    "trainer.compile": "torch.compile the training forward, loss and backward (the first steps pay the compilation)",
    "trainer.channels_last": "NHWC (channels_last) weights and activations: the layout of GPU tensor-core convs",
}

# Keys a resumed run may change: how it runs, not what it computes (anything else must equal the run's).
RESUME_MAY_CHANGE = (
    "trainer.out", "trainer.progress", "trainer.tensorboard", "trainer.log_every_steps",
    "trainer.checkpoint_every_steps", "trainer.threads", "data.workers", "data.val_batch_size",
    "trainer.compile", "trainer.channels_last",
)


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
    allowed = _RANGES.get(key)
    if allowed is not None:
        is_list = isinstance(default, list)
        for number in value if is_list else [value]:
            if is_list and (not isinstance(number, (int, float)) or isinstance(number, bool)):
                raise UserError(f"{where}: {key} must be a list of numbers, got {value!r}")
            if isinstance(number, (int, float)) and not isinstance(number, bool) and number not in allowed:
                raise UserError(f"{where}: {key} must be {allowed}, got {value!r}")
    devices_ok = not isinstance(value, (str, list)) or value == "auto" or (
        isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value))
    share_ok = not isinstance(value, float) or value <= 1
    if (key == "trainer.devices" and not devices_ok) or (key.startswith("trainer.limit_") and not share_ok):
        raise UserError(f"{where}: {key} must be {_VALUES[key]}, got {value!r}")
    return value


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *, base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Defaults (or a resolved ``base`` config), updated by the YAML file at ``path`` and then by ``overrides``
    (``"section.key=value"``)."""
    config = copy.deepcopy(base or DEFAULTS)
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


def resume_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The config to resume a run with: the run's own ``config.yaml`` (in ``trainer.out`` of ``path`` and
    ``overrides``), updated by ``path`` and ``overrides``, which may change only :data:`RESUME_MAY_CHANGE`
    (:func:`~adafuse.engine.train.fit` refuses the others, with :func:`check_resume_changes`)."""
    out = Path(load_config(path, overrides)["trainer"]["out"])
    saved = out / "config.yaml"
    if not saved.is_file():
        raise UserError(f"nothing to resume in {out}: {saved} does not exist (set trainer.out to the run folder)")
    run = load_config(saved)
    config = load_config(path, overrides, base=run)
    config["trainer"]["out"] = str(out)  # the run may have been moved since its config.yaml was written
    return config


def check_resume_changes(config: dict[str, Any], run: dict[str, Any], *, out: str | Path) -> None:
    """Raise a one-line :class:`UserError` when ``config`` differs from the run's own config ``run`` in a key
    outside :data:`RESUME_MAY_CHANGE` (what a run computes is fixed once it started)."""
    for section, entries in config.items():
        for name, value in entries.items():
            key = f"{section}.{name}"
            if key not in RESUME_MAY_CHANGE and value != run[section][name]:
                raise UserError(
                    f"{out} is a run with {key}={run[section][name]!r}: --resume cannot change it to {value!r} "
                    f"(what a run computes is fixed; start a new run in another trainer.out)"
                )


def key_type(key: str) -> str:
    """The accepted values of a key in words: type, choices and range (``int >= 1``, ``sgd, adamw``)."""
    section, name = key.split(".")
    if key in _VALUES:
        return _VALUES[key]
    if key in _CHOICES:
        return ", ".join("null" if c is None else str(c) for c in _CHOICES[key])
    default = DEFAULTS[section][name]
    types = _TYPES.get(key) or (type(default),)
    words = " or ".join("bool" if t is bool else t.__name__ for t in types)
    if isinstance(default, list):
        words = f"list of {type(default[0]).__name__}" if default else "list"
    if key in _RANGES:
        words += f" {_RANGES[key]}"
    if default is None:
        words += " or null"
    return words


def reference_table() -> str:
    """Every config key with its default, accepted values and meaning, as a markdown table."""
    lines = ["| key | default | values | meaning |", "|---|---|---|---|"]
    for section, entries in DEFAULTS.items():
        for name, default in entries.items():
            key = f"{section}.{name}"
            shown = yaml.safe_dump(_rounded(default), default_flow_style=True).strip().removesuffix("...").strip()
            lines.append(f"| `{key}` | `{shown}` | {key_type(key)} | {KEY_HELP[key]} |")
    return "\n".join(lines) + "\n"


def _rounded(value: Any) -> Any:
    """Floats to 4 significant digits, for display (1/3 reads 0.3333)."""
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return float(f"{value:.4g}") if isinstance(value, float) else value


def config_yaml(config: dict[str, Any]) -> str:
    """A resolved config as YAML, each key followed by a comment with its meaning."""
    lines = []
    for section, entries in config.items():
        lines.append(f"{section}:")
        for name, value in entries.items():
            text = yaml.safe_dump({name: value}, default_flow_style=True, width=1000).strip()[1:-1]
            lines.append(f"  {text}  # {KEY_HELP[f'{section}.{name}']}")
    return "\n".join(lines) + "\n"

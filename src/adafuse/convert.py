"""The authors' released checkpoints (the official AdaFuse code, BateNet ResNets) as adafuse models.

A released file is ``{"state_dict": DataParallel(TSN_Gate).state_dict()}`` (legacy torch 1.2 format, no
metadata). The mapping to our names is mechanical: ``module.`` dropped, ``base_model.`` → ``backbone.``,
``downsample0/1`` → ``downsample.0/1``, ``policy_net.gate_fc0/gate_bn/gate_fc1`` → ``fusion.policy.fc0/bn/fc1``,
``new_fc.`` → ``head.``; the shared-policy bank ``gate_fc0s.*`` / ``gate_fc1s.*`` holds the blocks' own FCs again
(aliases, checked equal, then dropped); ``gate_fc1`` lists the actions per channel as [skip, reuse, keep] and ours
as [keep, reuse, skip], so every triple of rows (and of the bias) is reversed.

What the keys say: the ResNet (blocks per stage, bottleneck or not), K (the head), which stages have policy nets
(all, or layer4 only: "TSM+Last"), the hidden sizes (one size, or a quota Q with H = Q // C) and whether the FCs
are shared (the bank exists). What they cannot say is whether the temporal shift was on: a shift has no weights.
The caller says it (``method``), or the file name does (the released ``sthv1_adatsn50`` / ``sthv1_adatsm50``);
layer4-only files are ``adafuse_tsm_last``, the one method with policies there. The TSM variants get
``shifted_shortcut=True``: the authors' blocks feed the shifted input to the projection shortcut too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from adafuse.checkpoint import is_authors_state_dict, safe_load, save_model
from adafuse.errors import UserError
from adafuse.models import ModelConfig, Recognizer, build_from_config, build_model, get_method

PREFIX = "module."  # DataParallel
BACKBONE = "base_model."
HEAD = "new_fc."
BANKS = ("gate_fc0s.", "gate_fc1s.")  # the shared-policy bank of BateNet, aliases of the blocks' FCs
# Authors' -> our names inside a block; the inverse mapping reads the same table backwards.
BLOCK_NAMES = (
    (".downsample0.", ".downsample.0."),
    (".downsample1.", ".downsample.1."),
    (".policy_net.gate_fc0.", ".fusion.policy.fc0."),
    (".policy_net.gate_bn.", ".fusion.policy.bn."),
    (".policy_net.gate_fc1.", ".fusion.policy.fc1."),
)
NUM_ACTIONS = 3  # --gate_history: skip, reuse, keep
# (blocks per stage, bottleneck) -> our backbone
RESNETS = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
}
_BLOCK = re.compile(r"layer([1-4])\.(\d+)\.")
_POLICY_FC = re.compile(r"backbone\.(layer[1-4]\.\d+)\.fusion\.policy\.(fc[01])\.(weight|bias)")
# The three released Something-V1 files are sthv1_adatsn50, sthv1_adatsm50 and sthv1_adatsm50last (.pth.tar).
_NAME_GUESS = {"tsn": "adafuse_tsn", "tsm": "adafuse_tsm"}


def read_authors_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a file saved by the official code, keys as they are (``module.base_model...``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    obj = safe_load(path)
    if isinstance(obj, dict) and "adafuse" in obj:
        raise UserError(f"{path}: already an adafuse checkpoint, nothing to convert")
    if not is_authors_state_dict(obj):
        raise UserError(f"{path}: not an official AdaFuse checkpoint (no {PREFIX + BACKBONE}* keys)")
    state = obj.get("state_dict", obj)
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: {key} is a {type(value).__name__}, not a tensor")
    return state


def _strip(key: str) -> str:
    if not key.startswith(PREFIX):
        raise UserError(f"{key}: every key of an official checkpoint starts with {PREFIX!r} (DataParallel)")
    return key.removeprefix(PREFIX)


def _policy_blocks(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, int, int]]:
    """``layerS.B`` -> (policy inputs 2·C_in, hidden H, outputs 3·C) of every block with a policy net."""
    out = {}
    for key, value in state.items():
        name = _strip(key).removeprefix(BACKBONE)
        if name.endswith(".policy_net.gate_fc0.weight"):
            block = name.removesuffix(".policy_net.gate_fc0.weight")
            fc1 = state.get(f"{PREFIX}{BACKBONE}{block}.policy_net.gate_fc1.weight")
            if not _BLOCK.fullmatch(block + "."):
                raise UserError(f"{key}: a policy net outside the residual blocks layer1..layer4")
            if fc1 is None:
                raise UserError(f"{key} has no gate_fc1 next to it")
            out[block] = (value.shape[1], value.shape[0], fc1.shape[0])
    return out


def authors_structure(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What the keys of an official state dict say, as :func:`adafuse.models.build_model` arguments
    (``backbone``, ``num_classes``, ``policy_hidden`` / ``policy_quota``, ``shared_policy``) plus ``fused_stages``
    (stage indices 0..3 with policy nets). Anything our models cannot express is a one-line error."""
    blocks: dict[int, int] = {}
    for key in state:
        m = _BLOCK.match(_strip(key).removeprefix(BACKBONE))
        if m:
            blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    layers = tuple(blocks.get(s, 0) for s in (1, 2, 3, 4))
    bottleneck = f"{PREFIX}{BACKBONE}layer1.0.conv3.weight" in state
    backbone = RESNETS.get((layers, bottleneck))
    if backbone is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise UserError(f"blocks per stage {layers} ({kind} blocks) match none of {', '.join(RESNETS.values())}")
    head = state.get(f"{PREFIX}{HEAD}weight")
    if head is None:
        raise UserError(f"no {PREFIX}{HEAD}weight: the classifier is missing")

    policies = _policy_blocks(state)
    if not policies:
        raise UserError("no policy nets (policy_net.*): not an AdaFuse (BateNet) checkpoint")
    fused = sorted({int(b[len("layer")]) - 1 for b in policies})  # blocks are layerS.B
    for stage in fused:
        absent = [f"layer{stage + 1}.{i}" for i in range(layers[stage]) if f"layer{stage + 1}.{i}" not in policies]
        if absent:
            raise UserError(f"{absent[0]} has no policy net but other blocks of its stage do (--enabled_layers): "
                            f"only whole stages are supported")  # fmt: skip
    if fused not in ([0, 1, 2, 3], [3]):
        raise UserError(f"policy nets in layer{'/'.join(str(s + 1) for s in fused)}: our methods have them in "
                        f"every stage (adafuse_tsn, adafuse_tsm) or in layer4 only (adafuse_tsm_last)")  # fmt: skip

    hidden: dict[str, tuple[int, int]] = {}  # block -> (H, C)
    for block, (inputs, size, outputs) in sorted(policies.items()):
        conv1 = state.get(f"{PREFIX}{BACKBONE}{block}.conv1.weight")
        if conv1 is None:
            raise UserError(f"{PREFIX}{BACKBONE}{block}.conv1.weight is missing")
        c, c_in = conv1.shape[:2]
        if (inputs, outputs) != (2 * c_in, NUM_ACTIONS * c):
            raise UserError(
                f"{block}: a policy net with {inputs} inputs and {outputs} outputs; for C_in={c_in}, C={c} the "
                f"AdaFuse policy (--gate_history, 3 actions, granularity 1, all channels) has {2 * c_in} and "
                f"{NUM_ACTIONS * c}"
            )
        hidden[block] = (size, c)
    sizes = {h for h, _ in hidden.values()}
    structure: dict[str, Any] = {"backbone": backbone, "num_classes": head.shape[0], "fused_stages": tuple(fused),
                                 "policy_hidden": None, "policy_quota": None}  # fmt: skip
    if len(sizes) == 1:
        structure["policy_hidden"] = sizes.pop()
    else:  # --hidden_quota Q: H = Q // C; the smallest Q that gives every block its H
        quota = max(h * c for h, c in hidden.values())
        wrong = [b for b, (h, c) in hidden.items() if quota // c != h]
        if wrong:
            raise UserError(f"policy hidden sizes {sorted(sizes)} are neither one size nor a quota (H = Q // C): "
                            f"{wrong[0]} breaks it")  # fmt: skip
        structure["policy_quota"] = quota
    structure["shared_policy"] = any(_strip(k).startswith(BACKBONE + BANKS[0]) for k in state)
    return structure


def choose_method(fused_stages: Sequence[int], *, method: str | None = None, name: str = "") -> tuple[str, str]:
    """(method, how it was decided): ``method`` if given (checked against the keys), else from the keys
    (layer4 only: ``adafuse_tsm_last``) or the file ``name`` ("tsn" / "tsm" in it)."""
    last_only = tuple(fused_stages) == (3,)
    allowed = ("adafuse_tsm_last",) if last_only else ("adafuse_tsn", "adafuse_tsm")
    where = "layer4 only" if last_only else "every stage"
    if method is not None:
        if method not in allowed:
            raise UserError(f"--method {method} does not fit the file: it has policy nets in {where} "
                            f"({' or '.join(allowed)})")  # fmt: skip
        return method, "--method"
    guesses = {m for word, m in _NAME_GUESS.items() if word in name.lower()}
    if last_only:
        if guesses == {"adafuse_tsn"}:
            raise UserError(f"policy nets in layer4 only is AdaFuse-TSM+Last, but the file name {name!r} says TSN; "
                            f"pass --method adafuse_tsm_last if it is that model")  # fmt: skip
        return "adafuse_tsm_last", "keys (policy nets in layer4 only)"
    if len(guesses) != 1:
        raise UserError("the weights cannot tell whether the model was trained with the temporal shift (TSM) or "
                        f"without (TSN), nor can the file name {name!r}: pass --method adafuse_tsn or adafuse_tsm")
    return guesses.pop(), f"file name {name!r}"


def authors_config(
    state: Mapping[str, torch.Tensor],
    *,
    method: str,
    classes: Sequence[str],
    num_segments: int = 8,
) -> ModelConfig:
    """The :class:`ModelConfig` of an official state dict: its structure (:func:`authors_structure`), ``method``,
    class names, T, and the authors' evaluation input (224 px, ImageNet normalization)."""
    structure = authors_structure(state)
    structure.pop("fused_stages")
    if len(classes) != structure["num_classes"]:
        raise UserError(f"the classifier has {structure['num_classes']} outputs but {len(classes)} class names "
                        f"were given: choose the matching --preset or --classes")  # fmt: skip
    with torch.device("meta"):
        model = build_model(method=method, num_segments=num_segments, input_size=224, normalization="imagenet",
                            classes=classes, shifted_shortcut=get_method(method).shift, **structure)  # fmt: skip
    return model.config


def _reverse_actions(t: torch.Tensor) -> torch.Tensor:
    """Reverse the action order of fc1 rows (A·G, H) or bias (A·G,): channel-major, action-minor. Self-inverse."""
    return t.reshape(-1, NUM_ACTIONS, *t.shape[1:]).flip(1).reshape(t.shape)


def _our_name(key: str) -> str | None:
    """Our name of an authors' key; None for the shared bank's aliases; an error for anything unknown."""
    name = _strip(key)
    if name.startswith(HEAD):
        return "head." + name.removeprefix(HEAD)
    if not name.startswith(BACKBONE):
        raise UserError(f"{key}: neither {PREFIX + BACKBONE}* nor {PREFIX + HEAD}*")
    name = name.removeprefix(BACKBONE)
    if name.startswith(BANKS):
        return None
    for theirs, ours in BLOCK_NAMES:
        name = name.replace(theirs, ours)
    return "backbone." + name


def _check_bank(state: Mapping[str, torch.Tensor], *, shared: bool) -> None:
    """A bank exactly when the model shares FCs, and every tensor of it equal to the FC of each block that uses it
    (and used by one)."""
    users: dict[str, list[str]] = {}
    for block, (inputs, _, outputs) in _policy_blocks(state).items():
        for bank, fc in zip(BANKS, ("gate_fc0", "gate_fc1"), strict=True):
            for param in ("weight", "bias"):
                users.setdefault(f"{PREFIX}{BACKBONE}{bank}{inputs}_{outputs}.{param}", []).append(
                    f"{PREFIX}{BACKBONE}{block}.policy_net.{fc}.{param}"
                )
    banked = [k for k in state if _strip(k).startswith(tuple(BACKBONE + b for b in BANKS))]
    if bool(banked) != shared:
        has = "has a shared-policy bank" if banked else "has no shared-policy bank (gate_fc0s / gate_fc1s)"
        raise UserError(f"the file {has} but the model {'shares' if shared else 'does not share'} its policy FCs")
    for key in banked:
        if key not in users:
            raise UserError(f"{key}: a shared policy FC that no block uses")
        for user in users[key]:
            a, b = state[key], state[user]
            if a is not b and (a.shape != b.shape or not torch.equal(a, b)):
                raise UserError(f"{key} differs from {user}: the shared bank must alias the blocks' FCs")
    if banked:
        absent = sorted(set(users) - set(banked))
        if absent:
            raise UserError(f"{absent[0]} is missing: a shared-policy file has the bank entry of every block's FCs")


def from_authors_layout(state: Mapping[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict from an official one, for the model ``config`` describes (see :func:`authors_config`).

    Strict: every tensor of ``state`` lands in the model (the bank's aliases after checking them), every tensor of
    the model is filled, with the same shapes; otherwise a one-line error naming the first offending key."""
    _check_bank(state, shared=config.shared_policy)
    ours: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    for key, value in state.items():
        name = _our_name(key)
        if name is None:
            continue
        if ".fusion.policy.fc1." in name:
            value = _reverse_actions(value)
        ours[name], source[name] = value, key
    with torch.device("meta"):
        expected = build_from_config(config).state_dict()
    arch = f"{config.method} / {config.backbone}"
    for name, value in ours.items():
        if name not in expected:
            raise UserError(f"{source[name]} has no place in {arch} (it would be {name})")
        if value.shape != expected[name].shape:
            raise UserError(f"{source[name]} has shape {tuple(value.shape)}; {name} of {arch} needs "
                            f"{tuple(expected[name].shape)}")  # fmt: skip
    for name in expected:
        if name not in ours:
            raise UserError(f"the file has no tensor for {name} of {arch} (the official name would be "
                            f"{_authors_name(name)})")  # fmt: skip
    return ours


def _authors_name(name: str) -> str:
    if name.startswith("head."):
        return PREFIX + HEAD + name.removeprefix("head.")
    name = name.removeprefix("backbone.")
    for theirs, ours in BLOCK_NAMES:
        name = name.replace(ours, theirs)
    return PREFIX + BACKBONE + name


def to_authors_layout(state: Mapping[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """The inverse of :func:`from_authors_layout`: our state dict in the official layout (``module.`` keys,
    [skip, reuse, keep] rows, and the shared bank's aliases when ``config.shared_policy``)."""
    out: dict[str, torch.Tensor] = {}
    bank: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if ".fusion.policy.fc1." in name:
            value = _reverse_actions(value)
        out[_authors_name(name)] = value
        m = _POLICY_FC.fullmatch(name)
        if config.shared_policy and m:
            block, fc, param = m.groups()
            inputs = state[f"backbone.{block}.fusion.policy.fc0.weight"].shape[1]
            outputs = state[f"backbone.{block}.fusion.policy.fc1.weight"].shape[0]
            bank.setdefault(f"{PREFIX}{BACKBONE}gate_{fc}s.{inputs}_{outputs}.{param}", value)
    return {**out, **bank}


def convert_checkpoint(
    src: str | Path,
    out: str | Path,
    *,
    method: str | None = None,
    classes: Sequence[str],
) -> tuple[Recognizer, dict[str, Any]]:
    """Convert an official checkpoint file into an adafuse checkpoint at ``out``.

    Args:
        src: the authors' ``.pth.tar``. out: the adafuse checkpoint to write.
        method: ``adafuse_tsn`` / ``adafuse_tsm`` / ``adafuse_tsm_last``; default: from the keys and the file name
            (see :func:`choose_method`).
        classes: the class names in label order (their number must be the classifier's).

    Returns:
        (the model, in eval mode, and a summary: method and how it was decided, tensors read, aliases dropped).
    """
    src, out = Path(src), Path(out)
    if out.exists() and out.resolve() == src.resolve():
        raise UserError(f"{out}: the output would overwrite the file being converted")
    state = read_authors_checkpoint(src)
    try:
        structure = authors_structure(state)
        chosen, how = choose_method(structure["fused_stages"], method=method, name=src.name)
        config = authors_config(state, method=chosen, classes=classes)
        ours = from_authors_layout(state, config)
    except UserError as e:
        raise UserError(f"{src}: {e}") from None
    model = build_from_config(config)
    model.load_state_dict(ours, strict=True, assign=True)  # the file's tensors themselves: no second copy
    summary = {
        "source": str(src.resolve()),
        "method": chosen,
        "method_from": how,
        "tensors": len(state),
        "aliases_dropped": len(state) - len(ours),
        "fused_stages": [f"layer{s + 1}" for s in structure["fused_stages"]],
    }
    save_model(out, model, converted_from=summary)
    return model.eval(), summary

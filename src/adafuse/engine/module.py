"""The Lightning module: the paper's loss (Eq. 6), optimiser recipe, validation and checkpoint metadata."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from adafuse.checkpoint import checkpoint_meta
from adafuse.engine.efficiency import (
    block_shares,
    budget_warning,
    collapse_warning,
    efficiency_penalty,
    efficiency_ramp,
)
from adafuse.engine.evaluate import predict_batch
from adafuse.engine.metrics import RecognitionMetrics
from adafuse.flops import CostTable, adaptive_macs
from adafuse.layers.actions import KEEP, REUSE, SKIP
from adafuse.layers.channel_gating import ChannelGatedConv2d
from adafuse.models import Recognizer

log = logging.getLogger("adafuse")


def optimizer_groups(model: nn.Module, *, weight_decay: float, policy_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """SGD parameter groups: weight decay on conv/linear weights only, none on BatchNorm parameters and biases
    (the official recipe; CGNet thresholds have their own loss). Policy-net parameters form their own groups
    with the learning rate scaled by ``policy_lr_scale`` (key ``lr_scale``): the efficiency gradient reaching
    one channel's logits is small (its share of the video's cost), so short schedules need a larger step."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()  # shared policy FCs are reachable from several blocks
    for module_name, module in model.named_modules():
        policy = ".policy" in f".{module_name}"
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            decay = (name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))) or name.startswith("weight_")
            groups.setdefault((decay, policy), []).append(p)
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0,
         "lr_scale": policy_lr_scale if policy else 1.0}
        for (decay, policy), params in sorted(groups.items())
    ]


class RecognitionModule(L.LightningModule):
    """Trains a :class:`Recognizer` with ``CE + λ·cost`` or ``CE + λ·max(0, cost − budget)`` (+ CGNet's
    threshold loss), λ ramped in over steps, and validates it; warns once per epoch when a policy block collapses.

    Args:
        model: the recognizer.
        table: its :class:`~adafuse.flops.CostTable` at the training input size.
        config: the resolved config (sections ``loss`` and ``optim`` are read here).
        meta: extra checkpoint metadata (the dataset, the training config), stored in every checkpoint beside the
            model's config.
        compile: run the training forward, loss and backward through ``torch.compile`` (``trainer.compile``).
        channels_last: keep the model's weights, and so its activations, in channels_last memory
            (``trainer.channels_last``): the layout tensor-core convolutions work in on a GPU.
    """

    def __init__(
        self,
        model: Recognizer,
        *,
        table: CostTable,
        config: dict[str, Any],
        meta: dict[str, Any],
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.table = table
        self.loss_cfg, self.optim_cfg = config["loss"], config["optim"]
        self.meta = meta
        self.val_metrics = RecognitionMetrics(list(model.fusions()))
        self.gated = [m for m in model.modules() if isinstance(m, ChannelGatedConv2d)]
        batchnorms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.frozen_bn = batchnorms if self.optim_cfg["freeze_bn"] else []
        for bn in self.frozen_bn:
            bn.requires_grad_(False)
        self.train_blocks: dict[str, list[torch.Tensor]] = {}  # per block: (keep, reuse, skip, agreement) per step
        # Compiled as one graph (forward, Eq. 6, the logged statistics; AOT autograd compiles the backward too): the
        # policy nets' and the mask arithmetic's many small kernels are fused and their Python overhead is gone.
        self._terms = torch.compile(self.training_terms) if compile else self.training_terms

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, map_location: Any = None, **kwargs: Any):  # noqa: D417
        """The module of a training checkpoint, weights loaded: the model from its config, the loss and optimiser
        settings from the training config stored beside it (Lightning's usual entry point; ``kwargs`` unused)."""
        from adafuse.checkpoint import load_model
        from adafuse.engine.config import DEFAULTS
        from adafuse.flops import profile

        model, meta = load_model(checkpoint_path)
        config = meta.get("train_config") or DEFAULTS
        module = cls(model, table=profile(model, input_size=model.config.input_size), config=config,
                     meta={k: v for k, v in meta.items() if k not in ("format", "config")})  # fmt: skip
        return module.to(map_location) if map_location is not None else module

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Frozen BatchNorm keeps normalising with its running statistics. Set per batch: Lightning restores the
        # train/eval flag of every submodule around validation.
        for bn in self.frozen_bn:
            bn.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_fit_start(self) -> None:
        cfg = self.loss_cfg
        message = budget_warning(self.table, target=cfg["cost_target"], mode=cfg["cost_mode"]) \
            if cfg["efficiency_weight"] else None  # fmt: skip
        if message and self.trainer.is_global_zero:
            log.warning(message)
        # The cost table's per-group costs live where the masks are: costing them then copies nothing per step.
        self.table = self.table.to(self.device)

    def training_terms(
        self, clips: torch.Tensor, labels: torch.Tensor, *, efficiency_weight: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The loss of Eq. 6 (λ = ``efficiency_weight``, a 0-dim tensor) for clips (N, T, 3, H, W) and labels (N,),
        the statistics logged beside it, and per fused block its (keep, reuse, skip, agreement) shares (4,), as
        tensors where the batch is: nothing here waits for the GPU (no ``.item()``, no host copies, no
        data-dependent shapes), so a step runs ahead of the device and compiles to one graph."""
        logits, policies = self.model.forward_with_policies(clips)
        ce = F.cross_entropy(logits, labels)
        macs = adaptive_macs(policies, self.table, batch_size=clips.shape[0], mode=self.loss_cfg["cost_mode"],
                             device=clips.device)  # fmt: skip
        loss = ce
        if policies and self.loss_cfg["efficiency_weight"]:  # the weight is a tensor: ramp steps do not recompile
            cfg = self.loss_cfg
            loss = loss + efficiency_weight * efficiency_penalty(macs, self.table, kind=cfg["cost"],
                                                                 target=cfg["cost_target"])  # fmt: skip
        if self.gated:
            loss = loss + self.loss_cfg["cg_threshold_weight"] * sum(m.threshold_loss() for m in self.gated)
        acc = (logits.argmax(1) == labels).float().mean()
        logs = {"train/loss": loss, "train/ce": ce, "train/top1": 100 * acc, "train/gflops": macs.mean() / 1e9,
                "train/efficiency_weight": efficiency_weight}
        masks = {name: policies[name] for name in self.model.fusions()}
        if masks:
            shares = torch.stack([m.detach().float().mean(dim=(0, 1, 2)) for m in masks.values()]).mean(0)
            logs.update({"train/keep": shares[KEEP], "train/reuse": shares[REUSE], "train/skip": shares[SKIP]})
            blocks = {name: block_shares(mask) for name, mask in masks.items()}
        else:
            blocks = {}
        return loss, logs, blocks

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        clips, labels = batch
        cfg = self.loss_cfg
        ramp = efficiency_ramp(self.global_step, start=self._efficiency_start(),
                               ramp_steps=cfg["efficiency_ramp_steps"])  # fmt: skip
        weight = torch.tensor(cfg["efficiency_weight"] * ramp)  # 0-dim, on the host: no copy to the device
        loss, logs, blocks = self._terms(clips, labels, efficiency_weight=weight)
        for name, shares in blocks.items():  # per-block shares, logged and checked at the end of the epoch
            self.train_blocks.setdefault(name, []).append(shares)
        self.log_dict(logs, prog_bar=False, on_step=True, on_epoch=True, batch_size=clips.shape[0], sync_dist=False)
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=clips.shape[0])
        return loss

    def _efficiency_start(self) -> int:
        """Optimizer step at which the efficiency term starts (epoch ``loss.efficiency_after_epoch``)."""
        epoch = self.loss_cfg["efficiency_after_epoch"]
        return epoch * (self.trainer.num_training_batches // self.trainer.accumulate_grad_batches) if epoch else 0

    def on_train_epoch_end(self) -> None:
        # Per-block policy shares of the epoch (sampled policies), and the collapse check: on the validation's
        # arg-max policies when a validation ran this epoch (what a user deploys), else on the training ones.
        fields = ("keep", "reuse", "skip", "agreement")
        blocks = [{"name": name, **dict(zip(fields, torch.stack(v).mean(0).tolist(), strict=True))}
                  for name, v in self.train_blocks.items()]
        self.train_blocks = {}
        if not blocks:
            return
        logs = {f"train/{b['name']}/{a}": b[a] for b in blocks for a in ("keep", "reuse", "skip", "agreement")}
        logs["train/alive_min"] = min(b["keep"] + b["reuse"] for b in blocks)
        self.log_dict(logs, sync_dist=False)
        validated = getattr(self, "last_validation", None)
        if validated is not None and validated.get("epoch") == self.current_epoch:
            blocks = validated["blocks"]
        message = collapse_warning(blocks, where=f"epoch {self.current_epoch}")
        if message and self.trainer.is_global_zero:
            log.warning(message)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        clips, labels = batch
        logits, macs, policies = predict_batch(self.model, clips, self.table)
        self.val_metrics.update(logits, labels, macs, policies)

    def on_validation_epoch_end(self) -> None:
        result = self.val_metrics.compute()
        self.val_metrics.reset()
        logs = {"val/top1": result["top1"], "val/top5": result["top5"], "val/gflops": result["gflops"]}
        logs.update({f"val/{k}": result["policy"][k] for k in ("keep", "reuse", "skip")} if "policy" in result else {})
        for b in result.get("blocks", []):
            logs.update({f"val/{b['name']}/{a}": b[a] for a in ("keep", "reuse", "skip", "agreement")})
        if "policy" in result:
            logs["val/collapsed_blocks"] = float(len(result["policy"]["collapsed_blocks"]))
            logs["val/frozen_blocks"] = float(len(result["policy"]["frozen_blocks"]))
        self.log_dict(logs, prog_bar=False, sync_dist=False)
        self.log("val_top1", result["top1"], prog_bar=True, logger=False)
        self.last_validation = result | {"epoch": self.current_epoch}

    def configure_optimizers(self):
        cfg = self.optim_cfg
        groups = optimizer_groups(self.model, weight_decay=cfg["weight_decay"], policy_lr_scale=cfg["policy_lr_scale"])
        for group in groups:
            group["lr"] = cfg["lr"] * group["lr_scale"]
        if cfg["optimizer"] == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=cfg["lr"])
        else:
            optimizer = torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"])
        if cfg["schedule"] == "cosine":
            steps = max(1, int(self.trainer.estimated_stepping_batches))
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg["lr_steps"], gamma=cfg["lr_gamma"])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["adafuse"] = checkpoint_meta(self.model, **self.meta)
        # Exact resume: the global RNG drives dropout and the Gumbel noise.
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

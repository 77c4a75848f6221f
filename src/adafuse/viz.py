"""The paper's figures from evaluation results (``adafuse eval --json`` objects): PNG files.

- :func:`plot_tradeoff` — Figure 2: GFLOPs vs top-1, bubble area proportional to parameters.
- :func:`plot_policy_pies` — Figure 3: keep/reuse/skip shares per dataset, with the reuse/keep quotient.
- :func:`plot_policy_blocks` — Figure 4: per-block action shares, their "instance" part (same action in every
  frame of a video) and a cubic trend per action.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLORS = {"keep": "#4c72b0", "reuse": "#dd8452", "skip": "#c44e52"}


def _subplots(*args, figsize: tuple[float, float], **kwargs):
    """A figure with its own Agg canvas (files only): pyplot's global backend and figure list are left alone."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*args, **kwargs)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_tradeoff(results: Sequence[dict[str, Any]], path: str | Path, *, labels: Sequence[str] | None = None,
                  title: str = "GFLOPs vs accuracy", curve: Sequence[tuple[float, float, str]] = (),
                  curve_label: str = "") -> Path:
    """Figure 2: one bubble per result at (gflops, top1), area ∝ params; adaptive methods in blue. ``curve``:
    ``(gflops, top1, label)`` points joined by a line in GFLOPs order (a trade-off sweep, e.g. over λ)."""
    fig, ax = _subplots(figsize=(6.4, 4.6))
    largest = max(r["params"] for r in results)
    for i, r in enumerate(results):
        label = labels[i] if labels else f"{r.get('method', '?')} ({r.get('backbone', '?')})"
        adaptive = "policy" in r
        ax.scatter(r["gflops"], r["top1"], s=1500 * r["params"] / largest, alpha=0.5,
                   color="#4c72b0" if adaptive else "#8c8c8c", edgecolor="k")
        ax.annotate(label, (r["gflops"], r["top1"]), textcoords="offset points", xytext=(6, 6), fontsize=8)
    if curve:
        xs, ys, _ = zip(*sorted(curve), strict=True)
        ax.plot(xs, ys, "-o", color="#4c72b0", markersize=4, linewidth=1, label=curve_label or None)
        for i, (x, y, name) in enumerate(sorted(curve)):  # labels alternate below / above: neighbours sit close
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(-6, -13 if i % 2 else 6), fontsize=7,
                        color="#4c72b0")
        if curve_label:
            ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("GFLOPs per video (GMACs)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{title} (bubble area ∝ parameters)")
    ax.grid(alpha=0.3)
    ax.margins(0.2)
    return _save(fig, path)


def plot_policy_pies(results: Sequence[dict[str, Any]], path: str | Path, *, labels: Sequence[str]) -> Path:
    """Figure 3: a keep/reuse/skip pie per result (e.g. per dataset), titled with the reuse/keep quotient."""
    fig, axes = _subplots(1, len(results), figsize=(3.2 * len(results), 3.4), squeeze=False)
    for ax, r, label in zip(axes[0], results, labels, strict=True):
        p = r["policy"]
        ax.pie([p["skip"], p["reuse"], p["keep"]], labels=["skip", "reuse", "keep"], autopct="%1.1f%%",
               colors=[COLORS["skip"], COLORS["reuse"], COLORS["keep"]], startangle=90)
        ax.set_title(f"{label}\nreuse/keep = {p['reuse_per_keep']:.3f}", fontsize=10)
    return _save(fig, path)


def plot_policy_blocks(result: dict[str, Any], path: str | Path, *, title: str = "Policy per block") -> Path:
    """Figure 4: per block, bars of each action's share (light), its instance part (dark: channels taking that
    action in every frame of a video), and a cubic trend of each share (dashed)."""
    blocks = result["blocks"]
    x = np.arange(len(blocks))
    fig, ax = _subplots(figsize=(max(6.0, 0.45 * len(blocks) + 2), 4.2))
    width = 0.27
    for j, action in enumerate(("skip", "reuse", "keep")):
        share = np.array([b[action] for b in blocks])
        instance = np.array([b[f"{action}_instance"] for b in blocks])
        ax.bar(x + (j - 1) * width, share, width, color=COLORS[action], alpha=0.4, label=action)
        ax.bar(x + (j - 1) * width, instance, width, color=COLORS[action], label=f"{action} (instance)")
        if len(blocks) > 3:
            ax.plot(x, np.poly1d(np.polyfit(x, share, 3))(x), "k--", linewidth=1)
    ax.set_xticks(x, [b["name"].removeprefix("backbone.").removesuffix(".fusion") for b in blocks], rotation=60,
                  fontsize=7, ha="right")
    ax.set_ylabel("share of channel decisions")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=3, loc="upper center")
    return _save(fig, path)

"""Markdown rendering of evaluation results."""

from __future__ import annotations

from typing import Any


def markdown_report(result: dict[str, Any]) -> str:
    """A markdown report of one :func:`adafuse.engine.evaluate.evaluate` result (with ``method``/``backbone``)."""
    lines = [
        f"# {result.get('method', '?')} / {result.get('backbone', '?')}",
        "",
        "| top-1 (%) | top-5 (%) | GFLOPs/video | dense GFLOPs | params | views | policy |",
        "|---:|---:|---:|---:|---:|---:|---|",
        f"| {result['top1']:.2f} | {result['top5']:.2f} | {result['gflops']:.3f} | {result['gflops_dense']:.3f} "
        f"| {result['params']:,} | {result['views']} | {result['policy_mode']} |",
        "",
        "GFLOPs are GMACs per video (T frames, all views), the paper's convention; adaptive cost by Eq. 5.",
    ]
    if "policy" in result:
        p = result["policy"]
        lines += [
            "",
            "## Policy",
            "",
            f"keep {100 * p['keep']:.1f}% · reuse {100 * p['reuse']:.1f}% · skip {100 * p['skip']:.1f}% · "
            f"reuse/keep {p['reuse_per_keep']:.3f} · same action in all frames {100 * p['instance']:.1f}%",
            "",
            "| block | keep | reuse | skip | instance |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {b['name']} | {b['keep']:.3f} | {b['reuse']:.3f} | {b['skip']:.3f} | {b['instance']:.3f} |"
            for b in result["blocks"]
        ]
    if result.get("per_class"):
        lines += ["", *_per_class(result)]
    if result.get("last"):
        last = result["last"]
        lines += ["", "## best.ckpt and last.ckpt", "",
                  f"{result['checkpoint']} is the epoch with the best top-1 on {result.get('split', 'val')}, the split "
                  f"scored here, so its number is optimistic. The run's last.ckpt (epoch {last['epoch'] + 1}) scored "
                  f"top-1 {last['top1']:.2f}% on it at its last validation."]
    return "\n".join(lines) + "\n"


MATRIX_CLASSES = 20  # up to this many classes the report shows the whole confusion matrix


def _per_class(result: dict[str, Any]) -> list[str]:
    """Per-class accuracy, and the confusion matrix (small class counts) or the most frequent confusions."""
    lines = ["## Per class", "", "| # | class | videos | top-1 (%) |", "|---:|---|---:|---:|"]
    for i, row in enumerate(result["per_class"]):
        top1 = "–" if row["top1"] is None else f"{row['top1']:.1f}"
        lines.append(f"| {i} | {row['class']} | {row['videos']} | {top1} |")
    confusion = result["confusion"]
    lines += ["", "## Confusion", ""]
    if len(confusion) <= MATRIX_CLASSES:
        lines += ["Rows: true class, columns: predicted class (indices as above).", "",
                  "| true \\ predicted | " + " | ".join(str(j) for j in range(len(confusion))) + " |",
                  "|---:|" + "---:|" * len(confusion)]
        lines += [f"| {i} | " + " | ".join(str(c) for c in row) + " |" for i, row in enumerate(confusion)]
        return lines
    names = [row["class"] for row in result["per_class"]]
    pairs = sorted(((c, i, j) for i, row in enumerate(confusion) for j, c in enumerate(row) if i != j and c),
                   reverse=True)[:MATRIX_CLASSES]
    lines += ["The most frequent confusions (the whole matrix is in the JSON result, `confusion`).", "",
              "| true class | predicted as | videos |", "|---|---|---:|"]
    lines += [f"| {names[i]} | {names[j]} | {c} |" for c, i, j in pairs]
    return lines

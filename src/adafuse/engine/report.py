"""Markdown rendering of evaluation results."""

from __future__ import annotations

from typing import Any

from adafuse.engine.efficiency import COLLAPSE_FLOOR, FROZEN_AGREEMENT


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
            "| block | keep | reuse | skip | instance | agreement | status |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        lines += [
            f"| {b['name']} | {b['keep']:.3f} | {b['reuse']:.3f} | {b['skip']:.3f} | {b['instance']:.3f} "
            f"| {b['agreement']:.3f} | {b['status'] if b['status'] == 'ok' else '**' + b['status'].upper() + '**'} |"
            for b in result["blocks"]
        ]
        bad = [b for b in result["blocks"] if b["status"] != "ok"]
        if bad:
            lines += ["", f"**Warning: {len(bad)} of {len(result['blocks'])} blocks are collapsed or frozen** "
                      f"({', '.join(b['name'] for b in bad)}): collapsed = keep + reuse under "
                      f"{100 * COLLAPSE_FLOOR:.0f}% (the block's output is mostly zeros), frozen = at least "
                      f"{100 * FROZEN_AGREEMENT:.0f}% of decisions are their channel's usual action (the policy "
                      "ignores its input)."]
    return "\n".join(lines) + "\n"

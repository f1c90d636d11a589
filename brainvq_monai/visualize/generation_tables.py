"""Markdown of generation metrics, from their record (``generation_metrics.json`` or the dict it holds).

Renders only: every number comes from the record written by :mod:`brainvq_monai.apps.generation_eval` (computed by
:mod:`brainvq_monai.metrics.generation`); nothing here samples, trains or runs a network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from brainvq_monai.utils.format import fmt

__all__ = [
    "report_number",
    "report_ci",
    "format_generation_table",
    "format_generation_summary",
    "generation_section",
    "generic_table",
]

report_number = partial(fmt, digits=4, style="significant", missing="n/a")
"""The report's number style: 4 significant digits, whole numbers as integers, ``n/a`` for a missing value."""


def report_ci(values: Any) -> str:
    """``[low, high]`` of a two-element interval in the report's number style, ``-`` for anything else.

    Args:
        values: a ``[low, high]`` sequence, or ``None``.

    Returns:
        the cell text.
    """
    if isinstance(values, Sequence) and not isinstance(values, str) and len(values) == 2:
        return f"[{report_number(values[0])}, {report_number(values[1])}]"
    return "-"


# ---------------------------------------------------------------------------------------- compact tables (stderr)
def _compact_row(name: str, row: Mapping[str, Any]) -> str:
    digits = 4 if name == "kid" else 3
    if name == "kid":
        gci = f"+/- {fmt(row['generated_std'], 4)} (sd)"
        fci = f"+/- {fmt(row['real_floor_std'], 4)} (sd)"
    else:
        gci, fci = (
            f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "-" for ci in (row.get("generated_ci"), row.get("real_floor_ci"))
        )
    better = row["better"]
    if name == "ms_ssim_diversity":
        better = f"match test ({fmt(row['real_test'])})"
    elif name == "closer_to_train":
        better = "match the real held-out images (floor column); higher = closer to copies"
    return f"| {name} | {fmt(row['generated'], digits)} | {gci} | {fmt(row['real_floor'], digits)} | {fci} | {better} |"


def format_generation_table(result: Mapping[str, Any], group: str = "all") -> str:
    """A compact Markdown table of one group of a generation evaluation.

    Args:
        result: the dict of :func:`brainvq_monai.metrics.generation.evaluate_generation`, or a record holding it
            under ``generation`` (``generation_metrics.json``).
        group: ``"all"`` or a class name.

    Returns:
        Markdown text.
    """
    res = result.get("generation", result)
    g = res["groups"][group]
    c = g["counts"]
    mem = g["memorisation"]
    return "\n".join(
        [
            f"Group `{group}`: {c['samples']} samples, {c['real_test']} test, floor = {c['real_floor_subset']} "
            f"training images; seed {res['seed']}, k={res['k']}, {res['num_bootstrap']} bootstrap replicates (95% CI)",
            "",
            "| metric | generated | 95% CI | real floor (train vs test) | 95% CI | better |",
            "|---|---|---|---|---|---|",
            *(_compact_row(name, row) for name, row in g["metrics"].items()),
            "",
            f"Nearest-training-image SSIM: samples median {fmt(mem['generated_quantiles']['q50'])} "
            f"(max {fmt(mem['generated_max'])}), test images median {fmt(mem['real_test_quantiles']['q50'])} "
            f"(max {fmt(mem['real_test_max'])}); samples above the test max: {fmt(100 * mem['copy_fraction'], 1)}%",
        ]
    )


def _summary_extras(result: Mapping[str, Any]) -> list[str]:
    """The two-sample test and class-fidelity lines of a generation summary."""
    parts: list[str] = []
    c2st = result.get("c2st")
    if c2st:
        floor = c2st.get("real_floor") or {}
        parts += [
            f"Two-sample test ({c2st['what']}): samples AUC {fmt(c2st['generated']['auc'])}, real held-out images "
            f"AUC {fmt(floor.get('auc'))} ({c2st['generated']['num_eval']} held-out images scored)",
            "",
        ]
    fidelity = result.get("class_fidelity")
    if fidelity:
        real, gen = fidelity["real_test"], fidelity["samples"]
        parts += [
            f"Class fidelity ({fidelity['classifier']}): accuracy on real test slices {fmt(real['accuracy'])} "
            f"[{fmt(real['ci'][0])}, {fmt(real['ci'][1])}] ({real['num_images']} slices of {real['num_clusters']} "
            f"subjects); on conditional samples {fmt(gen['accuracy'])} [{fmt(gen['ci'][0])}, {fmt(gen['ci'][1])}] "
            f"({gen['num_images']} samples); gap {fidelity['gap']:+.3f}",
            "",
        ]
    return parts


def format_generation_summary(result: Mapping[str, Any]) -> str:
    """Human-readable summary of a run's generation record: the metric tables and the reconstruction.

    Args:
        result: the record of :func:`brainvq_monai.apps.generation_eval.run_generation_eval` (or read from
            ``generation_metrics.json``).

    Returns:
        Markdown text.
    """
    fn = result["feature_net"]
    check = fn.get("test_check", {})
    parts = [
        f"## Generation metrics ({result['prior']} prior, {result['sampling']['num_samples']} samples, "
        f"seed {result['seed']}, temperature {result['sampling']['temperature']})",
        "",
        f"Feature net {fn['version']} (training-data hash {str(fn['data_hash'])[:12]}, "
        f"{'reused' if fn.get('reused') else 'trained now'}): test class accuracy "
        f"{fmt(check.get('class_accuracy'), 2)}, slice-position MAE {fmt(check.get('position_mae'))}",
        "",
    ]
    for group in result["generation"]["groups"]:
        parts += [format_generation_table(result["generation"], group), ""]
    parts += _summary_extras(result)
    parts += [
        "Reconstruction on the test split (brain mask vs whole image):",
        "",
        "| group | n | SSIM brain | 95% CI | PSNR brain | SSIM whole | PSNR whole |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in result["reconstruction"].items():
        if isinstance(r, Mapping):
            ci = r["ssim_brain_ci"]
            parts.append(
                f"| {name} | {r['num_images']} | {fmt(r['ssim_brain'])} | [{fmt(ci[0])}, {fmt(ci[1])}] | "
                f"{fmt(r['psnr_brain'], 2)} | {fmt(r['ssim_whole_image'])} | {fmt(r['psnr_whole_image'], 2)} |"
            )
    return "\n".join([*parts, "", f"Time: {result['seconds']}"])


# ---------------------------------------------------------------------------------------- the report's section
def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = tree
    return out


def generic_table(tree: Mapping[str, Any]) -> list[str]:
    """Every number and text leaf of a nested mapping as a two-column Markdown table (``a.b.c | value``).

    Args:
        tree: a nested mapping.

    Returns:
        the table's lines, then an empty line.
    """
    rows = [
        f"| {path} | {report_number(v)} |"
        for path, v in _flatten(tree).items()
        if isinstance(v, (int, float, str)) and not isinstance(v, bool)
    ]
    return ["| entry | value |", "|---|---|", *rows, ""]


def _intro(gen: Mapping[str, Any], evaluation: Mapping[str, Any]) -> list[str]:
    sampling = gen.get("sampling") or {}
    fn = gen.get("feature_net") or {}
    check = fn.get("test_check") or {}
    n = report_number
    return [
        f"From `generation_metrics.json`: {n(sampling.get('num_samples'))} samples "
        f"({n(sampling.get('num_samples_per_class'))} per class) of the {gen.get('prior', '?')} prior, "
        f"temperature {n(sampling.get('temperature'))}, seed {n(sampling.get('seed', gen.get('seed')))}; "
        f"metric seed {n(evaluation.get('seed'))}, k = {n(evaluation.get('k'))} for precision / recall / "
        f"density / coverage, {n(evaluation.get('num_bootstrap'))} bootstrap replicates for the 95% CIs.",
        "",
        f"Features: in-house network `{fn.get('version', '?')}` trained on the training split only (data hash "
        f"`{str(fn.get('data_hash', '?'))[:12]}`); on the test split it scores class accuracy "
        f"{n(check.get('class_accuracy'))} and slice-position MAE {n(check.get('position_mae'))}.",
        "",
        "*floor*: the same metric for real training images (as many as the samples) scored against the test images "
        "like the samples, i.e. the value of a perfect generator at this sample size. Diversity (mean pairwise "
        "MS-SSIM) should match the test images' value, not be minimised. Memorisation: SSIM from each sample to its "
        "nearest training image, next to the same for test images.",
        "",
    ]


def _report_row(metric: str, row: Mapping[str, Any]) -> str:
    n = report_number
    if "generated_std" in row:
        gci, fci = f"+/- {n(row['generated_std'])} (sd)", f"+/- {n(row.get('real_floor_std'))} (sd)"
    else:
        gci, fci = report_ci(row.get("generated_ci")), report_ci(row.get("real_floor_ci"))
    better = row.get("better", "")
    if "real_test" in row:
        better = f"match test: {n(row['real_test'])} {report_ci(row.get('real_test_ci'))}"
    return f"| {metric} | {n(row.get('generated'))} | {gci} | {n(row.get('real_floor'))} | {fci} | {better} |"


def _group_lines(name: str, group: Mapping[str, Any]) -> list[str]:
    n = report_number
    c = group.get("counts") or {}
    lines = [
        f"**{'all classes' if name == 'all' else f'class {name}'}**: {n(c.get('samples'))} samples, "
        f"{n(c.get('real_test'))} test images, floor from {n(c.get('real_floor_subset'))} training images.",
        "",
        "| metric | generated | 95% CI | floor (real train vs test) | 95% CI | better |",
        "|---|---|---|---|---|---|",
        *(_report_row(metric, row) for metric, row in (group.get("metrics") or {}).items()),
    ]
    mem = group.get("memorisation") or {}
    if mem:
        lines += [
            "",
            f"Nearest-training-image SSIM: samples median {n((mem.get('generated_quantiles') or {}).get('q50'))}"
            f" (max {n(mem.get('generated_max'))}), test images median "
            f"{n((mem.get('real_test_quantiles') or {}).get('q50'))} (max {n(mem.get('real_test_max'))}); "
            f"samples above the test images' max: {n(100 * float(mem.get('copy_fraction', float('nan'))))}%.",
        ]
    for note in group.get("notes") or []:
        lines += ["", f"Note: {note}."]
    return [*lines, ""]


def _masked_reconstruction(recon: Mapping[str, Any]) -> list[str]:
    rows = {k: v for k, v in recon.items() if isinstance(v, Mapping)}
    if not rows:
        return []
    n = report_number
    lines = [
        "### Reconstruction inside a brain mask (test split)",
        "",
        f"From `generation_metrics.json`; mask: {recon.get('mask', 'not described')}. Whole-image values count "
        "the background, which inflates them.",
        "",
        "| group | images | SSIM (brain) | 95% CI | PSNR (brain, dB) | 95% CI | SSIM (whole) | PSNR (whole, dB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {n(r.get('num_images'))} | {n(r.get('ssim_brain'))} | {report_ci(r.get('ssim_brain_ci'))}"
            f" | {n(r.get('psnr_brain'))} | {report_ci(r.get('psnr_brain_ci'))} | {n(r.get('ssim_whole_image'))} "
            f"| {n(r.get('psnr_whole_image'))} |"
        )
    return [*lines, ""]


def generation_section(gen: Mapping[str, Any] | None, reason: str) -> list[str]:
    """The report's generation section: per-group tables with floors and CIs, and the masked reconstruction.

    Args:
        gen: the generation record (``generation_metrics.json``), or ``None``.
        reason: the text shown without a record (why it is missing).

    Returns:
        Markdown lines.
    """
    lines = ["### Generation (samples vs real test images)", ""]
    if not gen:
        return [*lines, reason, ""]
    evaluation = gen.get("generation", gen)
    groups = evaluation.get("groups") if isinstance(evaluation, Mapping) else None
    if not isinstance(groups, Mapping):
        return [*lines, "From `generation_metrics.json` (unrecognised layout, listed as is):", "", *generic_table(gen)]
    lines += _intro(gen, evaluation)
    for name, group in groups.items():
        lines += _group_lines(name, group)
    return lines + _masked_reconstruction(gen.get("reconstruction") or {})

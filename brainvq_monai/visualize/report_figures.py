"""The figures of ``brainvq report``, drawn from the run's record (``report.json``) and the arrays it names.

Renders only: curves, images, codebook counts and projections were computed and saved by
:mod:`brainvq_monai.apps.report`; nothing here loads a network, samples or trains.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.visualize import plots
from brainvq_monai.visualize.generation_tables import report_number

__all__ = ["REPORT_FIGURES", "Scalars", "draw_report_figures", "load_arrays", "load_curves", "pretty_tag"]

REPORT_FIGURES: dict[str, str] = {
    "loss_curves": "loss_curves.png",
    "validation_metrics": "validation_metrics.png",
    "reconstructions": "reconstructions.png",
    "samples": "samples.png",
    "codebook_usage": "codebook_usage.png",
    "codebook_projection": "codebook_projection.png",
    "memorisation": "memorisation.png",
}
"""Figure key -> file name under ``run_dir/report/`` (``memorisation`` only with ``generation_metrics.json``)."""

Scalars = Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]
"""``{TensorBoard run name: {tag: (steps, values)}}``."""


def pretty_tag(name: str) -> str:
    """A TensorBoard run name as prose (``prior_transformer`` -> ``transformer prior``).

    Args:
        name: the run name.

    Returns:
        the display name.
    """
    return {"vqvae": "VQ-VAE", "prior_transformer": "transformer prior", "prior_pixelcnn": "PixelCNN prior"}.get(
        name, name.replace("_", " ")
    )


def load_arrays(record: Mapping[str, Any], run: Path, key: str) -> dict[str, np.ndarray] | None:
    """The source arrays of one figure (``record["arrays"][key]``, a ``.npz`` file of the run folder).

    Args:
        record: the report record.
        run: the run folder (array paths are relative to it).
        key: the figure's key.

    Returns:
        ``{name: array}``, or ``None`` when the record names no arrays for ``key``.

    Raises:
        BrainVQInputError: the record names a file that is not there.
    """
    rel = (record.get("arrays") or {}).get(key)
    if not rel:
        return None
    path = run / rel
    if not path.is_file():
        raise BrainVQInputError(path, f"missing; recompute the record with `brainvq report --run {run}`")
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def load_curves(record: Mapping[str, Any], run: Path) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The TensorBoard scalars the record's compute stage saved, as ``{run name: {tag: (steps, values)}}``.

    Args:
        record: the report record.
        run: the run folder.

    Returns:
        the scalars (empty without TensorBoard logs).
    """
    arrays = load_arrays(record, run, "curves") or {}
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for s in (record.get("curves") or {}).get("series", []):
        out.setdefault(s["run"], {})[s["tag"]] = (arrays[f"{s['key']}_steps"], arrays[f"{s['key']}_values"])
    return out


# ---------------------------------------------------------------------------------------------------- curves
def _is_iteration_loss(tag: str) -> bool:
    return "loss" in tag and not tag.startswith(("train_", "val_")) and "/" not in tag


def _epoch_axis(series: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> tuple[float, str]:
    """Iterations per epoch of a TensorBoard run (iteration-level tags are converted to epochs)."""
    epoch_tag = next((t for t in ("train_loss", "lr") if t in series), None)
    iter_tags = [t for t in series if _is_iteration_loss(t)]
    if epoch_tag is None or not iter_tags:
        return 1.0, "epoch" if epoch_tag else "iteration"
    last_epoch = float(series[epoch_tag][0].max())
    last_iter = float(max(series[t][0].max() for t in iter_tags))
    return (last_iter / last_epoch if last_epoch > 0 else 1.0), "epoch"


def _loss_curves(series: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> list[dict[str, Any]]:
    """Per-iteration loss terms (raw and smoothed over one epoch), the epoch mean and validation losses."""
    per_epoch, _ = _epoch_axis(series)
    window = max(1, int(round(per_epoch)))
    curves: list[dict[str, Any]] = []
    for colour, tag in enumerate(sorted(t for t in series if _is_iteration_loss(t))):
        steps, values = series[tag]
        x = steps / per_epoch
        curves.append({"label": None, "x": x, "y": values, "style": "raw", "colour": colour})
        curves.append({"label": f"{tag} (per iteration, mean of {window})", "x": x,
                       "y": plots.moving_average(values, window), "style": "line", "colour": colour})  # fmt: skip
    if "train_loss" in series:
        steps, values = series["train_loss"]
        curves.append({"label": "train_loss (epoch mean)", "x": steps, "y": values, "style": "dashed", "colour": 7})
    for tag in (t for t in ("val_loss", "val_nll") if t in series):
        steps, values = series[tag]
        curves.append({"label": f"{tag} (validation)", "x": steps, "y": values, "style": "marker", "colour": 3})
    return curves


def loss_panels(scalars: Scalars) -> list[dict[str, Any]]:
    """Panels of the training-curve figure: loss terms and learning rate of every TensorBoard run.

    Args:
        scalars: ``{run name: {tag: (steps, values)}}``.

    Returns:
        panels for :func:`brainvq_monai.visualize.plots.plot_curve_panels`.
    """
    panels: list[dict[str, Any]] = []
    for run_name in sorted(scalars, key=lambda n: (not n.startswith("vqvae"), n)):  # pipeline order
        series = scalars[run_name]
        curves = _loss_curves(series)
        if curves:
            ys = np.concatenate([np.asarray(c["y"], dtype=np.float64).reshape(-1) for c in curves])
            ys = ys[np.isfinite(ys)]
            logy = bool(ys.size and ys.min() > 0 and ys.max() / ys.min() > 10)
            ylabel = "NLL (nats/token)" if run_name.startswith("prior") else "loss"
            panels.append(
                {"title": f"{pretty_tag(run_name)}: loss terms", "curves": curves, "xlabel": _epoch_axis(series)[1],
                 "ylabel": ylabel + (" (log scale)" if logy else ""), "logy": logy}
            )  # fmt: skip
        lr = [t for t in series if t == "lr" or t.startswith("lr/") or t.endswith("_lr")]
        if lr:
            panels.append(
                {"title": f"{pretty_tag(run_name)}: learning rate", "xlabel": "epoch", "ylabel": "learning rate",
                 "curves": [{"label": t if len(lr) > 1 else None, "x": series[t][0], "y": series[t][1],
                             "style": "line"} for t in lr]}
            )  # fmt: skip
    return panels


# validation panels: (title, tags, y label, test metric of metrics.json drawn as a reference line)
_VAL_PANELS: tuple[tuple[str, tuple[str, ...], str, tuple[str, ...]], ...] = (
    ("VQ-VAE validation SSIM", ("val_ssim", "val_ms_ssim"), "SSIM", ("test_ssim", "test_ms_ssim")),
    ("VQ-VAE validation PSNR", ("val_psnr",), "PSNR (dB)", ("test_psnr",)),
    ("VQ-VAE validation error", ("val_mae", "val_mse"), "error (intensity in [0, 1])", ("test_mae", "test_mse")),
    ("VQ-VAE codebook use (validation)", ("val_codes_used", "codebook/dead_codes"), "codes", ("test_codes_used",)),
    ("VQ-VAE codebook perplexity (validation)", ("val_perplexity",), "perplexity", ("test_perplexity",)),
    ("Prior validation NLL", ("val_nll",), "NLL (nats/token)", ("test_nll",)),
    ("Prior (no likelihood): generated vs validation codes", ("val_code_js",), "code JS (bits)", ("test_code_js",)),
)


def _validation_panel(
    spec: tuple[str, tuple[str, ...], str, tuple[str, ...]],
    merged: Mapping[str, tuple[np.ndarray, np.ndarray]],
    test_metrics: Mapping[str, float],
    num_embeddings: int | None,
) -> dict[str, Any] | None:
    title, tags, ylabel, tests = spec
    present = [t for t in tags if t in merged]
    if not present:
        return None
    curves: list[dict[str, Any]] = [
        {"label": t, "x": merged[t][0], "y": merged[t][1], "style": "marker", "colour": i}
        for i, t in enumerate(present)
    ]
    for i, t in enumerate(tests):
        if t in test_metrics:
            curves.append({"label": f"{t} = {report_number(test_metrics[t])} (best checkpoint)",
                           "y": test_metrics[t], "style": "hline", "colour": i})  # fmt: skip
    if ("codes" in ylabel or "perplexity" in ylabel) and num_embeddings:
        curves.append({"label": f"codebook size K = {num_embeddings}", "y": num_embeddings, "style": "hline",
                       "colour": 7})  # fmt: skip
    return {"title": title, "curves": curves, "xlabel": "epoch", "ylabel": ylabel, "logy": "error" in title}


def validation_panels(
    scalars: Scalars, test_metrics: Mapping[str, float], num_embeddings: int | None
) -> list[dict[str, Any]]:
    """Panels of the validation figure: every ``val_*`` series, with the best checkpoint's test value as a line.

    Args:
        scalars: ``{run name: {tag: (steps, values)}}``.
        test_metrics: ``{test_ssim: ..., test_nll: ...}`` of ``metrics.json``.
        num_embeddings: codebook size (a reference line of the codebook panels).

    Returns:
        panels for :func:`brainvq_monai.visualize.plots.plot_curve_panels`.
    """
    merged: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for series in scalars.values():
        for tag, sv in series.items():
            merged.setdefault(tag, sv)
    panels = [_validation_panel(spec, merged, test_metrics, num_embeddings) for spec in _VAL_PANELS]
    panels = [p for p in panels if p is not None]
    shown = {t for _, tags, _, _ in _VAL_PANELS for t in tags}
    for tag in sorted(t for t in merged if t.startswith("val_") and t not in shown and t != "val_bits_per_dim"):
        panels.append(
            {"title": f"validation {tag[4:]}", "xlabel": "epoch", "ylabel": tag[4:],
             "curves": [{"label": tag, "x": merged[tag][0], "y": merged[tag][1], "style": "marker"}]}
        )  # fmt: skip
    return panels


# ---------------------------------------------------------------------------------------------------- figures
def _test_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    blocks = record.get("metrics") or {}
    return {
        **((blocks.get("reconstruction") or {}).get("metrics") or {}),
        **((blocks.get("prior") or {}).get("metrics") or {}),
    }


def _curve_figures(record: Mapping[str, Any], run: Path, fig_dir: Path) -> dict[str, str]:
    scalars = load_curves(record, run)
    drawn: dict[str, str] = {}
    loss = loss_panels(scalars)
    if loss:
        plots.plot_curve_panels(loss, fig_dir / REPORT_FIGURES["loss_curves"], ncols=2)
        drawn["loss_curves"] = REPORT_FIGURES["loss_curves"]
    val = validation_panels(scalars, _test_metrics(record), (record.get("model") or {}).get("num_embeddings"))
    if val:
        plots.plot_curve_panels(val, fig_dir / REPORT_FIGURES["validation_metrics"], ncols=3, panel_size=(4.2, 2.9))
        drawn["validation_metrics"] = REPORT_FIGURES["validation_metrics"]
    return drawn


def _reconstruction_figure(record: Mapping[str, Any], run: Path, fig_dir: Path) -> dict[str, str]:
    rec, arrays = record.get("reconstructions"), load_arrays(record, run, "reconstructions")
    if not rec or arrays is None or not len(arrays["inputs"]):
        return {}
    titles = [
        f"{c.get('class') or ''} {c.get('subject') or ''}"
        + (f" s{c['slice']}" if c.get("slice") is not None else "")
        + f"\nPSNR {c['psnr']:.1f} dB"
        for c in rec["columns"]
    ]
    plots.plot_image_rows(
        [list(arrays["inputs"]), list(arrays["reconstructions"]), list(arrays["errors"])],
        ["input", "reconstruction", "|error|"],
        fig_dir / REPORT_FIGURES["reconstructions"],
        column_titles=titles,
        cmaps=["gray", "gray", "magma"],
        value_ranges=[(0.0, 1.0), (0.0, 1.0), (0.0, rec["error_display_max"])],
        colorbar_rows=[2],
        colorbar_label="|error|",
        title=f"Test-split reconstructions ({len(titles)} of {rec['num_images']} test images, VQ-VAE best checkpoint)",
    )
    return {"reconstructions": REPORT_FIGURES["reconstructions"]}


def _samples_figure(record: Mapping[str, Any], run: Path, fig_dir: Path) -> dict[str, str]:
    samples, arrays = record.get("samples"), load_arrays(record, run, "samples")
    if not samples or arrays is None or not samples.get("rows"):
        return {}
    rows = [list(arrays[row["key"]]) for row in samples["rows"]]
    plots.plot_image_rows(
        rows,
        [row["label"] for row in samples["rows"]],
        fig_dir / REPORT_FIGURES["samples"],
        title=f"{pretty_tag('prior_' + str(record['model']['prior']))} samples per class, each above real test "
        "images of the class",
    )
    return {"samples": REPORT_FIGURES["samples"]}


def _codebook_figures(record: Mapping[str, Any], run: Path, fig_dir: Path) -> dict[str, str]:
    usage, projection = record.get("codebook_usage"), record.get("codebook_projection")
    drawn: dict[str, str] = {}
    if usage:
        plots.plot_codebook_usage(
            np.asarray(usage["counts"], dtype=np.float64),
            fig_dir / REPORT_FIGURES["codebook_usage"],
            f"Codebook usage on the test split ({usage['images']} images, {usage['tokens']} tokens): "
            f"{usage['used']}/{usage['num_embeddings']} codes used, {usage['dead']} dead, perplexity "
            f"{usage['perplexity']:.1f}",
        )
        drawn["codebook_usage"] = REPORT_FIGURES["codebook_usage"]
    arrays = load_arrays(record, run, "codebook_projection")
    if usage and projection and arrays is not None:
        panels = [(m["name"], arrays[m["key"]], m["xlabel"], m["ylabel"]) for m in projection["methods"]]
        plots.plot_codebook_projection(
            panels,
            np.asarray(usage["counts"], dtype=np.float64),
            fig_dir / REPORT_FIGURES["codebook_projection"],
            f"Codebook vectors ({projection['num_embeddings']} x {projection['embedding_dim']}), point area by "
            "test-split usage",
        )
        drawn["codebook_projection"] = REPORT_FIGURES["codebook_projection"]
    return drawn


def memorisation_values(gen: Mapping[str, Any] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-image nearest-training-image SSIM of the samples and of the test images (group ``all``).

    Args:
        gen: the generation record (``generation_metrics.json``), or ``None``.

    Returns:
        ``(samples, test images)`` values, or ``None`` when the record has none.
    """
    groups = ((gen or {}).get("generation") or {}).get("groups") or {}
    mem = (groups.get("all") or {}).get("memorisation") or {}
    s, t = mem.get("generated_values"), mem.get("real_test_values")
    if not s or not t:
        return None
    return np.asarray(s, dtype=np.float64), np.asarray(t, dtype=np.float64)


def _padded_range(values: np.ndarray, pad: float = 0.05) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    margin = max(hi - lo, 1e-3) * pad
    return max(0.0, lo - margin), min(1.0, hi + margin)


def _memorisation_figure(record: Mapping[str, Any], fig_dir: Path) -> dict[str, str]:
    values = memorisation_values((record.get("generation") or {}).get("record"))
    if values is None:
        return {}
    plots.plot_histograms(
        {"samples": values[0], "real test images": values[1]},
        fig_dir / REPORT_FIGURES["memorisation"],
        "Memorisation check: SSIM to the nearest training image (generation_metrics.json)",
        "SSIM to the nearest training image",
        bins=30,
        value_range=_padded_range(np.concatenate(values)),
    )
    return {"memorisation": REPORT_FIGURES["memorisation"]}


def draw_report_figures(record: Mapping[str, Any], run_dir: str | os.PathLike) -> dict[str, str]:
    """Draws every figure the record has data for, as PNGs under ``run_dir/report/``.

    Args:
        record: the report record (``report.json``).
        run_dir: the run folder (the record's array paths are relative to it).

    Returns:
        ``{figure key: file name}`` of the figures drawn, in the report's order.
    """
    run = Path(os.fspath(run_dir))
    fig_dir = run / "report"
    fig_dir.mkdir(parents=True, exist_ok=True)
    return {
        **_curve_figures(record, run, fig_dir),
        **_reconstruction_figure(record, run, fig_dir),
        **_codebook_figures(record, run, fig_dir),
        **_samples_figure(record, run, fig_dir),
        **_memorisation_figure(record, fig_dir),
    }

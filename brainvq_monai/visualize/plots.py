"""Matplotlib figures of a run's report: training curves, image grids, codebook usage and codebook projections.

Every function takes plain arrays (no run folder, no model), draws one figure with the ``Agg`` backend and saves it
as a PNG; :mod:`brainvq_monai.apps.report_compute` computes the data, :mod:`brainvq_monai.visualize.report_figures`
draws it from the report's record. Images are shown the way a viewer shows them, through
:func:`~brainvq_monai.visualize.grids.to_display_slice` (2D arrays are ``(C, W, H)``, column index first).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display, no network; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from brainvq_monai.visualize.grids import to_display_slice  # noqa: E402

__all__ = [
    "Curve",
    "plot_curve_panels",
    "plot_image_rows",
    "plot_codebook_usage",
    "plot_codebook_projection",
    "plot_histograms",
    "moving_average",
    "pca_2d",
]

DPI = 100
# one colour per series within a panel (colour-blind safe, matplotlib's "tab10" order)
_COLOURS = plt.get_cmap("tab10").colors

Curve = Mapping
"""One series of a panel: a mapping with ``label`` (``None``: not in the legend), ``x``, ``y``, ``style`` and optionally
``colour`` (an index into the palette; default: the series' position). ``style`` is ``"line"``, ``"raw"`` (faint line
of noisy values), ``"marker"`` (line with dots, for sparse validation values), ``"dashed"`` or ``"hline"`` (a horizontal dashed
reference at ``y``, a number)."""


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    out = Path(os.fspath(path))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return out


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first values average what is there so far).

    Args:
        values: 1D series.
        window: window length (``<= 1``: no smoothing).

    Returns:
        the smoothed series, same length.
    """
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or values.size == 0:
        return values
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


def plot_curve_panels(
    panels: Sequence[Mapping],
    path: str | os.PathLike,
    ncols: int = 2,
    panel_size: tuple[float, float] = (5.0, 3.0),
    title: str | None = None,
) -> Path:
    """A grid of line-plot panels.

    Args:
        panels: one mapping per panel with ``title``, ``curves`` (a sequence of :data:`Curve`), and optionally
            ``xlabel``, ``ylabel``, ``logy`` (log-scale y axis).
        path: PNG to write.
        ncols: panels per row.
        panel_size: inches per panel.
        title: figure title.

    Returns:
        the written path.
    """
    if not panels:
        raise ValueError("panels: nothing to plot")
    ncols = max(1, min(ncols, len(panels)))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False, constrained_layout=True
    )
    for ax, panel in zip(axes.flat, panels):
        for i, curve in enumerate(panel["curves"]):
            colour = _COLOURS[int(curve.get("colour", i)) % len(_COLOURS)]
            style, label, y = curve.get("style", "line"), curve.get("label"), curve["y"]
            if style == "hline":
                ax.axhline(
                    float(np.asarray(y).reshape(-1)[0]), color=colour, linestyle="--", linewidth=1.0, label=label
                )
            elif style == "raw":
                ax.plot(curve["x"], y, color=colour, alpha=0.25, linewidth=0.7, label=label)
            elif style == "dashed":
                ax.plot(curve["x"], y, color=colour, linestyle="--", linewidth=1.0, label=label)
            elif style == "marker":
                ax.plot(curve["x"], y, color=colour, marker="o", markersize=3, linewidth=1.2, label=label)
            else:
                ax.plot(curve["x"], y, color=colour, linewidth=1.4, label=label)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel(panel.get("xlabel", "epoch"))
        ax.set_ylabel(panel.get("ylabel", ""))
        if panel.get("logy"):
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(True, alpha=0.3)
        if any(c.get("label") for c in panel["curves"]):
            ax.legend(fontsize=7, loc="best", framealpha=0.8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_image_rows(
    rows: Sequence[Sequence[torch.Tensor | np.ndarray]],
    row_labels: Sequence[str],
    path: str | os.PathLike,
    column_titles: Sequence[str] | None = None,
    cmaps: Sequence[str] | None = None,
    value_ranges: Sequence[tuple[float, float]] | None = None,
    colorbar_rows: Sequence[int] = (),
    title: str | None = None,
    cell_inches: float = 1.25,
    colorbar_label: str | None = None,
) -> Path:
    """Images in labelled rows (one cell per image, shown as a viewer shows it).

    Args:
        rows: ``rows[i][j]``: channel-first image (any form accepted by
            :func:`~brainvq_monai.visualize.grids.to_display_slice`).
        row_labels: one label per row (left of the row).
        path: PNG to write.
        column_titles: optional title above each column of the first row.
        cmaps: colour map per row (default ``"gray"``).
        value_ranges: ``(vmin, vmax)`` per row (default ``(0, 1)``).
        colorbar_rows: rows that get a colour bar at their right.
        title: figure title.
        cell_inches: size of one cell.
        colorbar_label: label of the colour bars.

    Returns:
        the written path.
    """
    if not rows or not any(len(r) for r in rows):
        raise ValueError("rows: no images to show")
    nrows, ncols = len(rows), max(len(r) for r in rows)
    bar = bool(colorbar_rows)  # a narrow extra column holds the colour bars, so every image cell keeps its size
    fig, axes = plt.subplots(
        nrows,
        ncols + bar,
        figsize=(cell_inches * ncols + 1.4 + 0.5 * bar, cell_inches * nrows + (0.5 if title else 0.1)),
        squeeze=False,
        gridspec_kw={"wspace": 0.03, "hspace": 0.08, "width_ratios": [1.0] * ncols + [0.07] * bar},
    )
    for i, row in enumerate(rows):
        cmap = cmaps[i] if cmaps else "gray"
        vmin, vmax = value_ranges[i] if value_ranges else (0.0, 1.0)
        shown = None
        for j in range(ncols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j >= len(row):
                continue
            shown = ax.imshow(to_display_slice(row[j]), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            if i == 0 and column_titles is not None and j < len(column_titles):
                ax.set_title(column_titles[j], fontsize=7)
        axes[i, 0].set_ylabel(row_labels[i], fontsize=8, rotation=0, ha="right", va="center", labelpad=6)
        if bar:
            if i in colorbar_rows and shown is not None:
                cbar = fig.colorbar(shown, cax=axes[i, -1])
                cbar.ax.tick_params(labelsize=6)
                if colorbar_label:
                    cbar.set_label(colorbar_label, fontsize=6)
            else:
                axes[i, -1].axis("off")
    if title:  # above the column titles
        fig.suptitle(title, fontsize=10, y=1.0 + (0.28 if column_titles is not None else 0.1) / fig.get_figheight())
    return _save(fig, path)


def plot_codebook_usage(counts: np.ndarray, path: str | os.PathLike, title: str) -> Path:
    """Codebook usage sorted from the most used code down, dead codes (never used) marked.

    Args:
        counts: ``(K,)`` token count of each code.
        path: PNG to write.
        title: figure title (say which split and how many tokens).

    Returns:
        the written path.
    """
    counts = np.asarray(counts, dtype=np.float64)
    k, total = counts.size, max(counts.sum(), 1.0)
    order = np.argsort(-counts, kind="stable")
    freq = counts[order] / total
    used = freq > 0
    fig, ax = plt.subplots(figsize=(7.5, 3.2), constrained_layout=True)
    ranks = np.arange(1, k + 1)
    ax.bar(ranks[used], freq[used], width=1.0, color=_COLOURS[0], edgecolor="white", linewidth=0.3, label="used codes")
    if (~used).any():
        ax.plot(ranks[~used], np.zeros((~used).sum()), "x", color="tab:red", label=f"dead codes ({(~used).sum()})")
    ax.axhline(1.0 / k, color="gray", linestyle="--", linewidth=1.0, label=f"uniform use (1/{k})")
    ax.set_xlim(0.5, k + 0.5)
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("fraction of tokens")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projection on the first two principal components.

    Args:
        points: ``(N, D)`` rows.

    Returns:
        ``(N, 2)`` coordinates and the ``(2,)`` explained-variance ratios.
    """
    x = np.asarray(points, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    var = s**2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    coords = x @ vt[:2].T
    if coords.shape[1] < 2:  # D == 1
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
        ratio = np.pad(ratio, (0, 2 - ratio.size))
    return coords, ratio


def plot_codebook_projection(
    projections: Sequence[tuple[str, np.ndarray, str, str]],
    counts: np.ndarray,
    path: str | os.PathLike,
    title: str,
    annotate_top: int = 5,
) -> Path:
    """2D projections of the codebook vectors, point area by usage, dead codes as crosses.

    Args:
        projections: ``(panel title, (K, 2) coordinates, x label, y label)`` per panel (PCA, UMAP, ...).
        counts: ``(K,)`` token count of each code.
        path: PNG to write.
        title: figure title.
        annotate_top: label this many most-used codes with their index.

    Returns:
        the written path.
    """
    counts = np.asarray(counts, dtype=np.float64)
    freq = counts / max(counts.sum(), 1.0)
    used = counts > 0
    sizes = 8 + 400 * np.sqrt(freq / max(freq.max(), 1e-12))
    top = np.argsort(-counts, kind="stable")[:annotate_top]
    fig, axes = plt.subplots(
        1, len(projections), figsize=(4.6 * len(projections) + 0.8, 4.0), squeeze=False, constrained_layout=True
    )
    colour_values = np.log10(np.where(used, freq, np.nan))
    scatter = None
    for ax, (panel_title, xy, xlabel, ylabel) in zip(axes[0], projections):
        xy = np.asarray(xy)
        scatter = ax.scatter(
            xy[used, 0], xy[used, 1], s=sizes[used], c=colour_values[used], cmap="viridis", alpha=0.8,
            edgecolors="k", linewidths=0.3,
        )  # fmt: skip
        if (~used).any():
            ax.scatter(xy[~used, 0], xy[~used, 1], marker="x", color="tab:red", s=25, label="dead code")
            ax.legend(fontsize=8, loc="best")
        for i in top:
            if used[i]:
                ax.annotate(str(i), xy[i], fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    if scatter is not None and used.any():
        cbar = fig.colorbar(scatter, ax=list(axes[0]), fraction=0.04, pad=0.02)
        cbar.set_label("log10 fraction of tokens")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_histograms(
    series: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    title: str,
    xlabel: str,
    bins: int = 20,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> Path:
    """Overlaid histograms, each normalised to a density so sets of different sizes compare.

    Args:
        series: ``{label: 1D values}``.
        path: PNG to write.
        title: figure title.
        xlabel: x axis label.
        bins: number of bins over ``value_range``.
        value_range: histogram range.

    Returns:
        the written path.
    """
    fig, ax = plt.subplots(figsize=(6.0, 3.2), constrained_layout=True)
    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    for i, (label, values) in enumerate(series.items()):
        values = np.asarray(values, dtype=np.float64)
        ax.hist(values, bins=edges, density=True, alpha=0.45, color=_COLOURS[i % len(_COLOURS)],
                label=f"{label} (n = {values.size}, median {np.median(values):.3f})")  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)

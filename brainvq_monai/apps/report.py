"""``brainvq report``: a Markdown report with figures of one finished run (``brainvq demo`` or the bundle configs).

``make_report(run_dir)`` writes ``run_dir/report.md`` and PNG figures under ``run_dir/report/``: training and
validation curves from the run's TensorBoard logs, a reconstruction grid of test images, a sample grid per class,
the codebook usage over the test split and a 2D projection of the codebook, and the metric table (reconstruction,
prior NLL and the generation metrics of ``generation_metrics.json``, each with its real-vs-real floor). Every number
in the report is read from the run's files or computed from the run's own models on the run's own test split.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainvq_monai.utils.environment import versions
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["make_report", "read_tensorboard_scalars", "REPORT_FIGURES"]

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

_SAMPLE_FILE = re.compile(r"^sample_(?P<tag>.+)_(?P<num>\d+)\.(png|nii|nii\.gz)$")


# ---------------------------------------------------------------------------------------------------- run files
def _check_run_dir(run: Path) -> None:
    if not run.is_dir():
        raise BrainVQInputError(run, "run folder not found")
    missing = [name for name in ("metrics.json", "models") if not (run / name).exists()]
    if missing:
        raise BrainVQInputError(
            run, f"not a finished brainvq run: missing {' and '.join(missing)} (make one with `brainvq demo --out DIR`)"
        )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BrainVQInputError(path, f"not valid JSON ({err.msg}, line {err.lineno})") from None


def read_tensorboard_scalars(log_dir: str | os.PathLike) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Every scalar series of every TensorBoard run under ``log_dir``.

    Args:
        log_dir: a folder of TensorBoard runs (``tensorboard/vqvae``, ``tensorboard/prior_transformer``, ...), or
            one run folder.

    Returns:
        ``{run name: {tag: (steps, values)}}``, runs named by their folder relative to ``log_dir`` (``"."`` for
        event files directly in it); event files of one run are merged, a later value replacing an earlier one
        at the same step.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = Path(os.fspath(log_dir))
    runs: dict[str, dict[str, dict[int, float]]] = {}
    for event_file in sorted(root.rglob("events.out.tfevents.*")):
        name = str(event_file.parent.relative_to(root))
        acc = EventAccumulator(
            str(event_file), size_guidance={"scalars": 0, "images": 1, "histograms": 1, "tensors": 1}
        )
        acc.Reload()
        series = runs.setdefault(name, {})
        for tag in acc.Tags().get("scalars", []):
            points = series.setdefault(tag, {})
            for event in acc.Scalars(tag):
                points[int(event.step)] = float(event.value)
    return {
        name: {
            tag: (np.array(sorted(p), dtype=np.int64), np.array([p[s] for s in sorted(p)], dtype=np.float64))
            for tag, p in series.items()
        }
        for name, series in runs.items()
    }


# ---------------------------------------------------------------------------------------------------- formatting
def _fmt(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (integers as integers); anything else as text."""
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not np.isfinite(v):
            return str(v)
        if v == round(v) and abs(v) < 1e6:
            return str(int(round(v)))
        return f"{v:.{digits}g}"
    return str(value)


def _pretty_tag(name: str) -> str:
    return {"vqvae": "VQ-VAE", "prior_transformer": "transformer prior", "prior_pixelcnn": "PixelCNN prior"}.get(
        name, name.replace("_", " ")
    )


# ---------------------------------------------------------------------------------------------------- curves
def _epoch_axis(series: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> tuple[float, str]:
    """Iterations per epoch of a TensorBoard run (iteration-level tags are converted to epochs)."""
    epoch_tag = next((t for t in ("train_loss", "lr") if t in series), None)
    iter_tags = [t for t in series if _is_iteration_loss(t)]
    if epoch_tag is None or not iter_tags:
        return 1.0, "epoch" if epoch_tag else "iteration"
    last_epoch = float(series[epoch_tag][0].max())
    last_iter = float(max(series[t][0].max() for t in iter_tags))
    return (last_iter / last_epoch if last_epoch > 0 else 1.0), "epoch"


def _is_iteration_loss(tag: str) -> bool:
    return "loss" in tag and not tag.startswith(("train_", "val_")) and "/" not in tag


def _loss_panels(scalars: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for run_name in sorted(scalars, key=lambda n: (not n.startswith("vqvae"), n)):  # pipeline order
        series = scalars[run_name]
        per_epoch, xlabel = _epoch_axis(series)
        curves: list[dict[str, Any]] = []
        colour = 0
        for tag in sorted(t for t in series if _is_iteration_loss(t)):
            steps, values = series[tag]
            x = steps / per_epoch
            window = max(1, int(round(per_epoch)))
            curves.append({"label": None, "x": x, "y": values, "style": "raw", "colour": colour})
            curves.append(
                {"label": f"{tag} (per iteration, mean of {window})", "x": x, "y": _smooth(values, window),
                 "style": "line", "colour": colour}
            )  # fmt: skip
            colour += 1
        if "train_loss" in series:
            steps, values = series["train_loss"]
            curves.append({"label": "train_loss (epoch mean)", "x": steps, "y": values, "style": "dashed", "colour": 7})
        for tag in (t for t in ("val_loss", "val_nll") if t in series):
            steps, values = series[tag]
            curves.append({"label": f"{tag} (validation)", "x": steps, "y": values, "style": "marker", "colour": 3})
        if curves:
            ys = np.concatenate([np.asarray(c["y"], dtype=np.float64).reshape(-1) for c in curves])
            ys = ys[np.isfinite(ys)]
            logy = bool(ys.size and ys.min() > 0 and ys.max() / ys.min() > 10)
            ylabel = "NLL (nats/token)" if run_name.startswith("prior") else "loss"
            panels.append(
                {"title": f"{_pretty_tag(run_name)}: loss terms", "curves": curves, "xlabel": xlabel,
                 "ylabel": ylabel + (" (log scale)" if logy else ""), "logy": logy}
            )  # fmt: skip
        lr = [t for t in series if t == "lr" or t.startswith("lr/") or t.endswith("_lr")]
        if lr:
            panels.append(
                {"title": f"{_pretty_tag(run_name)}: learning rate", "xlabel": "epoch", "ylabel": "learning rate",
                 "curves": [{"label": t if len(lr) > 1 else None, "x": series[t][0], "y": series[t][1],
                             "style": "line"} for t in lr]}
            )  # fmt: skip
    return panels


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    from brainvq_monai.visualize.plots import moving_average

    return moving_average(values, window)


# validation panels: (title, tags, y label, test metric of metrics.json drawn as a reference line)
_VAL_PANELS: tuple[tuple[str, tuple[str, ...], str, tuple[str, ...]], ...] = (
    ("VQ-VAE validation SSIM", ("val_ssim", "val_ms_ssim"), "SSIM", ("test_ssim", "test_ms_ssim")),
    ("VQ-VAE validation PSNR", ("val_psnr",), "PSNR (dB)", ("test_psnr",)),
    ("VQ-VAE validation error", ("val_mae", "val_mse"), "error (intensity in [0, 1])", ("test_mae", "test_mse")),
    ("VQ-VAE codebook use (validation)", ("val_codes_used", "codebook/dead_codes"), "codes", ("test_codes_used",)),
    ("VQ-VAE codebook perplexity (validation)", ("val_perplexity",), "perplexity", ("test_perplexity",)),
    ("Prior validation NLL", ("val_nll",), "NLL (nats/token)", ("test_nll",)),
)


def _validation_panels(
    scalars: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    test_metrics: Mapping[str, float],
    num_embeddings: int | None,
) -> list[dict[str, Any]]:
    merged: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for series in scalars.values():
        for tag, sv in series.items():
            merged.setdefault(tag, sv)
    panels, shown = [], set()
    for title, tags, ylabel, tests in _VAL_PANELS:
        present = [t for t in tags if t in merged]
        if not present:
            continue
        shown.update(present)
        curves: list[dict[str, Any]] = [
            {"label": t, "x": merged[t][0], "y": merged[t][1], "style": "marker", "colour": i}
            for i, t in enumerate(present)
        ]
        for i, t in enumerate(tests):
            if t in test_metrics:
                curves.append(
                    {"label": f"{t} = {_fmt(test_metrics[t])} (best checkpoint)", "y": test_metrics[t],
                     "style": "hline", "colour": i}
                )  # fmt: skip
        if "codes" in ylabel or "perplexity" in ylabel:
            if num_embeddings:
                curves.append({"label": f"codebook size K = {num_embeddings}", "y": num_embeddings,
                               "style": "hline", "colour": 7})  # fmt: skip
        panels.append({"title": title, "curves": curves, "xlabel": "epoch", "ylabel": ylabel,
                       "logy": "error" in title})  # fmt: skip
    for tag in sorted(t for t in merged if t.startswith("val_") and t not in shown and t != "val_bits_per_dim"):
        panels.append(
            {"title": f"validation {tag[4:]}", "xlabel": "epoch", "ylabel": tag[4:],
             "curves": [{"label": tag, "x": merged[tag][0], "y": merged[tag][1], "style": "marker"}]}
        )  # fmt: skip
    return panels


# ---------------------------------------------------------------------------------------------------- images
def _pick(labels: torch.Tensor, classes: Sequence[int], per_class: int) -> list[int]:
    """Evenly spaced indices of each class (in datalist order), ``per_class`` of each."""
    picked: list[int] = []
    for c in classes:
        idx = torch.nonzero(labels == c).flatten().tolist() if c >= 0 else list(range(len(labels)))
        if not idx:
            continue
        take = np.unique(np.linspace(0, len(idx) - 1, min(per_class, len(idx))).round().astype(int))
        picked.extend(idx[i] for i in take)
    return picked


@torch.no_grad()
def _encode_all(
    vqvae: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstructions and code indices of ``images`` with the run's VQ-VAE."""
    recons, codes = [], []
    vqvae.eval()
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        recon, _, idx = vqvae.forward_with_indices(batch)
        recons.append(recon.float().cpu())
        codes.append(idx.cpu())
    return torch.cat(recons), torch.cat(codes)


def _unit_range(image: torch.Tensor) -> torch.Tensor:
    """An image read from a sample file back in [0, 1] (8-bit PNGs hold 0..255)."""
    image = torch.as_tensor(image).float()
    return image / 255.0 if float(image.max()) > 1.0 else image


def _read_sample_files(samples_dir: Path) -> dict[str, list[Path]]:
    """``{class tag: [files]}`` of ``sample_<tag>_<NNNN>.<ext>`` files, in number order."""
    found: dict[str, list[tuple[int, Path]]] = {}
    if samples_dir.is_dir():
        for f in samples_dir.iterdir():
            m = _SAMPLE_FILE.match(f.name)
            if m:
                found.setdefault(m.group("tag"), []).append((int(m.group("num")), f))
    return {tag: [p for _, p in sorted(v)] for tag, v in found.items()}


# ---------------------------------------------------------------------------------------------------- tables
_REC_ROWS: tuple[tuple[str, str], ...] = (
    ("test_ssim", "SSIM (whole image)"),
    ("test_ms_ssim", "MS-SSIM (whole image)"),
    ("test_psnr", "PSNR (dB, whole image)"),
    ("test_mae", "MAE"),
    ("test_mse", "MSE"),
    ("test_codes_used", "codes used"),
    ("test_perplexity", "codebook perplexity"),
)
_PRIOR_ROWS: tuple[tuple[str, str], ...] = (("test_nll", "NLL (nats/token)"), ("test_bits_per_dim", "bits/dim"))


def _metric_section(metrics: Mapping[str, Any], key: str, rows: Sequence[tuple[str, str]], heading: str) -> list[str]:
    block = metrics.get(key) or {}
    values = block.get("metrics") or {}
    if not values:
        return [f"### {heading}", "", f"not in metrics.json (no `{key}` entry).", ""]
    lines = [
        f"### {heading}",
        "",
        f"From `metrics.json` (`{key}`): split `{block.get('split', '?')}`, {_fmt(block.get('num_images'))} images, "
        f"checkpoint `{Path(str(block.get('checkpoint', '?'))).name}`, written {block.get('written', '?')}.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    listed = set()
    for name, label in rows:
        if name in values:
            lines.append(f"| {label} | {_fmt(values[name])} |")
            listed.add(name)
    lines += [f"| {name} | {_fmt(v)} |" for name, v in sorted(values.items()) if name not in listed]
    return [*lines, ""]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = tree
    return out


def _ci(values: Any) -> str:
    return f"[{_fmt(values[0])}, {_fmt(values[1])}]" if isinstance(values, Sequence) and len(values) == 2 else "-"


def _generation_section(gen: Mapping[str, Any] | None, reason: str) -> list[str]:
    lines = ["### Generation (samples vs real test images)", ""]
    if not gen:
        return [*lines, reason, ""]
    evaluation = gen.get("generation", gen)
    groups = evaluation.get("groups") if isinstance(evaluation, Mapping) else None
    if not isinstance(groups, Mapping):
        return [*lines, "From `generation_metrics.json` (unrecognised layout, listed as is):", "", *_generic_table(gen)]
    sampling = gen.get("sampling") or {}
    fn = gen.get("feature_net") or {}
    check = fn.get("test_check") or {}
    lines += [
        f"From `generation_metrics.json`: {_fmt(sampling.get('num_samples'))} samples "
        f"({_fmt(sampling.get('num_samples_per_class'))} per class) of the {gen.get('prior', '?')} prior, "
        f"temperature {_fmt(sampling.get('temperature'))}, seed {_fmt(sampling.get('seed', gen.get('seed')))}; "
        f"metric seed {_fmt(evaluation.get('seed'))}, k = {_fmt(evaluation.get('k'))} for precision / recall / "
        f"density / coverage, {_fmt(evaluation.get('num_bootstrap'))} bootstrap replicates for the 95% CIs.",
        "",
        f"Features: in-house network `{fn.get('version', '?')}` trained on the training split only (data hash "
        f"`{str(fn.get('data_hash', '?'))[:12]}`); on the test split it scores class accuracy "
        f"{_fmt(check.get('class_accuracy'))} and slice-position MAE {_fmt(check.get('position_mae'))}.",
        "",
        "*floor*: the same metric for real training images (as many as the samples) scored against the test images "
        "like the samples, i.e. the value of a perfect generator at this sample size. Diversity (mean pairwise "
        "MS-SSIM) should match the test images' value, not be minimised. Memorisation: SSIM from each sample to its "
        "nearest training image, next to the same for test images.",
        "",
    ]
    for name, group in groups.items():
        c = group.get("counts") or {}
        lines += [
            f"**{'all classes' if name == 'all' else f'class {name}'}**: {_fmt(c.get('samples'))} samples, "
            f"{_fmt(c.get('real_test'))} test images, floor from {_fmt(c.get('real_floor_subset'))} training images.",
            "",
            "| metric | generated | 95% CI | floor (real train vs test) | 95% CI | better |",
            "|---|---|---|---|---|---|",
        ]
        for metric, row in (group.get("metrics") or {}).items():
            if "generated_std" in row:
                gci, fci = f"+/- {_fmt(row['generated_std'])} (sd)", f"+/- {_fmt(row.get('real_floor_std'))} (sd)"
            else:
                gci, fci = _ci(row.get("generated_ci")), _ci(row.get("real_floor_ci"))
            better = row.get("better", "")
            if "real_test" in row:
                better = f"match test: {_fmt(row['real_test'])} {_ci(row.get('real_test_ci'))}"
            lines.append(
                f"| {metric} | {_fmt(row.get('generated'))} | {gci} | {_fmt(row.get('real_floor'))} | {fci} | "
                f"{better} |"
            )
        mem = group.get("memorisation") or {}
        if mem:
            lines += [
                "",
                f"Nearest-training-image SSIM: samples median {_fmt((mem.get('generated_quantiles') or {}).get('q50'))}"
                f" (max {_fmt(mem.get('generated_max'))}), test images median "
                f"{_fmt((mem.get('real_test_quantiles') or {}).get('q50'))} (max {_fmt(mem.get('real_test_max'))}); "
                f"samples above the test images' max: {_fmt(100 * float(mem.get('copy_fraction', float('nan'))))}%.",
            ]
        for note in group.get("notes") or []:
            lines += ["", f"Note: {note}."]
        lines.append("")
    recon = gen.get("reconstruction") or {}
    rows = {k: v for k, v in recon.items() if isinstance(v, Mapping)}
    if rows:
        lines += [
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
                f"| {name} | {_fmt(r.get('num_images'))} | {_fmt(r.get('ssim_brain'))} | {_ci(r.get('ssim_brain_ci'))}"
                f" | {_fmt(r.get('psnr_brain'))} | {_ci(r.get('psnr_brain_ci'))} | {_fmt(r.get('ssim_whole_image'))} "
                f"| {_fmt(r.get('psnr_whole_image'))} |"
            )
        lines.append("")
    return lines


def _generic_table(tree: Mapping[str, Any]) -> list[str]:
    rows = [f"| {path} | {_fmt(v)} |" for path, v in _flatten(tree).items() if _is_number(v) or isinstance(v, str)]
    return ["| entry | value |", "|---|---|", *rows, ""]


def _padded_range(values: np.ndarray, pad: float = 0.05) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    margin = max(hi - lo, 1e-3) * pad
    return max(0.0, lo - margin), min(1.0, hi + margin)


def _memorisation_values(gen: Mapping[str, Any] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-image nearest-training-image SSIM of the samples and of the test images (all classes)."""
    groups = ((gen or {}).get("generation") or {}).get("groups") or {}
    mem = (groups.get("all") or {}).get("memorisation") or {}
    s, t = mem.get("generated_values"), mem.get("real_test_values")
    if not s or not t:
        return None
    return np.asarray(s, dtype=np.float64), np.asarray(t, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------- report
def make_report(
    run_dir: str | os.PathLike,
    generation: bool = True,
    device: str | torch.device | None = None,
    images_per_class: int = 4,
    samples_per_class: int = 8,
    seed: int = 0,
) -> Path:
    """Writes ``run_dir/report.md`` and its figures under ``run_dir/report/``.

    Args:
        run_dir: a finished run folder (``brainvq demo --out DIR``): ``metrics.json``, ``models/``,
            ``tensorboard/``, ``samples/``, the datalist and run settings (read through
            :func:`brainvq_monai.apps.run_loader.load_run`).
        generation: read ``generation_metrics.json``, computing it first with
            :func:`brainvq_monai.apps.generation_eval.run_generation_eval` when it is missing; ``False``: use the
            file only if it is already there.
        device: where the models run (default: CUDA when available, else CPU).
        images_per_class: test images per class in the reconstruction grid.
        samples_per_class: samples per class in the sample grid (files of ``run_dir/samples`` first; fresh samples,
            seeded by ``seed``, when there are none).
        seed: seed of fresh samples.

    Returns:
        the path of ``report.md``.
    """
    from brainvq_monai.apps.run_loader import load_run
    from brainvq_monai.metrics.codebook import histogram_perplexity
    from brainvq_monai.visualize import plots

    run = Path(os.path.abspath(os.fspath(run_dir)))
    _check_run_dir(run)
    metrics = _read_json(run / "metrics.json")
    summary = _read_json(run / "demo_summary.json")
    run_config = _read_json(run / "run_config.json")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    art = load_run(run, device=dev)
    fig_dir = run / "report"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    notes: dict[str, str] = {}
    class_names = {int(k): str(v) for k, v in (art.class_names or {}).items()}
    classes = sorted(class_names) or [-1]
    num_embeddings = int(art.vqvae.ema_quantizer.num_embeddings)

    # --- curves
    tb_dir = run / "tensorboard"
    scalars = read_tensorboard_scalars(tb_dir) if tb_dir.is_dir() else {}
    test_metrics = {
        **((metrics.get("reconstruction") or {}).get("metrics") or {}),
        **((metrics.get("prior") or {}).get("metrics") or {}),
    }
    loss_panels = _loss_panels(scalars)
    if loss_panels:
        plots.plot_curve_panels(loss_panels, fig_dir / REPORT_FIGURES["loss_curves"], ncols=2)
        figures["loss_curves"] = REPORT_FIGURES["loss_curves"]
    val_panels = _validation_panels(scalars, test_metrics, num_embeddings)
    if val_panels:
        plots.plot_curve_panels(val_panels, fig_dir / REPORT_FIGURES["validation_metrics"], ncols=3,
                                panel_size=(4.2, 2.9))  # fmt: skip
        figures["validation_metrics"] = REPORT_FIGURES["validation_metrics"]

    # --- reconstructions and codebook usage over the whole test split
    images, labels = art.load_images("test")
    labels = labels if labels is not None else torch.full((len(images),), -1, dtype=torch.long)
    recon, codes = _encode_all(art.vqvae, images, dev)
    recon = recon.clamp(0, 1)
    picked = _pick(labels, classes, images_per_class)
    err = (recon[picked] - images[picked]).abs()
    err_max = float(max(torch.quantile(err.flatten(), 0.99), 1e-3))  # a few outliers would darken the whole row
    mse = ((recon[picked] - images[picked]) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    psnr = (10 * torch.log10(1.0 / mse)).tolist()
    items = art.datalist["test"]
    col_titles = [
        f"{class_names.get(int(labels[i]), '')} {items[i].get('subject', '')}"
        + (f" s{items[i]['slice']}" if "slice" in items[i] else "")
        + f"\nPSNR {p:.1f} dB"
        for i, p in zip(picked, psnr)
    ]
    plots.plot_image_rows(
        [list(images[picked]), list(recon[picked]), list(err)],
        ["input", "reconstruction", "|error|"],
        fig_dir / REPORT_FIGURES["reconstructions"],
        column_titles=col_titles,
        cmaps=["gray", "gray", "magma"],
        value_ranges=[(0.0, 1.0), (0.0, 1.0), (0.0, err_max)],
        colorbar_rows=[2],
        colorbar_label="|error|",
        title=f"Test-split reconstructions ({len(picked)} of {len(images)} test images, VQ-VAE best checkpoint)",
    )
    figures["reconstructions"] = REPORT_FIGURES["reconstructions"]

    counts = torch.bincount(codes.flatten().long(), minlength=num_embeddings).double()
    used = int((counts > 0).sum())
    perplexity = float(histogram_perplexity(counts))
    usage = {"images": len(images), "tokens": int(counts.sum()), "used": used, "dead": num_embeddings - used,
             "perplexity": perplexity}  # fmt: skip
    plots.plot_codebook_usage(
        counts.numpy(),
        fig_dir / REPORT_FIGURES["codebook_usage"],
        f"Codebook usage on the test split ({usage['images']} images, {usage['tokens']} tokens): "
        f"{used}/{num_embeddings} codes used, {usage['dead']} dead, perplexity {perplexity:.1f}",
    )
    figures["codebook_usage"] = REPORT_FIGURES["codebook_usage"]

    codebook = art.vqvae.ema_quantizer.embedding.weight.detach().float().cpu().numpy()
    xy, ratio = plots.pca_2d(codebook)
    projections = [("PCA", xy, f"PC1 ({100 * ratio[0]:.1f}% of variance)", f"PC2 ({100 * ratio[1]:.1f}% of variance)")]
    try:
        import umap  # type: ignore[import-not-found]

        emb = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, len(codebook) - 1)).fit_transform(
            codebook
        )
        projections.append(("UMAP", np.asarray(emb), "UMAP 1", "UMAP 2"))
        notes["projection"] = "PCA and UMAP (`umap-learn` is installed)."
    except ImportError:
        notes["projection"] = "PCA only (UMAP is drawn too when `umap-learn` is installed)."
    plots.plot_codebook_projection(
        projections,
        counts.numpy(),
        fig_dir / REPORT_FIGURES["codebook_projection"],
        f"Codebook vectors ({num_embeddings} x {codebook.shape[1]}), point area by test-split usage",
    )
    figures["codebook_projection"] = REPORT_FIGURES["codebook_projection"]

    # --- samples per class, next to real test images of the class
    samples_info = _read_json(run / "samples" / "samples.json")
    files = _read_sample_files(run / "samples")
    rows, row_labels = [], []
    if files:
        from brainvq_monai.data.image_io import read_image

        def loader(path: str) -> torch.Tensor:  # a blank sample of an undertrained prior is shown, not refused
            return torch.as_tensor(read_image(path, allow_constant=True)[0])[None]

        tags = [class_names[c] for c in classes if c in class_names and class_names[c] in files] or sorted(files)
        for tag in tags:
            # sample files are 8-bit PNGs (or float NIfTI) of images in [0, 1]
            rows.append([_unit_range(loader(str(f))) for f in files[tag][:samples_per_class]])
            row_labels.append(f"sampled {tag}")
            c = next((k for k, v in class_names.items() if v == tag), -1)
            real = _pick(labels, [c], samples_per_class)
            if real:
                rows.append(list(images[real]))
                row_labels.append(f"real {tag} (test)")
        notes["samples"] = (
            f"{sum(len(files[t][:samples_per_class]) for t in tags)} sample files from `samples/` "
            f"(of {sum(len(v) for v in files.values())}; seed {_fmt(samples_info.get('seed'))}, temperature "
            f"{_fmt(samples_info.get('temperature'))}, top-k {_fmt(samples_info.get('top_k'))}, from `samples.json`)"
        )
    else:
        from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer

        inferer = AutoregressivePriorInferer()
        generator = torch.Generator(device=dev).manual_seed(int(seed))
        conditional = bool(getattr(art.prior, "num_classes", None))
        for c in classes if conditional else [-1]:
            cls = torch.full((samples_per_class,), c, dtype=torch.long, device=dev) if c >= 0 else None
            drawn = inferer.sample(art.vqvae, art.prior, samples_per_class, art.latent_shape, cls,
                                   generator=generator)  # fmt: skip
            tag = class_names.get(c, "all")
            rows.append(list(drawn.clamp(0, 1).cpu()))
            row_labels.append(f"sampled {tag}")
            real = _pick(labels, [c], samples_per_class)
            rows.append(list(images[real]))
            row_labels.append(f"real {tag} (test)")
        notes["samples"] = (
            f"`samples/` holds no sample files: {samples_per_class} fresh samples per class drawn by the report "
            f"(seed {seed}, temperature 1)"
        )
    plots.plot_image_rows(
        rows,
        row_labels,
        fig_dir / REPORT_FIGURES["samples"],
        title=f"{_pretty_tag('prior_' + art.prior_name)} samples per class, each above real test images of the class",
    )
    figures["samples"] = REPORT_FIGURES["samples"]

    # --- generation metrics
    gen_file = run / "generation_metrics.json"
    if not gen_file.is_file() and generation:
        from brainvq_monai.apps.generation_eval import run_generation_eval

        run_generation_eval(run)
    gen = _read_json(gen_file)
    memorisation = _memorisation_values(gen)
    if memorisation is not None:
        plots.plot_histograms(
            {"samples": memorisation[0], "real test images": memorisation[1]},
            fig_dir / REPORT_FIGURES["memorisation"],
            "Memorisation check: SSIM to the nearest training image (generation_metrics.json)",
            "SSIM to the nearest training image",
            bins=30,
            value_range=_padded_range(np.concatenate(memorisation)),
        )
        figures["memorisation"] = REPORT_FIGURES["memorisation"]
    gen_reason = (
        "not computed: `generation_metrics.json` is missing and the report ran with `--no-generation`; run "
        f"`brainvq report --run {run}` to compute it."
    )

    # --- markdown
    md = _markdown(run, art, metrics, summary, run_config, dev, figures, notes, usage, num_embeddings, gen, gen_reason)
    out = run / "report.md"
    out.write_text("\n".join(md) + "\n", encoding="utf-8")
    return out


def _markdown(
    run: Path,
    art: Any,
    metrics: Mapping[str, Any],
    summary: Mapping[str, Any],
    run_config: Mapping[str, Any],
    dev: torch.device,
    figures: Mapping[str, str],
    notes: Mapping[str, str],
    usage: Mapping[str, Any],
    num_embeddings: int,
    gen: Mapping[str, Any] | None,
    gen_reason: str,
) -> list[str]:
    dl = art.datalist
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    written = (metrics.get("reconstruction") or metrics.get("prior") or {}).get("written", "not recorded")
    trained_on = run_config.get("device") or summary.get("device") or "not recorded in the run folder"
    counts = {k: len(dl.get(k) or []) for k in ("training", "validation", "test")}
    labels = ", ".join(f"{k} = {v}" for k, v in (dl.get("labels") or {}).items()) or "none"
    seconds = summary.get("seconds") or {}
    md = [
        f"# brainvq run report: `{run.name}`",
        "",
        "| | |",
        "|---|---|",
        f"| run folder | `{run}` |",
        f"| run finished (metrics.json) | {written} |",
        f"| report written | {now} |",
        f"| data | {dl.get('name', '?')} (`{dl.get('format', '?')}` layout) at `{dl.get('root', '?')}` |",
        f"| split | {counts['training']} training / {counts['validation']} validation / {counts['test']} test "
        f"items, by `{dl.get('split_method', '?')}` (seed {_fmt(dl.get('seed'))}) |",
        f"| classes | {labels} |",
        f"| image size | {' x '.join(map(str, art.spatial_size))}, code map "
        f"{' x '.join(map(str, art.latent_shape))}, codebook {num_embeddings} codes |",
        f"| prior | {art.prior_name} |",
        f"| training device | {trained_on} |",
        f"| report device | {dev} |",
        f"| versions (report) | {', '.join(f'{k} {v}' for k, v in versions('matplotlib', 'ignite').items())} |",
    ]
    if seconds:
        steps = ", ".join(f"{k.removesuffix('.json')} {v}" for k, v in seconds.items())
        md.append(f"| run time (s) | {steps} |")
    md += [
        "",
        "Every number below is read from this run's files (`metrics.json`, `generation_metrics.json`, TensorBoard "
        "logs, `samples/samples.json`) or computed by the report with this run's models on this run's test split.",
        "",
        "<details><summary>Run settings ("
        + ("`run_config.json`" if run_config else "no `run_config.json`: the demo defaults, as `load_run` used them")
        + ")</summary>",
        "",
        "| setting | value |",
        "|---|---|",
        *(
            f"| {k} | `{json.dumps(v, default=str)}` |"
            for k, v in (getattr(art, "config", None) or art.settings).items()
        ),
        "",
        "</details>",
        "",
        "## Metrics",
        "",
    ]
    md += _metric_section(metrics, "reconstruction", _REC_ROWS, "Reconstruction (VQ-VAE, test split)")
    md += _metric_section(metrics, "prior", _PRIOR_ROWS, f"Prior ({art.prior_name}, test split)")
    md += _generation_section(gen, gen_reason)
    md += ["## Figures", ""]
    captions = {
        "loss_curves": "**Training curves** (`report/loss_curves.png`), from the TensorBoard logs: every loss term "
        "per iteration (faint) with its running mean over one epoch, the epoch mean (`train_loss`), the validation "
        "NLL of the prior, and the learning rate.",
        "validation_metrics": "**Validation metrics** (`report/validation_metrics.png`) per validation epoch, from "
        "the TensorBoard logs; dashed lines: the test value of the best checkpoint from `metrics.json`.",
        "reconstructions": "**Reconstructions** (`report/reconstructions.png`): test images evenly spaced through "
        "each class, their VQ-VAE reconstruction and the absolute error (colour bar in intensity units, images in "
        "[0, 1]; its colour scale ends at the 99th percentile of the errors shown, larger errors saturate).",
        "samples": f"**Samples per class** (`report/samples.png`): {notes.get('samples', '')}; each row of samples "
        "is followed by real test images of the same class.",
        "codebook_usage": f"**Codebook usage** (`report/codebook_usage.png`) over the {usage['images']} test images "
        f"({usage['tokens']} tokens), computed by the report: {usage['used']} of {num_embeddings} codes used, "
        f"{usage['dead']} dead, perplexity {_fmt(usage['perplexity'])}.",
        "codebook_projection": "**Codebook projection** (`report/codebook_projection.png`): "
        f"{notes.get('projection', '')} Point area grows with test-split usage; crosses mark dead codes; the most "
        "used codes are labelled with their index.",
        "memorisation": "**Memorisation** (`report/memorisation.png`): per-image SSIM to the nearest training image, "
        "samples against real test images (values from `generation_metrics.json`); samples far right of the test "
        "images would be near-copies of training images.",
    }
    for key, name in figures.items():
        md += [captions[key], "", f"![{key}](report/{name})", ""]
    missing = [k for k in REPORT_FIGURES if k not in figures]
    if missing:
        why = {"memorisation": "no generation_metrics.json"}
        listed = ", ".join(f"{k} ({why.get(k, 'no data in the run folder')})" for k in missing)
        md += [f"Not drawn: {listed}.", ""]
    return md

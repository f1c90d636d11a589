"""The figure and the results page of :func:`brainvq_monai.apps.anomaly.run_anomaly` (2D images or 3D volumes)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SCORE_TEXT", "anomaly_figure", "anomaly_markdown"]

_SHOWN = ("nll_brain", "nll_region", "residual_brain", "residual_region")
SCORE_TEXT = {
    "nll_brain": "mean token NLL, whole brain",
    "nll_region": "mean token NLL, central ventricle box",
    "residual_brain": "healing residual, whole brain",
    "residual_region": "healing residual, central ventricle box",
    "resampled_fraction": "fraction of tokens resampled",
}
_TITLES = ("input", "NLL map (nats)", "healed", "|input - healed|")


def _healed(out_dir: Path, name: str) -> np.ndarray:
    """A healed image as written by ``save_anomaly_outputs``: ``(1, W, H)`` from its PNG or ``(1, X, Y, Z)``."""
    png = out_dir / f"{name}_healed.png"
    if png.is_file():
        from PIL import Image

        return np.asarray(Image.open(png), np.float32).T[None] / 255.0
    import nibabel as nib

    return np.asarray(nib.load(str(out_dir / f"{name}_healed.nii.gz")).get_fdata(), np.float32)[None]


def _picks(rows: Sequence[Mapping[str, Any]], normal: int, most: int = 6) -> list[int]:
    """One mid image per subject, normal class first (chosen by position in the subject's list, not by score)."""
    by_subject: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_subject.setdefault(r["subject"], []).append(i)
    order = sorted(by_subject.values(), key=lambda idx: (int(rows[idx[0]]["label"]) != normal, rows[idx[0]]["subject"]))
    return [idx[len(idx) // 2] for idx in order][:most]


def _image_row(fig: Any, grid: Any, row: int, panels: list, box: Sequence[float], label: str) -> None:
    """Draws the four panels of one image (the ventricle box on the NLL map)."""
    from matplotlib.patches import Rectangle

    for col, (arr, cmap, hi) in enumerate(panels):
        ax = fig.add_subplot(grid[row, col])
        ax.imshow(arr, cmap=cmap, vmin=0, vmax=hi, interpolation="nearest")
        if col == 1:
            h, w = arr.shape
            corner = (box[0] * w - 0.5, box[0] * h - 0.5)
            size = ((box[1] - box[0]) * w, (box[1] - box[0]) * h)
            ax.add_patch(Rectangle(corner, *size, fill=False, edgecolor="cyan", lw=0.8))
        ax.set_xticks([])
        ax.set_yticks([])
        if row == 0:
            ax.set_title(_TITLES[col], fontsize=8)
        if col == 0:
            ax.set_ylabel(label, fontsize=7)


def _roc_axes(ax: Any, rows: Sequence[Mapping[str, Any]], results: Mapping[str, Any]) -> None:
    from sklearn.metrics import roc_curve

    positive = np.array([int(r["label"]) != results["normal_class"] for r in rows])
    for col in _SHOWN:
        fpr, tpr, _ = roc_curve(positive, np.array([float(r[col]) for r in rows]))
        ax.plot(fpr, tpr, lw=1.2, label=f"{col} ({results['slice_auroc'][col]:.2f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel(f"false positive rate ({results['normal_class_name']})", fontsize=8)
    ax.set_ylabel("true positive rate (other classes)", fontsize=8)
    ax.set_title(f"{len(rows)} test images: ROC (AUROC)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_aspect("equal")


def anomaly_figure(
    rows: Sequence[Mapping[str, Any]],
    test_items: Sequence[Mapping[str, Any]],
    preprocessing: Callable,
    out_dir: Path,
    results: Mapping[str, Any],
    path: Path,
) -> None:
    """One mid image per test subject (input, NLL map, healed, residual; the mid-axial slice of a volume) and the
    ROC curves of the scores.

    Args:
        rows: the rows of ``scores.csv`` (in the order of ``test_items``).
        test_items: the datalist items scored.
        preprocessing: the run's preprocessing.
        out_dir: the folder of the maps and healed images.
        results: from :func:`~brainvq_monai.apps.anomaly.run_anomaly`.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from brainvq_monai.visualize.grids import to_display_slice

    picks = _picks(rows, results["normal_class"])
    nll_max = max(float(np.load(out_dir / f"{rows[i]['name']}_nll.npy").max()) for i in picks)
    res_max = max(float(np.load(out_dir / f"{rows[i]['name']}_residual.npy").max()) for i in picks) or 1.0
    fig = plt.figure(figsize=(10.5, 1.9 * len(picks) + 0.4), dpi=72)
    grid = fig.add_gridspec(len(picks), 6, width_ratios=[1, 1, 1, 1, 0.45, 2.6], wspace=0.08, hspace=0.25)
    for row, i in enumerate(picks):
        name = rows[i]["name"]
        panels = [
            (to_display_slice(preprocessing(dict(test_items[i]))["image"]), "gray", 1),
            (to_display_slice(np.load(out_dir / f"{name}_nll.npy")), "magma", nll_max),
            (to_display_slice(_healed(out_dir, name)), "gray", 1),
            (to_display_slice(np.load(out_dir / f"{name}_residual.npy")), "inferno", res_max),
        ]
        label = f"{rows[i]['class']} {rows[i]['subject']}\nNLL {float(rows[i]['nll_region']):.2f}"
        _image_row(fig, grid, row, panels, results["region_box"], label)
    _roc_axes(fig.add_subplot(grid[:, 5]), rows, results)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72, bbox_inches="tight")
    plt.close(fig)


def _method(results: Mapping[str, Any]) -> list[str]:
    cal = results["calibration"]
    normal = results["normal_class_name"]
    scored = f"class-conditional prior under the **normal class** ({normal})" if results["conditional"] else "prior"
    return [
        f"Method (Pinaya et al., MedIA 2022): every test image is encoded by the VQ-VAE and scored by the {scored}; "
        "the per-token NLL (nats) is upsampled to the image (nearest). Healing visits the tokens in the prior's "
        "generation order with its KV-cached decoder, keeps a token when its probability given the already healed "
        f"prefix is above the threshold and otherwise redraws it (seed {results['seed']}), then decodes; the "
        "residual |input - healed| restricted to the resampled tokens is the pixel-level map.",
        "",
        f"Healing threshold: p = {cal['threshold']:.4f}, the {cal['quantile']:.2f} quantile of the token NLLs of "
        f"the {cal['num_images']} {normal if results['conditional'] else ''} images of the **{cal['split']}** split "
        "(calibrated before looking at the test split; nothing was tuned on it). Ventricle region: the central "
        f"box {results['region_box'][0]:.1f}-{results['region_box'][1]:.1f} of each image axis (fixed a priori "
        "from the cohort's anatomy: the images are brain-cropped and centred). Whole brain: pixels above "
        f"{results['brain_threshold']} intensity.",
    ]


def _reading(results: Mapping[str, Any]) -> str:
    return (
        "**Reading these numbers.** This is a small CPU-trained demo: "
        f"{'x'.join(map(str, results['spatial_size']))} images, a {'x'.join(map(str, results['latent_shape']))} "
        f"code map, a prior trained on every class of {results['num_training_subjects']} training subjects (so AD "
        f"anatomy is not out of distribution for it; scoring under the {results['normal_class_name']} label is the "
        f"only normative element), and a test split of only {results['num_subjects']} subjects. Images of one "
        "subject are not independent, so the per-image AUROC overstates the evidence and the per-subject AUROC rests "
        f"on {results['counts']} (at that size a perfect per-subject AUROC arises by chance with probability "
        f"1/{results['perfect_auroc_odds']} for any one score); neither supports a claim that the method separates "
        "AD from NC here. A real evaluation needs a prior trained on healthy subjects only, more test subjects, and "
        "subject-level confidence intervals. The data are synthetic (MNI template + simulated atrophy)."
    )


def anomaly_markdown(results: Mapping[str, Any], figure: Path | None, path: Path) -> None:
    """Writes the results page: how it was measured, the method, the AUROC table and the per-subject means.

    Args:
        results: from :func:`~brainvq_monai.apps.anomaly.run_anomaly`.
        figure: the figure PNG (linked by its file name) or ``None``.
        path: the Markdown file to write.
    """
    v = results["versions"]
    lines = [
        f"# Anomaly maps (the other classes against {results['normal_class_name']})",
        "",
        f"Measured {results['date']} on {results['device']}; Python {v['python']}, torch {v['torch']}, "
        f"MONAI {v['monai']}, brainvq_monai {v['brainvq_monai']}. Run: `{results['run']}` (prior: "
        f"{results['prior']}, images {'x'.join(map(str, results['spatial_size']))}, codes "
        f"{'x'.join(map(str, results['latent_shape']))}; made in `{results['demo_output_dir']}`), networks and "
        "preprocessing rebuilt from the run folder, scored by `brainvq_monai.bundle.save_anomaly_outputs` (what the "
        f"bundles' `anomaly` workflow runs), command `{results['command']}`.",
        "",
        *_method(results),
        "",
        f"Test split: {results['num_slices']} images from {results['num_subjects']} subjects ({results['counts']}).",
        "",
        "| score | AUROC per image | AUROC per subject (mean over its images) |",
        "|---|---|---|",
    ]
    for col in (*_SHOWN, "resampled_fraction"):
        slice_auc, subject_auc = results["slice_auroc"][col], results["subject_auroc"][col]
        lines.append(f"| {SCORE_TEXT[col]} (`{col}`) | {slice_auc:.3f} | {subject_auc:.3f} |")
    lines += ["", "Per-subject means:", "", "| subject | class | " + " | ".join(_SHOWN) + " |"]
    lines.append("|---|---|" + "---|" * len(_SHOWN))
    for s in results["subjects"]:
        lines.append(f"| {s['subject']} | {s['class']} | " + " | ".join(f"{s[c]:.4f}" for c in _SHOWN) + " |")
    lines += ["", _reading(results)]
    if figure is not None:
        lines += ["", f"![anomaly maps]({figure.name})", ""]
        lines.append(
            "Figure: one mid image per test subject (normal-class rows first): input, NLL map with the ventricle box "
            "(cyan), healed reconstruction, residual on resampled tokens; right: ROC curves per image."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")

"""Anomaly maps on a finished demo run: AD vs NC scores, AUROC, a figure and a results page.

Runs the 2D bundle's ``anomaly.json`` (through ``ConfigWorkflow``, as ``python -m monai.bundle run`` would) on the
test split of a ``brainvq demo`` run directory, scoring every slice under the prior's normal class (NC), then:

* the healing threshold is calibrated beforehand on the *validation* split's NC slices (the ``--quantile`` of their
  token NLLs), never on the test split;
* AUROC of AD vs NC for each per-image score (whole brain, central "ventricle" box), per slice and per subject;
* a figure (``--figure``): one mid slice per test subject with its NLL map, healed image and residual, plus the ROC
  curves; and a results page (``--markdown``) with date, device, versions and the run measured.

Usage::

    python scripts/anomaly_demo.py --run /tmp/g2run --figure docs/anomaly_maps.png --markdown docs/anomaly.md
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainvq_monai.apps.demo import DEMO_SETTINGS, demo_overrides, run_bundle_config, vqvae_architecture
from brainvq_monai.bundle.layout import AUTOENCODER_ID, PRIOR_ID, PRIOR_WEIGHTS, config_files
from brainvq_monai.bundle.utils import default_bundle_root
from brainvq_monai.inferers.anomaly import SCORE_COLUMNS, auroc, likelihood_threshold
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["main", "run_anomaly_demo"]

SCORES_SHOWN = ("nll_brain", "nll_region", "residual_brain", "residual_region")
SCORE_TEXT = {
    "nll_brain": "mean token NLL, whole brain",
    "nll_region": "mean token NLL, central ventricle box",
    "residual_brain": "healing residual, whole brain",
    "residual_region": "healing residual, central ventricle box",
    "resampled_fraction": "fraction of tokens resampled",
}


def _run_settings(run: Path) -> tuple[dict[str, Any], str]:
    """The demo settings and prior name of a run (``run_config.json`` when the demo wrote one, else defaults)."""
    settings: dict[str, Any] = dict(DEMO_SETTINGS)
    prior = None
    config = run / "run_config.json"
    if config.is_file():
        saved = json.loads(config.read_text())
        settings.update(saved.get("settings", {}))
        prior = saved.get("prior")
    summary = run / "demo_summary.json"
    if prior is None and summary.is_file():
        prior = json.loads(summary.read_text()).get("results", {}).get("prior", {}).get("prior")
    if prior is None:
        found = sorted(p.stem[len("prior_") :] for p in (run / "models").glob("prior_*.pt") if "_last" not in p.stem)
        prior = found[0] if found else ("transformer" if (run / "models" / PRIOR_WEIGHTS).is_file() else None)
    if prior not in ("transformer", "pixelcnn"):
        raise BrainVQInputError(run, f"no trained prior found (models/{PRIOR_WEIGHTS})")
    return settings, prior


def _overrides(run: Path, out: Path, settings: dict[str, Any], prior: str) -> dict[str, Any]:
    datalists = sorted(run.glob("datalist_*.json"))
    if not datalists:
        raise BrainVQInputError(run, "no datalist_*.json: not a brainvq demo run directory")
    datalist = json.loads(datalists[0].read_text())
    over = demo_overrides(run, settings, prior, int(datalist.get("numTraining", 0)) or 20, int(datalist.get("seed", 0)))
    arch = vqvae_architecture(settings)
    over.update({f"{AUTOENCODER_ID}#{k}": v for k, v in arch.items()})
    over.update(
        {
            "ckpt_dir": str(run / "models"),
            "datalist": str(datalists[0]),
            "data_format": datalist.get("format", "adni"),
            "dataset_dir": datalist.get("root", str(run / "data")),
            f"{PRIOR_ID}#{prior}": settings[prior],
            "anomaly_dir": str(out),
            "device": "$torch.device('cpu')",
        }
    )
    return over


@torch.no_grad()
def _calibrate(over: dict[str, Any], quantile: float, split: str = "validation") -> dict[str, Any]:
    """Healing threshold from the token NLLs of the normal-class images of ``split`` (not the test split)."""
    from monai.bundle import ConfigWorkflow
    from monai.data import DataLoader, Dataset

    root = Path(default_bundle_root("brain_vqvae_2d"))
    wf = ConfigWorkflow(
        config_file=config_files(root, "anomaly"),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=False,
        **over,
    )
    wf.initialize()
    parse = wf.parser.get_parsed_content
    normal = parse("normal_class")
    items = [i for i in parse("datalist_data")[split] if normal is None or int(i["label"]) == int(normal)]
    if not items:
        raise BrainVQInputError(split, "no normal-class images to calibrate the healing threshold on")
    vqvae, prior, inferer = parse("autoencoder"), parse("network"), parse("inferer")
    nll = []
    for batch in DataLoader(Dataset(items, parse("preprocessing")), batch_size=32):
        x = batch["image"].as_tensor()
        labels = None if normal is None else torch.full((x.shape[0],), int(normal))
        nll.append(inferer.get_likelihood(x, vqvae, prior, labels))
    nll_all = torch.cat(nll)
    return {
        "split": split,
        "num_images": len(items),
        "quantile": quantile,
        "threshold": likelihood_threshold(nll_all, quantile),
        "mean_nll": float(nll_all.mean()),
        "normal_class": normal,
        "class_names": parse("class_names"),
        "preprocessing": parse("preprocessing"),
        "latent_shape": list(parse("latent_shape")),
        "test_items": parse("datalist_data")["test"],
        "num_training_subjects": len({i.get("subject") for i in parse("datalist_data")["training"]}),
    }


def _demo_output_dir(run: Path) -> str:
    summary = run / "demo_summary.json"
    return json.loads(summary.read_text()).get("output_dir", str(run)) if summary.is_file() else str(run)


def _roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr


def _subject_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    subjects: dict[str, dict[str, Any]] = {}
    for r in rows:
        s = subjects.setdefault(r["subject"], {"subject": r["subject"], "class": r["class"], "label": int(r["label"])})
        for c in columns:
            s.setdefault(c, []).append(float(r[c]))
    for s in subjects.values():
        for c in columns:
            s[c] = float(np.mean(s[c]))
    return sorted(subjects.values(), key=lambda s: (s["label"], s["subject"]))


def _figure(rows, test_items, preprocessing, out_dir: Path, results: dict[str, Any], box, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from PIL import Image

    from brainvq_monai.visualize.grids import to_display_slice

    # one mid slice per subject, NC first then AD (chosen by position in the subject's slice list, not by score)
    by_subject: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_subject.setdefault(r["subject"], []).append(i)
    picks = sorted(by_subject.values(), key=lambda idx: (int(rows[idx[0]]["label"]), rows[idx[0]]["subject"]))
    picks = [idx[len(idx) // 2] for idx in picks][:6]
    nll_max = max(float(np.load(out_dir / f"{rows[i]['name']}_nll.npy").max()) for i in picks)
    res_max = max(float(np.load(out_dir / f"{rows[i]['name']}_residual.npy").max()) for i in picks) or 1.0
    fig = plt.figure(figsize=(10.5, 1.9 * len(picks) + 0.4), dpi=72)
    grid = fig.add_gridspec(len(picks), 6, width_ratios=[1, 1, 1, 1, 0.45, 2.6], wspace=0.08, hspace=0.25)
    titles = ("input", "NLL map (nats)", "healed", "|input - healed|")
    for row, i in enumerate(picks):
        r = rows[i]
        image = preprocessing(dict(test_items[i]))["image"]
        healed = np.asarray(Image.open(out_dir / f"{r['name']}_healed.png"), np.float32).T[None] / 255.0
        panels = [
            (to_display_slice(image), "gray", 0, 1),
            (to_display_slice(np.load(out_dir / f"{r['name']}_nll.npy")), "magma", 0, nll_max),
            (to_display_slice(healed), "gray", 0, 1),
            (to_display_slice(np.load(out_dir / f"{r['name']}_residual.npy")), "inferno", 0, res_max),
        ]
        for col, (arr, cmap, lo, hi) in enumerate(panels):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(arr, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            if col == 1:
                h, w = arr.shape
                ax.add_patch(
                    Rectangle(
                        (box[0] * w - 0.5, box[0] * h - 0.5),
                        (box[1] - box[0]) * w,
                        (box[1] - box[0]) * h,
                        fill=False,
                        edgecolor="cyan",
                        lw=0.8,
                    )
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{r['class']} {r['subject']}\nNLL {float(r['nll_region']):.2f}", fontsize=7)
    ax = fig.add_subplot(grid[:, 5])
    labels = np.array([int(r["label"]) for r in rows])
    for col in SCORES_SHOWN:
        fpr, tpr = _roc_points(np.array([float(r[col]) for r in rows]), labels)
        ax.plot(fpr, tpr, lw=1.2, label=f"{col} ({results['slice_auroc'][col]:.2f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate (NC)", fontsize=8)
    ax.set_ylabel("true positive rate (AD)", fontsize=8)
    ax.set_title(f"AD vs NC, {len(rows)} test slices: ROC (AUROC)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_aspect("equal")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72, bbox_inches="tight")
    plt.close(fig)


def _markdown(results: dict[str, Any], figure: Path | None, markdown: Path) -> None:
    import monai

    cal = results["calibration"]
    lines = [
        "# Anomaly maps on the demo cohort (AD vs NC)",
        "",
        f"Measured {results['date']} on {results['device']}; Python {results['versions']['python']}, "
        f"torch {results['versions']['torch']}, MONAI {monai.__version__}, brainvq_monai "
        f"{results['versions']['brainvq_monai']}. Run: `{results['run']}` (prior: {results['prior']}, "
        f"images {'x'.join(map(str, results['spatial_size']))}, codes {'x'.join(map(str, results['latent_shape']))}), bundle workflow `anomaly` (`bundles/brain_vqvae_2d/configs/common.json` + `anomaly.json`), "
        f"command `python scripts/anomaly_demo.py --run {results['run']} --figure docs/anomaly_maps.png "
        f"--markdown docs/anomaly.md` (run directory of a finished `brainvq demo`, made in "
        f"`{results['demo_output_dir']}`).",
        "",
        "Method (Pinaya et al., MedIA 2022): every test slice is encoded by the VQ-VAE and scored by the "
        f"class-conditional prior under the **normal class** ({results['normal_class_name']}); the per-token NLL "
        "(nats) is upsampled to the image (nearest). Healing visits the tokens in the prior's generation order with "
        "its KV-cached decoder, keeps a token when its probability given the already healed prefix is above the "
        "threshold and otherwise redraws it (seed 0), then decodes; the residual |input - healed| restricted to "
        "the resampled tokens is the pixel-level map.",
        "",
        f"Healing threshold: p = {cal['threshold']:.4f}, the {cal['quantile']:.2f} quantile of the token NLLs of "
        f"the {cal['num_images']} {results['normal_class_name']} slices of the **{cal['split']}** split "
        "(calibrated before looking at the test split; nothing was tuned on it). Ventricle region: the central "
        f"box {results['region_box'][0]:.1f}-{results['region_box'][1]:.1f} of each image axis (fixed a priori "
        "from the cohort's anatomy: the slices are brain-cropped and centred). Whole brain: pixels above "
        f"{results['brain_threshold']} intensity.",
        "",
        f"Test split: {results['num_slices']} slices from {results['num_subjects']} subjects ({results['counts']}).",
        "",
        "| score | AUROC per slice | AUROC per subject (mean over its slices) |",
        "|---|---|---|",
    ]
    for col in SCORES_SHOWN + ("resampled_fraction",):
        lines.append(
            f"| {SCORE_TEXT[col]} (`{col}`) | {results['slice_auroc'][col]:.3f} | {results['subject_auroc'][col]:.3f} |"
        )
    lines += ["", "Per-subject means:", "", "| subject | class | " + " | ".join(SCORES_SHOWN) + " |"]
    lines.append("|---|---|" + "---|" * len(SCORES_SHOWN))
    for s in results["subjects"]:
        lines.append(f"| {s['subject']} | {s['class']} | " + " | ".join(f"{s[c]:.4f}" for c in SCORES_SHOWN) + " |")
    lines += [
        "",
        "**Reading these numbers.** This is a small CPU-trained demo: "
        f"{'x'.join(map(str, results['spatial_size']))} slices, a {'x'.join(map(str, results['latent_shape']))} "
        f"code map, a prior trained on both NC and AD slices of {results['num_training_subjects']} training "
        "subjects (so AD anatomy is not out of distribution for "
        "it; scoring under the NC label is the only normative element), and a test split of only "
        f"{results['num_subjects']} subjects. Slices of one subject are not independent, so the per-slice AUROC "
        "overstates the evidence and the per-subject AUROC rests on "
        f"{results['counts']} (at that size a perfect per-subject AUROC arises by chance with probability "
        f"1/{results['perfect_auroc_odds']} for any one score); neither supports a claim that the method separates AD from NC here. "
        "A real evaluation needs a prior trained on healthy subjects only, more test subjects, and "
        "subject-level confidence intervals. The data are synthetic (MNI template + simulated atrophy).",
    ]
    if figure is not None:
        lines += ["", f"![anomaly maps]({figure.name})", ""]
        lines.append(
            "Figure: one mid slice per test subject (NC rows first): input, NLL map with the ventricle box (cyan), "
            "healed reconstruction, residual on resampled tokens; right: ROC curves per slice."
        )
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text("\n".join(lines) + "\n")


def run_anomaly_demo(
    run: str | Path,
    out: str | Path | None = None,
    quantile: float = 0.95,
    region_box: Sequence[float] = (0.3, 0.7),
    figure: str | Path | None = None,
    markdown: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Scores the test split of a demo run for anomalies and summarises AD vs NC separation.

    Args:
        run: a finished ``brainvq demo`` run directory (``models/``, ``datalist_*.json``).
        out: where the bundle writes maps, healed images and ``scores.csv`` (default ``run/anomaly``).
        quantile: quantile of the validation NC token NLLs that sets the healing threshold.
        region_box: central box (fractions of each axis) of the region scores.
        figure: PNG path of the figure (``None``: no figure).
        markdown: path of the results page (``None``: none).
        seed: seed of the healing draws.

    Returns:
        the results (also written to ``out/anomaly_results.json``).
    """
    run = Path(run).resolve()
    if not (run / "models").is_dir():
        raise BrainVQInputError(run, "not a demo run directory (no models/)")
    out_dir = Path(out).resolve() if out is not None else run / "anomaly"
    settings, prior = _run_settings(run)
    over = _overrides(run, out_dir, settings, prior)
    over.update({"region_box": list(region_box), "seed": seed})
    cal = _calibrate(over, quantile)
    run_bundle_config("anomaly", {**over, "heal_threshold": cal["threshold"]})
    with open(out_dir / "scores.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    labels = np.array([int(r["label"]) for r in rows])
    subjects = _subject_table(rows, SCORE_COLUMNS)
    subject_labels = np.array([s["label"] for s in subjects])
    names = {str(k): v for k, v in (cal["class_names"] or {}).items()}
    results = {
        "date": datetime.date.today().isoformat(),
        "device": f"CPU ({platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()})",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "brainvq_monai": __import__("brainvq_monai").__version__,
        },
        "run": str(run),
        "prior": prior,
        "latent_shape": cal["latent_shape"],
        "figure": str(figure) if figure else None,
        "num_training_subjects": cal["num_training_subjects"],
        "demo_output_dir": _demo_output_dir(run),
        "normal_class": cal["normal_class"],
        "normal_class_name": names.get(str(cal["normal_class"]), str(cal["normal_class"])),
        "spatial_size": list(settings["spatial_size"]),
        "region_box": list(region_box),
        "brain_threshold": 0.05,
        "seed": seed,
        "calibration": {k: cal[k] for k in ("split", "num_images", "quantile", "threshold", "mean_nll")},
        "num_slices": len(rows),
        "num_subjects": len(subjects),
        "counts": ", ".join(
            f"{sum(1 for s in subjects if s['class'] == c)} {c} subjects"
            for c in sorted({s["class"] for s in subjects})
        ),
        "perfect_auroc_odds": math.comb(len(subjects), int(subject_labels.sum())),
        "slice_auroc": {c: auroc([float(r[c]) for r in rows], labels) for c in SCORE_COLUMNS},
        "subject_auroc": {c: auroc([s[c] for s in subjects], subject_labels) for c in SCORE_COLUMNS},
        "subjects": subjects,
    }
    (out_dir / "anomaly_results.json").write_text(json.dumps(results, indent=2) + "\n")
    fig_path = Path(figure) if figure else None
    if fig_path is not None:
        _figure(rows, cal["test_items"], cal["preprocessing"], out_dir, results, region_box, fig_path)
    if markdown:
        _markdown(results, fig_path, Path(markdown))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="finished brainvq demo run directory")
    parser.add_argument("--out", default=None, help="output folder of the maps (default RUN/anomaly)")
    parser.add_argument("--quantile", type=float, default=0.95, help="validation-NC NLL quantile of the threshold")
    parser.add_argument("--region", type=float, nargs=2, default=(0.3, 0.7), help="central box, axis fractions")
    parser.add_argument("--figure", default=None, help="figure PNG path, e.g. docs/anomaly_maps.png")
    parser.add_argument("--markdown", default=None, help="results page path, e.g. docs/anomaly.md")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        results = run_anomaly_demo(
            args.run, args.out, args.quantile, args.region, args.figure, args.markdown, args.seed
        )
    except BrainVQInputError as err:
        print(f"anomaly_demo: {err}", file=sys.stderr)
        return 2
    for col in SCORE_COLUMNS:
        print(
            f"{col:20s} AUROC per slice {results['slice_auroc'][col]:.3f}   "
            f"per subject {results['subject_auroc'][col]:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Anomaly maps of a run's test split: scores under the normal class, AD vs NC AUROC, a figure and a results page.

``brainvq anomaly --run RUN`` (:func:`run_anomaly`) works on any run folder
:func:`~brainvq_monai.apps.run_loader.load_run` reads (a ``brainvq demo`` run, a 2D or 3D bundle run): the networks,
preprocessing, datalist and class names all come from the run. Then:

* the healing threshold is calibrated beforehand on the *validation* split's normal-class images (the ``quantile``
  of their token NLLs), never on the test split;
* every test image is scored under the normal class by :func:`brainvq_monai.bundle.save_anomaly_outputs` (what the
  bundles' ``anomaly`` workflow runs): NLL map, healed image, residual map and the scores of ``scores.csv``;
* AUROC of the other classes against the normal one for each per-image score (whole brain, central "ventricle"
  box), per image and per subject;
* optionally a figure (one mid image per test subject with its NLL map, healed image and residual, plus the ROC
  curves) and a results page with date, device, versions and the run measured.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainvq_monai.apps.anomaly_page import anomaly_figure, anomaly_markdown
from brainvq_monai.apps.run_loader import RunArtifacts, load_run
from brainvq_monai.bundle.anomaly import save_anomaly_outputs
from brainvq_monai.inferers.anomaly import SCORE_COLUMNS, auroc, likelihood_threshold
from brainvq_monai.networks.nets.prior import require_likelihood
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.tensors import device_of

__all__ = ["RESULTS_FILE", "calibrate_threshold", "format_auroc", "normal_class", "run_anomaly"]

RESULTS_FILE = "anomaly_results.json"
BRAIN_THRESHOLD = 0.05
_NORMAL_NAMES = ("NC", "CN", "HC", "NORMAL", "CONTROL")


def _class_names(run: RunArtifacts) -> dict[int, str]:
    """The run's class names; for an unconditional prior, the datalist's (the test labels still name classes)."""
    return run.class_names or {int(k): str(v) for k, v in (run.datalist.get("labels") or {}).items()}


def normal_class(run: RunArtifacts) -> int:
    """The normal class of a run: the class named NC (CN, HC, normal, control) when there is one, else class 0.

    Args:
        run: the loaded run.

    Returns:
        the class id.
    """
    return next((k for k, v in sorted(_class_names(run).items()) if v.upper() in _NORMAL_NAMES), 0)


def _loader(run: RunArtifacts, items: Sequence[Mapping[str, Any]], batch_size: int) -> Any:
    from monai.data import DataLoader, Dataset

    return DataLoader(Dataset(list(items), run.preprocessing), batch_size=batch_size, shuffle=False, num_workers=0)


def _batch_size(run: RunArtifacts) -> int:
    """The batch size of the run's config (the healing draws of a batch depend on it), 8 when it sets none."""
    value = (run.config.get("config") or {}).get("batch_size")
    return value if isinstance(value, int) and value > 0 else 8


@torch.no_grad()
def calibrate_threshold(
    run: RunArtifacts, normal: int | None, quantile: float, split: str = "validation", batch_size: int = 32
) -> dict[str, Any]:
    """The healing threshold: the ``quantile`` of the token NLLs of the normal-class images of ``split``.

    Args:
        run: the loaded run.
        normal: the class the images are scored under (``None``: an unconditional prior, every image of ``split``).
        quantile: in (0, 1).
        split: the datalist split (not the test split).
        batch_size: images per batch.

    Returns:
        ``{"split", "num_images", "quantile", "threshold", "mean_nll"}``.

    Raises:
        BrainVQInputError: no normal-class image in ``split``.
    """
    from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer

    items = [i for i in run.items(split) if normal is None or i.get("label") == normal]
    if not items:
        raise BrainVQInputError(split, "no normal-class images to calibrate the healing threshold on")
    inferer, device = AutoregressivePriorInferer(), device_of(run.vqvae)
    nll = []
    for batch in _loader(run, items, batch_size):
        x = torch.as_tensor(batch["image"]).as_subclass(torch.Tensor).float().to(device)
        labels = None if normal is None else torch.full((x.shape[0],), normal, device=device)
        nll.append(inferer.get_likelihood(x, run.vqvae, run.prior, labels).cpu())
    nll_all = torch.cat(nll)
    return {
        "split": split,
        "num_images": len(items),
        "quantile": quantile,
        "threshold": likelihood_threshold(nll_all, quantile),
        "mean_nll": float(nll_all.mean()),
    }


def _subject_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    """Per-subject means of the score ``columns`` (normal class first)."""
    subjects: dict[str, dict[str, Any]] = {}
    for r in rows:
        s = subjects.setdefault(r["subject"], {"subject": r["subject"], "class": r["class"], "label": int(r["label"])})
        for c in columns:
            s.setdefault(c, []).append(float(r[c]))
    for s in subjects.values():
        for c in columns:
            s[c] = float(np.mean(s[c]))
    return sorted(subjects.values(), key=lambda s: (s["label"], s["subject"]))


def _device_text(device: torch.device) -> str:
    from brainvq_monai.utils.environment import device_info

    info = device_info(device)
    where = f"GPU ({info['gpu']}; " if "gpu" in info else "CPU ("
    return f"{where}{info['cpu']}, torch threads {info['torch_threads']})"


def _summary(run: RunArtifacts, rows: list[dict[str, Any]], normal: int, cal: dict[str, Any]) -> dict[str, Any]:
    """The AUROC of every score per image and per subject (the normal class against the others) and the counts."""
    from brainvq_monai.utils.environment import versions

    positive = np.array([int(r["label"]) != normal for r in rows])
    subjects = _subject_table(rows, SCORE_COLUMNS)
    subject_positive = np.array([s["label"] != normal for s in subjects])
    summary_file = run.run_dir / "demo_summary.json"  # a brainvq demo run: the folder it was made in
    made_in = json.loads(summary_file.read_text()).get("output_dir") if summary_file.is_file() else None
    return {
        "date": datetime.date.today().isoformat(),
        "device": _device_text(device_of(run.vqvae)),
        "versions": versions(),
        "run": str(run.run_dir),
        "prior": run.prior_name,
        "conditional": run.conditional,
        "spatial_size": list(run.spatial_size),
        "latent_shape": list(run.latent_shape),
        "num_training_subjects": len({i.get("subject") for i in run.items("training")}),
        "demo_output_dir": made_in or str(run.run_dir),
        "normal_class": normal,
        "normal_class_name": _class_names(run).get(normal, str(normal)),
        "calibration": cal,
        "num_slices": len(rows),
        "num_subjects": len(subjects),
        "counts": ", ".join(
            f"{sum(1 for s in subjects if s['class'] == c)} {c} subjects"
            for c in sorted({s["class"] for s in subjects})
        ),
        "perfect_auroc_odds": math.comb(len(subjects), int(subject_positive.sum())),
        "slice_auroc": {c: auroc([float(r[c]) for r in rows], positive) for c in SCORE_COLUMNS},
        "subject_auroc": {c: auroc([s[c] for s in subjects], subject_positive) for c in SCORE_COLUMNS},
        "subjects": subjects,
    }


def _check_test_labels(run: RunArtifacts, normal: int) -> list[dict[str, Any]]:
    items = run.items("test")
    labels = {i.get("label") for i in items}
    if not items or None in labels or normal not in labels or len(labels) < 2:
        raise BrainVQInputError(
            run.run_dir, f"the test split needs labelled images of the normal class {normal} and of another class"
        )
    return items


def run_anomaly(
    run: str | os.PathLike,
    out: str | os.PathLike | None = None,
    quantile: float = 0.95,
    region_box: Sequence[float] = (0.3, 0.7),
    figure: str | os.PathLike | None = None,
    markdown: str | os.PathLike | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Scores the test split of a run for anomalies and summarises how the scores separate the classes.

    Args:
        run: a run folder :func:`~brainvq_monai.apps.run_loader.load_run` reads.
        out: where the maps, healed images and ``scores.csv`` go (default ``<run folder>/anomaly``).
        quantile: quantile of the validation normal-class token NLLs that sets the healing threshold.
        region_box: central box (fractions of each axis) of the region scores.
        figure: PNG path of the figure (``None``: no figure).
        markdown: path of the results page (``None``: none).
        seed: seed of the healing draws.
        device: where the networks run.
        batch_size: test images per batch (the healing draws of a batch depend on it; default: the run config's).
        command: the command line that ran it, for the results page.

    Returns:
        the results (also written to ``out/anomaly_results.json``), with ``scores`` and ``results_file`` paths.
    """
    if not 0 < quantile < 1:
        raise BrainVQInputError("--quantile", f"must lie in (0, 1), got {quantile}")
    if batch_size is not None and batch_size < 1:
        raise BrainVQInputError("--batch-size", f"must be >= 1, got {batch_size}")
    artifacts = load_run(run, device)
    require_likelihood(artifacts.prior, "anomaly maps")
    normal = normal_class(artifacts)
    test_items = _check_test_labels(artifacts, normal)
    out_dir = Path(os.path.abspath(os.fspath(out))) if out is not None else artifacts.run_dir / "anomaly"
    class_label = normal if artifacts.conditional else None
    cal = calibrate_threshold(artifacts, class_label, quantile)
    scores = save_anomaly_outputs(
        artifacts.vqvae, artifacts.prior, _loader(artifacts, test_items, batch_size or _batch_size(artifacts)), out_dir,
        class_label=class_label, threshold=cal["threshold"], region_box=region_box, brain_threshold=BRAIN_THRESHOLD,
        seed=seed, class_names={str(k): v for k, v in _class_names(artifacts).items()},
    )  # fmt: skip
    with open(scores, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    results = _summary(artifacts, rows, normal, cal)
    options = f" --quantile {quantile} --region {region_box[0]} {region_box[1]} --seed {seed}"
    options += "" if batch_size is None else f" --batch-size {batch_size}"
    results.update(
        command=command or f"brainvq anomaly --run {shlex.quote(str(artifacts.run_dir))}{options}",
        region_box=list(region_box),
        brain_threshold=BRAIN_THRESHOLD,
        seed=seed,
        figure=None if figure is None else str(figure),
        scores=str(scores),
        results_file=str(out_dir / RESULTS_FILE),
    )
    (out_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
    if figure is not None:
        anomaly_figure(rows, test_items, artifacts.preprocessing, out_dir, results, Path(figure))
    if markdown is not None:
        anomaly_markdown(results, None if figure is None else Path(figure), Path(markdown))
    return results


def format_auroc(results: Mapping[str, Any]) -> str:
    """One line per score: its AUROC per image and per subject.

    Args:
        results: from :func:`run_anomaly`.

    Returns:
        the lines.
    """
    return "\n".join(
        f"{c:20s} AUROC per slice {results['slice_auroc'][c]:.3f}   per subject {results['subject_auroc'][c]:.3f}"
        for c in SCORE_COLUMNS
    )

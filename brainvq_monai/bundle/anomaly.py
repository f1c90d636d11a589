"""Writing anomaly maps, healed images and per-image scores for a dataset (the ``anomaly.json`` workflow)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from brainvq_monai.data.writers import save_image
from brainvq_monai.inferers.anomaly import (
    SCORE_COLUMNS,
    brain_mask,
    masked_mean,
    region_mask,
    residual_map,
)
from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer
from brainvq_monai.networks.nets.prior import AutoregressivePrior
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.tensors import device_of, plain_tensor

__all__ = ["save_anomaly_outputs"]


def _item_names(batch: Mapping[str, Any], image: torch.Tensor, start: int) -> list[str]:
    meta = getattr(image, "meta", None)
    files = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    n = image.shape[0]
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, (list, tuple)) or len(files) != n:
        files = [f"image{start + j}" for j in range(n)]
    stems = [Path(str(f)).name.split(".")[0] for f in files]
    slices = batch.get("slice")
    if slices is not None:
        slices = torch.as_tensor(slices).reshape(-1).tolist()
        if len(slices) == n:
            stems = [s if s.endswith(f"_{int(z)}") else f"{s}_z{int(z)}" for s, z in zip(stems, slices)]
    return [f"{start + j:04d}_{s}" for j, s in enumerate(stems)]


def _as_list(value: Any, n: int) -> list[Any]:
    if value is None:
        return [""] * n
    if isinstance(value, torch.Tensor):
        value = value.reshape(-1).tolist()
    value = [value] if isinstance(value, (str, int, float)) else list(value)
    return value if len(value) == n else [""] * n


@torch.no_grad()
def save_anomaly_outputs(
    vqvae: nn.Module,
    prior: AutoregressivePrior,
    data: Iterable[Mapping[str, Any]],
    output_dir: str | os.PathLike,
    class_label: int | None = None,
    threshold: float = 0.01,
    region_box: Sequence[float] | Sequence[Sequence[float]] = (0.3, 0.7),
    brain_threshold: float = 0.05,
    interpolation_mode: str = "nearest",
    sigma: float | None = None,
    seed: int = 0,
    image_key: str = "image",
    label_key: str = "label",
    subject_key: str = "subject",
    class_names: Mapping[str, str] | None = None,
    inferer: AutoregressivePriorInferer | None = None,
) -> Path:
    """Writes NLL maps, healed images, residual maps and a CSV of per-image scores for a dataset.

    Per image ``<index>_<name>``: ``<name>_nll.npy`` (``(1, *image)`` NLL map, nats), ``<name>_residual.npy``
    (healing residual restricted to resampled tokens) and ``<name>_healed.png`` (2D) / ``.nii.gz`` (3D), in the
    array convention of :func:`~brainvq_monai.data.writers.save_image`. ``scores.csv`` has one row per image with the
    columns ``name, subject, label, class`` and :data:`SCORE_COLUMNS`; ``anomaly_settings.json`` records the settings.

    Args:
        vqvae: trained VQ-VAE.
        prior: trained prior.
        data: batches (dicts) with ``image_key`` ``(B, C, *image)`` in [0, 1]; ``label_key`` / ``subject_key`` are
            copied to the CSV when present.
        output_dir: destination folder (created).
        class_label: label the images are scored under for a conditional prior (the normal class, e.g. 0 = NC);
            ``None`` for an unconditional prior.
        threshold: healing threshold (probability), see :func:`heal_codes`.
        region_box: the region of the region scores, see :func:`region_mask`.
        brain_threshold: intensity threshold of the brain mask (:func:`brain_mask`).
        interpolation_mode: upsampling of the latent maps, see :func:`upsample_map`.
        sigma: optional Gaussian smoothing of the residual (pixels).
        seed: seed of the healing draws.
        image_key: image key of the batches.
        label_key: class label key.
        subject_key: subject key.
        class_names: ``{"0": "NC", "1": "AD"}`` for the CSV's ``class`` column.
        inferer: computes the NLL maps and the healing (default: a new
            :class:`~brainvq_monai.inferers.AutoregressivePriorInferer`; the config's ``inferer``).

    Returns:
        the path of ``scores.csv``.
    """
    num_classes = getattr(prior, "num_classes", None)
    if class_label is not None and (not num_classes or not 0 <= int(class_label) < num_classes):
        raise BrainVQInputError(
            "class_label", f"{class_label} is not a class of this prior (num_classes={num_classes})"
        )
    if num_classes and class_label is None:
        raise BrainVQInputError("class_label", "a conditional prior needs the normal class to score images under")
    out = Path(os.fspath(output_dir))
    out.mkdir(parents=True, exist_ok=True)
    names_of = {str(k): v for k, v in (class_names or {}).items()}
    inferer = inferer if inferer is not None else AutoregressivePriorInferer()
    generator = torch.Generator(device=device_of(prior)).manual_seed(int(seed))
    rows: list[dict[str, Any]] = []
    for batch in data:
        if image_key not in batch:
            raise BrainVQInputError("data", f"batch without '{image_key}'")
        image = batch[image_key]
        names = _item_names(batch, image, len(rows))
        x = plain_tensor(torch.as_tensor(image)).float().to(device_of(vqvae))
        n = x.shape[0]
        labels = None if class_label is None else torch.full((n,), int(class_label), dtype=torch.long)
        nll = inferer.get_anomaly_map(x, vqvae, prior, labels, interpolation_mode).to(x.device)
        healed = inferer.heal(x, vqvae, prior, threshold, labels, generator=generator)
        residual = residual_map(x, healed.image, healed.resampled, sigma, interpolation_mode).mean(1, keepdim=True)
        brain = brain_mask(x, brain_threshold, dilation=0)
        region = region_mask(x.shape[2:], region_box).to(x.device)
        scores = {
            "nll_brain": masked_mean(nll, brain),
            "nll_region": masked_mean(nll, region),
            "residual_brain": masked_mean(residual, brain),
            "residual_region": masked_mean(residual, region),
            "resampled_fraction": healed.resampled.float().flatten(1).mean(1),
        }
        item_labels = _as_list(batch.get(label_key), n)
        subjects = _as_list(batch.get(subject_key), n)
        suffix = ".png" if x.dim() == 4 else ".nii.gz"
        for j, name in enumerate(names):
            np.save(out / f"{name}_nll.npy", nll[j].cpu().numpy().astype(np.float32))
            np.save(out / f"{name}_residual.npy", residual[j].cpu().numpy().astype(np.float32))
            save_image(healed.image[j].clamp(0, 1), out / f"{name}_healed{suffix}")
            lab = item_labels[j]
            row = {"name": name, "subject": subjects[j], "label": lab, "class": names_of.get(str(lab), "")}
            row.update({k: float(v[j]) for k, v in scores.items()})
            rows.append(row)
    if not rows:
        raise BrainVQInputError("data", "no images to score")
    csv_path = out / "scores.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["name", "subject", "label", "class", *SCORE_COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    settings = {
        "class_label": class_label,
        "threshold": threshold,
        "region_box": [list(p) if isinstance(p, (list, tuple)) else p for p in region_box],
        "brain_threshold": brain_threshold,
        "interpolation_mode": interpolation_mode,
        "sigma": sigma,
        "seed": seed,
        "num_images": len(rows),
        "units": {"nll": "nats per token", "residual": "absolute intensity difference"},
    }
    (out / "anomaly_settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return csv_path

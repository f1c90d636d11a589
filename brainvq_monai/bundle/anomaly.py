"""Writing anomaly maps, healed images and per-image scores for a dataset (the ``anomaly.json`` workflow)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer
from brainvq_monai.networks.nets.prior import AutoregressivePrior
from brainvq_monai.utils.tensors import device_of

__all__ = ["save_anomaly_outputs"]


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
    from brainvq_monai.engines.evaluators import AnomalyEvaluator
    from brainvq_monai.handlers.anomaly import AnomalyWriter

    settings = {
        "class_label": class_label,
        "threshold": threshold,
        "region_box": [list(p) if isinstance(p, (list, tuple)) else p for p in region_box],
        "brain_threshold": brain_threshold,
        "interpolation_mode": interpolation_mode,
        "sigma": sigma,
        "seed": seed,
        "units": {"nll": "nats per token", "residual": "absolute intensity difference"},
    }
    writer = AnomalyWriter(output_dir, class_names, settings, label_key=label_key, subject_key=subject_key)
    evaluator = AnomalyEvaluator(
        device=device_of(prior), val_data_loader=data, network=prior, autoencoder=vqvae, inferer=inferer,
        class_label=class_label, threshold=threshold, region_box=region_box, brain_threshold=brain_threshold,
        interpolation_mode=interpolation_mode, sigma=sigma, seed=seed, val_handlers=[writer], image_key=image_key,
    )  # fmt: skip
    evaluator.run()
    return writer.scores_file

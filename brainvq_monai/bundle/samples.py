"""Sampling a trained prior to image files (the ``inference.json`` workflow, from Python)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset

from brainvq_monai.data.sampling import sampling_requests
from brainvq_monai.engines.evaluators import SamplingEvaluator
from brainvq_monai.handlers.samples import SampleWriter
from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer
from brainvq_monai.utils.tensors import device_of

__all__ = ["centred_affine", "generate_samples", "reference_affine"]


def reference_affine(item: Mapping[str, Any], transform: Any) -> np.ndarray | None:
    """The voxel-to-world affine of a preprocessed training image (so generated volumes share its grid).

    Args:
        item: a datalist item.
        transform: the deterministic preprocessing.

    Returns:
        the 4x4 affine, or ``None`` when the image carries none.
    """
    data = transform(dict(item))
    affine = getattr(data["image"], "affine", None)
    return None if affine is None else np.asarray(torch.as_tensor(affine).cpu(), dtype=np.float64)


def centred_affine(pixdim: Sequence[float], spatial_size: Sequence[int]) -> np.ndarray:
    """A RAS voxel-to-world affine with spacing ``pixdim`` whose grid centre is the world origin.

    The grid of generated volumes when no training image is at hand (an exported bundle samples without data):
    the preprocessing reorients to RAS, resamples to ``pixdim`` and centres the brain in ``spatial_size``.

    Args:
        pixdim: voxel spacing in mm.
        spatial_size: the volume's shape.

    Returns:
        the 4x4 affine.
    """
    spacing = np.asarray([float(p) for p in pixdim], dtype=np.float64)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -spacing * (np.asarray([int(s) for s in spatial_size], dtype=np.float64) - 1) / 2
    return affine


def generate_samples(
    vqvae: torch.nn.Module,
    prior: torch.nn.Module,
    output_dir: str | os.PathLike,
    num_samples: int = 8,
    class_label: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    latent_shape: Sequence[int] | None = None,
    class_names: Mapping[str, str] | None = None,
    affine: np.ndarray | None = None,
    batch_size: int = 16,
    top_p: float | None = None,
) -> list[Path]:
    """Samples the prior, decodes with the VQ-VAE and writes one file per sample under ``output_dir``.

    The same engine, inferer and writer as ``inference.json`` (:class:`~brainvq_monai.engines.SamplingEvaluator`,
    :class:`~brainvq_monai.inferers.AutoregressivePriorInferer`, :class:`~brainvq_monai.handlers.SampleWriter`):
    files ``sample_<class>_<NNNN>.png`` (2D) or ``.nii.gz`` (3D, with ``affine``), plus ``samples.json`` recording
    the settings, so a run can be reproduced.

    Args:
        vqvae: trained VQ-VAE (eval mode is enforced).
        prior: trained prior.
        output_dir: destination folder.
        num_samples: number of samples (per class for a conditional prior without ``class_label``).
        class_label: class to sample for a conditional prior (``None``: unconditional prior required, or every
            class in turn for a conditional one, ``num_samples`` each).
        temperature: sampling temperature.
        top_k: optional top-k truncation.
        seed: random seed (the same seed gives the same files).
        latent_shape: code map shape (default: the prior's own, for the transformer).
        class_names: ``{"0": "NC", "1": "AD"}`` names used in file names.
        affine: voxel-to-world affine of generated volumes.
        batch_size: samples drawn at once.
        top_p: optional nucleus truncation.

    Returns:
        the written image paths.
    """
    requests = sampling_requests(num_samples, class_label, getattr(prior, "num_classes", None), class_names)
    settings = {"num_samples": num_samples, "class_label": class_label, "temperature": temperature}
    writer = SampleWriter(output_dir, affine, {**settings, "top_k": top_k, "top_p": top_p, "seed": seed})
    evaluator = SamplingEvaluator(
        device=device_of(prior),
        val_data_loader=DataLoader(Dataset(requests), batch_size=batch_size, shuffle=False, num_workers=0),
        network=prior,
        autoencoder=vqvae,
        inferer=AutoregressivePriorInferer(),
        latent_shape=latent_shape,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        val_handlers=[writer],
    )
    evaluator.run()
    return list(writer.written)

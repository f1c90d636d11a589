"""Sampling a trained prior to image files (the ``inference.json`` workflow)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainvq_monai.data.writers import save_image
from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.io import atomic_write_json

__all__ = ["generate_samples", "reference_affine"]

logger = logging.getLogger(__name__)


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

    Files are ``sample_<class>_<NNNN>.png`` (2D) or ``.nii.gz`` (3D, with ``affine``), plus ``samples.json``
    recording the settings, so a run can be reproduced.

    Args:
        vqvae: trained VQ-VAE (eval mode is enforced).
        prior: trained prior.
        output_dir: destination folder.
        num_samples: number of samples.
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
    if num_samples < 1:
        raise BrainVQInputError("num_samples", f"must be >= 1, got {num_samples}")
    num_classes = getattr(prior, "num_classes", None)
    if class_label is not None and not num_classes:
        raise BrainVQInputError("class_label", "given, but the prior is unconditional (trained without labels)")
    if class_label is not None and not 0 <= int(class_label) < num_classes:
        raise BrainVQInputError("class_label", f"must lie in [0, {num_classes - 1}], got {class_label}")
    classes: list[int | None] = (
        [int(class_label)] if class_label is not None else (list(range(num_classes)) if num_classes else [None])
    )
    names = {int(k): v for k, v in (class_names or {}).items()}
    out = Path(os.fspath(output_dir))
    inferer = AutoregressivePriorInferer()
    device = next(prior.parameters()).device
    generator = torch.Generator(device=device).manual_seed(int(seed))
    written: list[Path] = []
    spatial_dims = getattr(prior, "spatial_dims", 2)
    suffix = ".png" if spatial_dims == 2 else ".nii.gz"
    for c in classes:
        tag = "all" if c is None else names.get(c, f"class{c}")
        done = 0
        while done < num_samples:
            n = min(batch_size, num_samples - done)
            labels = None if c is None else torch.full((n,), c, dtype=torch.long)
            images = inferer.sample(
                vqvae,
                prior,
                n,
                latent_shape,
                labels,
                temperature,
                top_k,
                generator=generator,
                verbose=False,
                top_p=top_p,
            )
            for j, img in enumerate(images):
                written.append(save_image(img.clamp(0, 1), out / f"sample_{tag}_{done + j:04d}{suffix}", affine))
            done += n
            logger.info(f"sampled {done}/{num_samples} ({tag})")
    settings = {
        "num_samples": num_samples,
        "class_label": class_label,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "seed": seed,
        "files": [p.name for p in written],
    }
    atomic_write_json(out / "samples.json", settings)
    return written

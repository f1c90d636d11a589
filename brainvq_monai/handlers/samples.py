"""Writes the images a :class:`~brainvq_monai.engines.SamplingEvaluator` draws, and a record of the run."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from brainvq_monai.data.writers import save_image
from brainvq_monai.utils.io import atomic_write_json

__all__ = ["SampleWriter"]

logger = logging.getLogger(__name__)


class SampleWriter:
    """Saves each sampled image as ``<output_dir>/<name>.png`` (2D) or ``.nii.gz`` (3D, with ``affine``) and, when
    the run completes, ``samples.json`` with the sampling settings and the file names.

    Args:
        output_dir: destination folder (created).
        affine: 4x4 voxel-to-world affine of generated volumes (``None``: identity).
        settings: what to record in ``samples.json`` (sampling settings, seed).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        affine: np.ndarray | torch.Tensor | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.output_dir = Path(os.path.abspath(os.fspath(output_dir)))
        self.affine = affine
        self.settings = dict(settings or {})
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        """Registers the writer on the sampling engine.

        Args:
            engine: a :class:`~brainvq_monai.engines.SamplingEvaluator`.
        """
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._save_batch)
        engine.add_event_handler(Events.COMPLETED, self._save_record)

    def _reset(self, engine: Engine) -> None:
        self.written = []

    def _save_batch(self, engine: Engine) -> None:
        output = engine.state.output
        images = output["pred"]
        suffix = ".png" if images.dim() == 4 else ".nii.gz"
        for image, name in zip(images, output["name"]):
            self.written.append(save_image(image.clamp(0, 1), self.output_dir / f"{name}{suffix}", self.affine))
        total = len(engine.data_loader.dataset) if hasattr(engine.data_loader, "dataset") else "?"
        logger.info(f"sampled {len(self.written)}/{total} images")

    def _save_record(self, engine: Engine) -> None:
        record = {**self.settings, "files": [p.name for p in self.written]}
        atomic_write_json(self.output_dir / "samples.json", record)

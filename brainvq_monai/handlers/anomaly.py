"""Writes what an :class:`~brainvq_monai.engines.AnomalyEvaluator` scores: maps, healed images, a CSV of scores."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from brainvq_monai.data.writers import save_image
from brainvq_monai.inferers.anomaly import SCORE_COLUMNS
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["AnomalyWriter"]


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


class AnomalyWriter:
    """Per image ``<index>_<name>``: ``<name>_nll.npy`` (``(1, *image)`` NLL map, nats), ``<name>_residual.npy``
    (healing residual restricted to resampled tokens) and ``<name>_healed.png`` (2D) / ``.nii.gz`` (3D), in the
    array convention of :func:`~brainvq_monai.data.writers.save_image`; when the run completes ``scores.csv`` (one
    row per image: ``name, subject, label, class`` and :data:`~brainvq_monai.inferers.anomaly.SCORE_COLUMNS`) and
    ``anomaly_settings.json``.

    Args:
        output_dir: destination folder (created).
        class_names: ``{"0": "NC", "1": "AD"}`` for the CSV's ``class`` column.
        settings: what ``anomaly_settings.json`` records.
        label_key: class label key of the batches.
        subject_key: subject key of the batches.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Mapping[str, str] | None = None,
        settings: Mapping[str, Any] | None = None,
        label_key: str = "label",
        subject_key: str = "subject",
    ) -> None:
        self.output_dir = Path(os.path.abspath(os.fspath(output_dir)))
        self.class_names = {str(k): v for k, v in (class_names or {}).items()}
        self.settings = dict(settings or {})
        self.label_key, self.subject_key = label_key, subject_key
        self.rows: list[dict[str, Any]] = []

    @property
    def scores_file(self) -> Path:
        """The CSV of scores."""
        return self.output_dir / "scores.csv"

    def attach(self, engine: Engine) -> None:
        """Registers the writer on the anomaly engine.

        Args:
            engine: an :class:`~brainvq_monai.engines.AnomalyEvaluator`.
        """
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._save_batch)
        engine.add_event_handler(Events.COMPLETED, self._save_table)

    def _start(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.rows = []

    def _save_batch(self, engine: Engine) -> None:
        out = engine.state.output
        batch, image = out["batch"], out["image"]
        names = _item_names(batch, image, len(self.rows))
        n = len(names)
        labels, subjects = _as_list(batch.get(self.label_key), n), _as_list(batch.get(self.subject_key), n)
        suffix = ".png" if image.dim() == 4 else ".nii.gz"
        for j, name in enumerate(names):
            np.save(self.output_dir / f"{name}_nll.npy", out["nll"][j].cpu().numpy().astype(np.float32))
            np.save(self.output_dir / f"{name}_residual.npy", out["residual"][j].cpu().numpy().astype(np.float32))
            save_image(out["pred"][j].clamp(0, 1), self.output_dir / f"{name}_healed{suffix}")
            row = {"name": name, "subject": subjects[j], "label": labels[j]}
            row["class"] = self.class_names.get(str(labels[j]), "")
            row.update({k: float(v[j]) for k, v in out["scores"].items()})
            self.rows.append(row)

    def _save_table(self, engine: Engine) -> None:
        if not self.rows:
            raise BrainVQInputError("data", "no images to score")
        with open(self.scores_file, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["name", "subject", "label", "class", *SCORE_COLUMNS])
            writer.writeheader()
            writer.writerows(self.rows)
        settings = {**self.settings, "num_images": len(self.rows)}
        (self.output_dir / "anomaly_settings.json").write_text(json.dumps(settings, indent=2) + "\n")

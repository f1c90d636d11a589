"""Ignite metric handlers missing from MONAI (SSIM, MS-SSIM) and a JSON writer of an engine's metrics."""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import IgniteMetricHandler
from monai.metrics import SSIMMetric

from brainvq_monai.metrics.ssim import multiscale_ssim_metric
from brainvq_monai.utils.io import atomic_write_json

__all__ = ["SSIMHandler", "MultiScaleSSIMHandler", "MetricsJSONWriter", "batch_item_names", "reconstruction_metrics"]


class SSIMHandler(IgniteMetricHandler):
    """Structural similarity as an Ignite metric (MONAI has the metric but no handler).

    Args:
        spatial_dims: 2 or 3.
        data_range: intensity range of the images.
        kernel_size: Gaussian window size.
        output_transform: engine output -> ``(y_pred, y)``.
        save_details: keep per-image values in ``engine.state.metric_details`` (for ``MetricsSaver``).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        data_range: float = 1.0,
        kernel_size: int = 11,
        output_transform: Callable = lambda out: (out["pred"], out["label"]),
        save_details: bool = True,
    ) -> None:
        metric = SSIMMetric(spatial_dims=spatial_dims, data_range=data_range, win_size=kernel_size)
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=save_details)


class MultiScaleSSIMHandler(IgniteMetricHandler):
    """Multi-scale SSIM with a window and number of scales valid for ``image_size`` (see ``multiscale_ssim_metric``).

    Args:
        spatial_dims: 2 or 3.
        image_size: smallest spatial size of the images.
        data_range: intensity range.
        kernel_size: Gaussian window size.
        output_transform: engine output -> ``(y_pred, y)``.
        save_details: keep per-image values.
    """

    def __init__(
        self,
        spatial_dims: int,
        image_size: int | Sequence[int],
        data_range: float = 1.0,
        kernel_size: int = 7,
        output_transform: Callable = lambda out: (out["pred"], out["label"]),
        save_details: bool = True,
    ) -> None:
        metric = multiscale_ssim_metric(spatial_dims, image_size, data_range, kernel_size)
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=save_details)


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.item() if value.size == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class MetricsJSONWriter:
    """Writes ``engine.state.metrics`` (plus context) to a JSON file when the engine completes.

    Existing keys written by other runs into the same file are kept (each evaluator merges its ``section``), so a
    VQ-VAE evaluation and a prior evaluation can share one ``metrics.json``.

    Args:
        filepath: the JSON file.
        section: key under which this engine's metrics are stored (e.g. ``"reconstruction"``, ``"prior"``).
        extra: further context stored in the section (data split, checkpoint, sample counts ...).
    """

    def __init__(self, filepath: str | os.PathLike, section: str, extra: Mapping[str, Any] | None = None) -> None:
        self.filepath = os.fspath(filepath)
        self.section = section
        self.extra = dict(extra or {})

    def attach(self, engine: Engine) -> None:
        """Attaches to ``engine`` (writes at ``COMPLETED``).

        Args:
            engine: an Ignite engine.
        """
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        data: dict[str, Any] = {}
        if os.path.isfile(self.filepath):
            with open(self.filepath) as f:
                data = json.load(f)
        data[self.section] = {
            "metrics": _jsonable(dict(engine.state.metrics)),
            "num_iterations": int(engine.state.iteration),
            "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **_jsonable(self.extra),
        }
        atomic_write_json(self.filepath, data, sort_keys=True)


def batch_item_names(batch: Mapping[str, Any], image_key: str = "image", slice_key: str = "slice") -> list[dict]:
    """Per-item names of a collated batch for ``MetricsSaver`` (``batch_transform``): the image file, plus
    ``#slice=k`` for slices taken from volumes.

    Args:
        batch: a collated batch (``engine.state.batch``) whose images are MONAI ``MetaTensor``.
        image_key: key of the images.
        slice_key: key of the slice index, when present.

    Returns:
        a list of ``{"filename_or_obj": name}``.
    """
    image = batch[image_key]
    meta = getattr(image, "meta", {}) or {}
    names = meta.get("filename_or_obj") or [f"item{i}" for i in range(len(image))]
    names = [names] if isinstance(names, str) else list(names)
    slices = batch.get(slice_key)
    if slices is not None:
        names = [f"{n}#slice={int(k)}" for n, k in zip(names, torch.as_tensor(slices).reshape(-1).tolist())]
    return [{"filename_or_obj": n} for n in names]


def reconstruction_metrics(
    prefix: str, spatial_dims: int, spatial_size: Sequence[int], num_embeddings: int
) -> dict[str, Any]:
    """The additional reconstruction metrics of a VQ-VAE evaluator (its key metric is ``<prefix>_ssim``): MS-SSIM,
    PSNR, MAE and MSE of ``pred`` against ``label``, codebook perplexity and codes used over the epoch.

    One definition for validation (``prefix="val"``) and testing (``"test"``), so both report the same metrics.

    Args:
        prefix: metric name prefix, e.g. ``"val"`` or ``"test"``.
        spatial_dims: 2 or 3.
        spatial_size: image size (MS-SSIM uses as many scales as it allows).
        num_embeddings: codebook size.

    Returns:
        ``{name: Ignite metric}``.
    """
    from monai.handlers import MeanAbsoluteError, MeanSquaredError, PeakSignalToNoiseRatio, from_engine

    from brainvq_monai.metrics import CodebookPerplexity, CodesUsed

    pair = from_engine(["pred", "label"])
    return {
        f"{prefix}_ms_ssim": MultiScaleSSIMHandler(spatial_dims=spatial_dims, image_size=spatial_size),
        f"{prefix}_psnr": PeakSignalToNoiseRatio(max_val=1.0, output_transform=pair),
        f"{prefix}_mae": MeanAbsoluteError(output_transform=pair),
        f"{prefix}_mse": MeanSquaredError(output_transform=pair),
        f"{prefix}_perplexity": CodebookPerplexity(num_embeddings=num_embeddings),
        f"{prefix}_codes_used": CodesUsed(num_embeddings=num_embeddings),
    }

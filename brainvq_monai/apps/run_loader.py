"""Rebuild the trained networks, data and settings of a run folder (``brainvq demo`` or any bundle run).

Training records the run's config in ``run_settings.json`` (:mod:`brainvq_monai.bundle.run`); :func:`load_run`
rebuilds everything from it through MONAI's parser: 2D and 3D bundles, PNG/JPEG slices, NIfTI slices and volumes.
Runs of brainvq_monai < 0.2.0 (``run_config.json``) are refused with one line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["RunArtifacts", "load_run"]


@dataclass
class RunArtifacts:
    """What :func:`load_run` rebuilds from a run folder.

    Attributes:
        run_dir: the run folder.
        config: the run record (``run_settings.json``: settings, network arguments, paths, the baked config).
        settings: the settings the run recorded (image size, codebook, classes, prior, data format).
        datalist: the datalist dict (image paths relocated when the run folder was moved).
        vqvae: the trained VQ-VAE (eval mode).
        prior: the trained prior (eval mode).
        prior_name: ``"transformer"`` or ``"pixelcnn"``.
        class_names: ``{class id: name}`` (empty for unconditional priors).
        spatial_size: image size.
        latent_shape: code map size.
        preprocessing: the deterministic ``brain_transforms`` (eval).
    """

    run_dir: Path
    config: dict[str, Any]
    settings: dict[str, Any]
    datalist: dict[str, Any]
    vqvae: torch.nn.Module
    prior: torch.nn.Module
    prior_name: str
    class_names: dict[int, str]
    spatial_size: tuple[int, ...]
    latent_shape: tuple[int, ...]
    preprocessing: Any
    _cache: dict[tuple[str, int | None], tuple[torch.Tensor, torch.Tensor | None]] = field(
        default_factory=dict, repr=False
    )

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return len(self.spatial_size)

    @property
    def conditional(self) -> bool:
        """Whether the prior is class-conditional."""
        return bool(getattr(self.prior, "num_classes", None))

    def items(self, split: str, max_items: int | None = None) -> list[dict[str, Any]]:
        """Datalist items of ``split`` (``training``, ``validation``, ``test``), evenly thinned to ``max_items``.

        Args:
            split: split name.
            max_items: keep at most this many (evenly spaced, so classes and slices stay represented).

        Returns:
            the items.
        """
        if split not in self.datalist or not isinstance(self.datalist[split], list):
            raise BrainVQInputError("split", f"{split!r} is not a split of the run's datalist")
        items = list(self.datalist[split])
        if max_items is not None and 0 < max_items < len(items):
            step = len(items) / max_items
            items = [items[int(i * step)] for i in range(max_items)]
        return items

    def load_images(self, split: str, max_items: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Preprocessed images of a split (cached per split).

        Args:
            split: split name.
            max_items: see :meth:`items`.

        Returns:
            ``(images (N, 1, *spatial_size) float in [0, 1], labels (N,) long or None)``.
        """
        key = (split, max_items)
        if key not in self._cache:
            items = self.items(split, max_items)
            if not items:
                raise BrainVQInputError("split", f"{split!r} is empty")
            images, labels = [], []
            for it in items:
                d = self.preprocessing(dict(it))
                images.append(torch.as_tensor(d["image"]).as_tensor().float())
                labels.append(it.get("label"))
            lab = torch.tensor(labels, dtype=torch.long) if all(v is not None for v in labels) else None
            self._cache[key] = (torch.stack(images), lab)
        return self._cache[key]


def _relocate(datalist: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Moved run folders: rewrite image paths under a vanished ``root`` to ``run_dir/data``."""
    root = datalist.get("root")
    new_root = run_dir / "data"
    if not root or Path(root).exists() or not new_root.is_dir():
        return datalist
    out = dict(datalist)
    for split in ("training", "validation", "test"):
        items = []
        for it in datalist.get(split, []) or []:
            it = dict(it)
            for key in ("image", "label_image", "seg"):
                if isinstance(it.get(key), str) and it[key].startswith(root):
                    it[key] = str(new_root) + it[key][len(root) :]
            items.append(it)
        out[split] = items
    out["root"] = str(new_root)
    return out


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> RunArtifacts:
    """Loads a run folder: a ``brainvq demo`` output or a bundle run (its ``output_dir``, or a bundle folder trained
    in place), from the config its training recorded.

    Args:
        run_dir: the run folder.
        device: where to put the networks.

    Returns:
        :class:`RunArtifacts`, networks in eval mode.

    Raises:
        BrainVQInputError: missing folder, record, datalist or checkpoints.
    """
    from brainvq_monai.bundle.run import find_run_record, run_parser
    from brainvq_monai.bundle.utils import load_network

    record_file = find_run_record(run_dir)
    parser, record = run_parser(run_dir, device)
    datalist_file = Path(parser.get_parsed_content("datalist"))
    if not datalist_file.is_file():
        raise BrainVQInputError(datalist_file, "the run's datalist is not found")
    datalist = _relocate(json.loads(datalist_file.read_text()), record_file.parent)
    vqvae = parser.get_parsed_content("autoencoder").eval()
    prior = load_network(parser.get_parsed_content("prior_def"), parser.get_parsed_content("prior_ckpt"), device)
    prior = prior.eval()
    num_classes = parser.get_parsed_content("num_classes")
    class_names = {int(k): str(v) for k, v in parser.get_parsed_content("class_names").items()} if num_classes else {}
    return RunArtifacts(
        run_dir=record_file.parent,
        config=record,
        settings=dict(record.get("settings", {})),
        datalist=datalist,
        vqvae=vqvae,
        prior=prior,
        prior_name=str(parser.get_parsed_content("prior")),
        class_names=class_names,
        spatial_size=tuple(int(v) for v in parser.get_parsed_content("spatial_size")),
        latent_shape=tuple(int(v) for v in parser.get_parsed_content("latent_shape")),
        preprocessing=parser.get_parsed_content("preprocessing"),
    )

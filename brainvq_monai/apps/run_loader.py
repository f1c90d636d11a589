"""Rebuild the trained networks, data and settings of a ``brainvq demo`` / bundle run folder.

A run folder holds ``models/vqvae.pt``, ``models/prior_<name>.pt``, ``datalist_<format>.json`` and, written by
:func:`brainvq_monai.apps.demo.run_demo`, ``run_config.json`` (:func:`write_run_config`) with everything needed to
rebuild the networks. Older demo runs without it are read from ``demo_summary.json`` and the demo defaults.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.io import atomic_write_json

__all__ = ["RUN_CONFIG", "RunArtifacts", "load_run", "run_config_from_settings", "write_run_config"]

RUN_CONFIG = "run_config.json"
RUN_CONFIG_VERSION = 1


def _bundle_vqvae_def(bundle: str) -> dict[str, Any]:
    from brainvq_monai.bundle.utils import default_bundle_root

    config = Path(default_bundle_root(bundle, cwd_copy=False)) / "configs" / "inference.json"
    if not config.is_file():
        raise BrainVQInputError(config, "bundle config not found")
    return dict(json.loads(config.read_text())["vqvae_def"])


def run_config_from_settings(
    settings: Mapping[str, Any],
    prior: str,
    subjects: int | None = None,
    seed: int = 0,
    data_format: str = "adni",
    bundle: str = "brain_vqvae_2d",
) -> dict[str, Any]:
    """The ``run_config.json`` content of a demo run with ``settings`` (see ``DEMO_SETTINGS``).

    Args:
        settings: demo settings (``spatial_size``, ``num_embeddings``, ``embedding_dim``, ``vqvae_channels``,
            ``vqvae_res_layers``, ``transformer``, ``pixelcnn``, ...).
        prior: ``"transformer"`` or ``"pixelcnn"``.
        subjects: demo cohort size.
        seed: seed of the run.
        data_format: datalist format.
        bundle: bundle whose config holds the VQ-VAE down/upsampling parameters.

    Returns:
        the JSON-able config (checkpoint and datalist paths relative to the run folder).
    """
    from brainvq_monai.apps.demo import vqvae_architecture

    vq = _bundle_vqvae_def(bundle)
    vq.pop("_target_", None)
    vq.update(
        num_embeddings=int(settings["num_embeddings"]),
        embedding_dim=int(settings["embedding_dim"]),
        **vqvae_architecture(settings),
    )
    spatial_size = [int(s) for s in settings["spatial_size"]]
    return {
        "run_config_version": RUN_CONFIG_VERSION,
        "bundle": bundle,
        "data_format": data_format,
        "subjects": subjects,
        "seed": int(seed),
        "spatial_dims": len(spatial_size),
        "spatial_size": spatial_size,
        "slices": None,
        "datalist": f"datalist_{data_format}.json",
        "conditional": True,
        "prior": prior,
        "vqvae_def": vq,
        "prior_args": dict(settings[prior]),
        "checkpoints": {"vqvae": "models/vqvae.pt", "prior": f"models/prior_{prior}.pt"},
        "settings": json.loads(json.dumps(dict(settings), default=str)),
    }


def write_run_config(run_dir: str | os.PathLike, config: Mapping[str, Any]) -> Path:
    """Writes ``run_dir/run_config.json``.

    Args:
        run_dir: the run folder.
        config: from :func:`run_config_from_settings`.

    Returns:
        the written path.
    """
    return atomic_write_json(Path(os.fspath(run_dir)) / RUN_CONFIG, dict(config))


@dataclass
class RunArtifacts:
    """What :func:`load_run` rebuilds from a run folder.

    Attributes:
        run_dir: the run folder.
        config: the run config (``run_config.json`` or reconstructed).
        settings: the demo settings of the run.
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


def _legacy_config(run_dir: Path) -> dict[str, Any]:
    """A config for demo runs written before ``run_config.json`` existed."""
    from brainvq_monai.apps.demo import DEMO_SETTINGS

    summary_file = run_dir / "demo_summary.json"
    prior = None
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        prior = ((summary.get("results") or {}).get("prior") or {}).get("prior")
    if prior is None:
        found = sorted(p.stem.split("_", 1)[1] for p in (run_dir / "models").glob("prior_*.pt") if "last" not in p.stem)
        if not found:
            raise BrainVQInputError(
                run_dir, f"no {RUN_CONFIG}, demo_summary.json or models/prior_*.pt: not a run folder"
            )
        prior = found[0]
    return run_config_from_settings(DEMO_SETTINGS, prior)


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> RunArtifacts:
    """Loads a run folder written by ``brainvq demo`` (or the bundle configs with demo-like settings).

    Args:
        run_dir: the run folder.
        device: where to put the networks.

    Returns:
        :class:`RunArtifacts`.

    Raises:
        BrainVQInputError: missing folder, config, datalist or checkpoints.
    """
    from brainvq_monai.bundle.utils import latent_shape_of, load_network
    from brainvq_monai.networks.nets.factory import build_prior
    from brainvq_monai.networks.nets.vqvae import BrainVQVAE
    from brainvq_monai.transforms import brain_transforms

    run = Path(os.path.abspath(os.fspath(run_dir)))
    if not run.is_dir():
        raise BrainVQInputError(run, "run folder not found")
    config_file = run / RUN_CONFIG
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            raise BrainVQInputError(config_file, f"not valid JSON ({err.msg}, line {err.lineno})") from None
    else:
        config = _legacy_config(run)
    datalist_file = run / config.get("datalist", "datalist_adni.json")
    if not datalist_file.is_file():
        raise BrainVQInputError(datalist_file, "datalist not found in the run folder")
    datalist = _relocate(json.loads(datalist_file.read_text()), run)
    class_names = {int(k): str(v) for k, v in (datalist.get("labels") or {}).items()}
    spatial_size = tuple(int(s) for s in config["spatial_size"])
    spatial_dims = int(config.get("spatial_dims", len(spatial_size)))
    checkpoints = config.get("checkpoints", {})
    vqvae = BrainVQVAE(**config["vqvae_def"])
    load_network(vqvae, run / checkpoints.get("vqvae", "models/vqvae.pt"), device)
    latent_shape = latent_shape_of(vqvae, spatial_size)
    prior_name = config["prior"]
    num_classes = len(class_names) if config.get("conditional", True) and class_names else None
    prior = build_prior(
        prior_name,
        spatial_dims,
        int(config["vqvae_def"]["num_embeddings"]),
        latent_shape,
        num_classes,
        **{prior_name: config.get("prior_args", {})},
    )
    load_network(prior, run / checkpoints.get("prior", f"models/prior_{prior_name}.pt"), device)
    preprocessing = brain_transforms(
        spatial_dims, spatial_size, train=False, from_volume_slices=config.get("slices") is not None
    )
    return RunArtifacts(
        run_dir=run,
        config=config,
        settings=dict(config.get("settings", {})),
        datalist=datalist,
        vqvae=vqvae,
        prior=prior,
        prior_name=prior_name,
        class_names=class_names if num_classes else {},
        spatial_size=spatial_size,
        latent_shape=tuple(latent_shape),
        preprocessing=preprocessing,
    )

"""The layout of a brainvq bundle, in one place: its config files, config IDs and weight file names.

Every bundle (``bundles/brain_vqvae_2d``, ``bundles/brain_vqvae_3d`` and bundles written by ``brainvq
export-bundle``) has the same structure, model-zoo style: ``configs/common.json`` holds everything the workflows share
(paths, data, ``spatial_dims``, preprocessing, ``autoencoder_def``, ``prior_def``, class names) and each workflow is a
thin overlay run as a list, e.g. ``--config_file "['configs/common.json','configs/train_vqvae.json']"``;
``multi_gpu_train.json`` goes last over a training workflow. Weights follow the zoo's names: ``models/model.pt`` for
the workflow's ``network_def`` (the prior) and ``models/model_autoencoder.pt`` for the VQ-VAE.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from brainvq_monai.utils.errors import BrainVQInputError

__all__ = [
    "AUTOENCODER_ID",
    "AUTOENCODER_WEIGHTS",
    "COMMON_CONFIG",
    "MULTI_GPU_CONFIG",
    "NETWORK_ID",
    "PRIOR_ID",
    "PRIOR_WEIGHTS",
    "WORKFLOWS",
    "config_files",
    "config_list_arg",
    "read_bundle_config",
]

COMMON_CONFIG = "common.json"
MULTI_GPU_CONFIG = "multi_gpu_train.json"
WORKFLOWS: dict[str, str] = {
    "train_vqvae": "train_vqvae.json",
    "train_prior": "train_prior.json",
    "evaluate": "evaluate.json",
    "inference": "inference.json",
    "anomaly": "anomaly.json",
}
"""Workflow name -> its overlay in ``configs/``."""

AUTOENCODER_ID = "autoencoder_def"
"""The VQ-VAE's definition in every config (``autoencoder`` is the loaded network)."""
PRIOR_ID = "prior_def"
"""The prior's definition in every config."""
NETWORK_ID = "network_def"
"""The network a workflow is about: the VQ-VAE in ``train_vqvae``/``evaluate``, the prior elsewhere."""
AUTOENCODER_WEIGHTS = "model_autoencoder.pt"
PRIOR_WEIGHTS = "model.pt"


def config_files(bundle_root: str | os.PathLike, workflow: str, multi_gpu: bool = False) -> list[str]:
    """The config list of a workflow: ``configs/common.json``, the workflow's overlay, ``multi_gpu_train.json``.

    Args:
        bundle_root: the bundle folder.
        workflow: a key of :data:`WORKFLOWS` (or its file name, e.g. ``"train_vqvae.json"``).
        multi_gpu: add the multi-GPU overlay (training workflows only).

    Returns:
        absolute paths, in the order ``--config_file`` takes them.

    Raises:
        BrainVQInputError: unknown workflow, multi-GPU for a workflow that does not train, or a missing file.
    """
    name = workflow.removesuffix(".json")
    if name not in WORKFLOWS:
        raise BrainVQInputError("workflow", f"must be one of {', '.join(WORKFLOWS)}, got {workflow!r}")
    if multi_gpu and not name.startswith("train"):
        raise BrainVQInputError("workflow", f"{name} does not train; multi-GPU runs are for train_vqvae/train_prior")
    configs = Path(os.path.abspath(os.fspath(bundle_root))) / "configs"
    names = [COMMON_CONFIG, WORKFLOWS[name], *([MULTI_GPU_CONFIG] if multi_gpu else [])]
    files = [configs / n for n in names]
    for f in files:
        if not f.is_file():
            raise BrainVQInputError(f, "bundle config not found (is bundle_root a brainvq bundle folder?)")
    return [str(f) for f in files]


def config_list_arg(workflow: str, multi_gpu: bool = False) -> str:
    """The ``--config_file`` argument of ``python -m monai.bundle run`` from inside a bundle folder.

    Args:
        workflow: a key of :data:`WORKFLOWS`.
        multi_gpu: add the multi-GPU overlay.

    Returns:
        e.g. ``"['configs/common.json','configs/train_vqvae.json']"``.
    """
    name = workflow.removesuffix(".json")
    names = [COMMON_CONFIG, WORKFLOWS[name], *([MULTI_GPU_CONFIG] if multi_gpu else [])]
    return "[" + ",".join(f"'configs/{n}'" for n in names) + "]"


def read_bundle_config(bundle_root: str | os.PathLike, workflow: str) -> Any:
    """A workflow's merged config (common + overlay), read but not resolved, for code that needs its values.

    Args:
        bundle_root: the bundle folder.
        workflow: a key of :data:`WORKFLOWS`.

    Returns:
        a ``monai.bundle.ConfigParser``; ``parser[id]`` is the raw value, ``parser.get_parsed_content(id)`` the
        evaluated one.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files(bundle_root, workflow))
    parser["bundle_root"] = str(Path(os.path.abspath(os.fspath(bundle_root))))
    return parser

"""Helpers that keep the bundle configs thin: data bootstrap, checkpoints, cached codes, paths."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.io import atomic_write_text, load_torch_file
from brainvq_monai.utils.rng import preserved_rng
from brainvq_monai.utils.settings import as_bool
from brainvq_monai.utils.state import load_state_dict_checked

__all__ = [
    "BUNDLE_NAMES",
    "as_bool",
    "default_bundle_root",
    "ensure_datalist",
    "load_network",
    "encode_codes",
    "latent_shape_of",
    "perceptual_network",
    "training_prepare_batch",
    "training_state",
]

logger = logging.getLogger(__name__)


BUNDLE_NAMES: tuple[str, ...] = ("brain_vqvae_2d", "brain_vqvae_3d")
"""The MONAI bundles this package ships (folders of ``bundles/`` in the repository)."""


def _bundle_folders() -> list[Path]:
    """Where the bundles may be: the package data of an installed wheel, then ``bundles/`` of a source checkout."""
    folders = []
    shipped = importlib.resources.files("brainvq_monai") / "_bundles"  # a wheel: brainvq_monai/_bundles/<name>
    if isinstance(shipped, Path):  # a folder on disk, not a zip archive
        folders.append(shipped)
    # a checkout (PYTHONPATH or an editable install, whose brainvq_monai is the checkout's): bundles/ beside it
    folders.append(Path(__file__).resolve().parents[2] / "bundles")
    return folders


def default_bundle_root(name: str) -> str:
    """The folder of bundle ``name`` shipped with this package: in an installed wheel or a source checkout.

    Looked up in this order: the copy an installed wheel ships as package data (``brainvq_monai/_bundles/<name>``),
    then ``bundles/<name>`` beside the package in a source checkout (an editable install, or ``PYTHONPATH``). The
    bundle configs themselves use ``bundle_root: "."`` (any copy of the folder works, as in the model zoo);
    ``brainvq demo`` and the tools run the package's own copy with an explicit ``bundle_root``.

    Args:
        name: bundle name, one of :data:`BUNDLE_NAMES`, e.g. ``"brain_vqvae_2d"``.

    Returns:
        an absolute path.

    Raises:
        BrainVQInputError: an unknown bundle name (the message lists the known ones), or a known bundle whose
            folder is in none of the places above (an incomplete install).
    """
    if name not in BUNDLE_NAMES:
        raise BrainVQInputError(name, f"unknown bundle; the bundles are {', '.join(BUNDLE_NAMES)}")
    searched = [folder / name for folder in _bundle_folders()]
    found = next((f for f in searched if (f / "configs").is_dir()), None)
    if found is None:
        where = ", ".join(dict.fromkeys(str(f) for f in searched))
        raise BrainVQInputError(name, f"bundle folder not found (looked in {where}); reinstall brainvq_monai")
    return str(found.resolve())


def _data_root(dataset_dir: Path, data_format: str) -> Path:
    if data_format == "nifti" and (dataset_dir / "nifti").is_dir():
        return dataset_dir / "nifti"
    return dataset_dir


# what each format's dataset_dir holds, for the error of a missing or empty folder
_EXPECTED = {
    "adni": "an ADNI folder (AD_NC/{train,test}/{AD,NC}/<patient>_<slice>.jpeg)",
    "oasis": "an OASIS folder (keras_png_slices_train/, keras_png_slices_validate/, keras_png_slices_test/)",
    "nifti": "NIfTI volumes (*.nii.gz, with participants.tsv for labels)",
}


def _check_datalist_object(data: Any, path: Path) -> None:
    if not isinstance(data, Mapping):
        kind = "an empty list" if data == [] else f"a JSON {type(data).__name__}"
        raise BrainVQInputError(
            path, f"expected a JSON object with 'training', 'validation' and 'test' lists, got {kind}"
        )
    for split in ("training", "validation"):
        if split not in data:
            raise BrainVQInputError(path, f"has no '{split}' list (keys: {', '.join(map(str, data)) or 'none'})")
    for split in ("training", "validation", "test"):
        if split in data and not isinstance(data[split], list):
            raise BrainVQInputError(path, f"'{split}' must be a list of items, got a {type(data[split]).__name__}")


def ensure_datalist(
    datalist: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    data_format: str = "adni",
    slices: str | None = None,
    create_demo: bool | str = False,
    demo_subjects: int = 20,
    seed: int = 0,
    val_fraction: float = 0.2,
) -> dict[str, Any]:
    """Loads the datalist, building it from ``dataset_dir`` when it does not exist yet.

    * ``datalist`` exists: it is loaded and its structure checked (a JSON object with ``training`` and
      ``validation`` lists); its ``root`` must lie in ``dataset_dir`` (else a one-line error: a datalist for other
      data was given).
    * otherwise the datalist is built from ``dataset_dir`` (``brainvq datalist``) and written to ``datalist``. A
      missing, empty or mistyped ``dataset_dir`` is a one-line error naming it, what was expected there and the
      command that makes demo data; the demo cohort is only created there when ``create_demo`` asks for it (config
      ID ``create_demo_data``), never as a fallback. A user's data folder is only read.

    Args:
        datalist: path of the datalist JSON.
        dataset_dir: dataset folder (OASIS / ADNI / NIfTI data, or the demo cohort).
        data_format: ``"oasis"``, ``"adni"`` or ``"nifti"``.
        slices: ``"axial"`` to list the axial slices of NIfTI volumes (2D bundle), ``None`` for volumes.
        create_demo: create the synthetic demo cohort in ``dataset_dir`` when it is missing or empty (``true`` /
            ``false``, also as strings).
        demo_subjects: subjects in a created demo cohort.
        seed: seed of the demo cohort and of the split.
        val_fraction: validation fraction of the split.

    Returns:
        the datalist dict (``training``, ``validation``, ``test``, ``labels``, ...).
    """
    from brainvq_monai.data.datalist import build_datalist, format_summary, write_datalist

    create_demo = as_bool(create_demo, "create_demo_data")
    datalist_path = Path(os.path.abspath(os.fspath(datalist)))
    data_dir = Path(os.path.abspath(os.fspath(dataset_dir)))
    if datalist_path.is_file():
        with open(datalist_path, encoding="utf-8") as f:
            try:
                loaded = json.load(f)
            except json.JSONDecodeError as err:
                raise BrainVQInputError(datalist_path, f"not valid JSON ({err.msg}, line {err.lineno})") from None
        _check_datalist_object(loaded, datalist_path)
        root = loaded.get("root")
        if root and not Path(root).resolve().is_relative_to(data_dir.resolve()):
            raise BrainVQInputError(
                datalist_path, f"lists data under {root}, not under dataset_dir {data_dir}; pass a matching --datalist"
            )
        return loaded
    if data_dir.exists() and not data_dir.is_dir():
        raise BrainVQInputError(data_dir, "dataset_dir is a file; it must be the folder of the dataset")
    empty = not data_dir.exists() or not any(data_dir.iterdir())
    if empty:
        if not create_demo:
            state = "does not exist" if not data_dir.exists() else "is empty"
            expected = _EXPECTED.get(str(data_format), "a dataset folder")
            raise BrainVQInputError(
                data_dir,
                f"dataset_dir {state}; expected {expected} for data_format {data_format!r}; "
                f"make demo data with `brainvq demo-data --out {data_dir}` (or pass --create_demo_data true)",
            )
        from brainvq_monai.data.demo import make_demo_cohort

        logger.info(f"create_demo_data: creating the demo cohort in {data_dir}")
        make_demo_cohort(data_dir, subjects=demo_subjects, seed=seed)
    try:
        built = build_datalist(
            data_format, _data_root(data_dir, data_format), val_fraction=val_fraction, seed=seed, slices=slices
        )
    except BrainVQInputError as err:
        if err.where == "format":
            raise BrainVQInputError("data_format", err.reason) from None
        raise BrainVQInputError(err.where, err.reason.replace("(--format ", "(--data_format ")) from None
    write_datalist(built, datalist_path)
    logger.info(f"wrote {datalist_path}\n{format_summary(built)}")
    return built


def load_network(
    network: torch.nn.Module,
    checkpoint: str | os.PathLike,
    device: str | torch.device | None = None,
    config_id: str = "network_def",
) -> torch.nn.Module:
    """Loads weights into ``network`` from a checkpoint of this toolkit, a MONAI ``CheckpointSaver`` file or a plain
    state dict (``weights_only`` loading).

    Args:
        network: the network (its architecture must match).
        checkpoint: ``.pt`` file: a state dict, or a dict with one of ``"model"``, ``"network"``, ``"state_dict"``.
        device: move the network there.
        config_id: the config ID that defines ``network`` (``autoencoder_def``, ``prior_def``, ...), named when the
            checkpoint does not match it.

    Returns:
        the network, in eval mode.

    Raises:
        BrainVQInputError: a missing or unreadable file (empty, truncated, not a checkpoint), or one that does not
            match the network (the message names the tensor, both shapes and the config ID to change).
    """
    path = os.fspath(checkpoint)
    if not os.path.isfile(path) and not os.path.isdir(path):
        raise BrainVQInputError(
            path, "checkpoint not found; train the model first (train_vqvae.json / train_prior.json)"
        )
    state = load_torch_file(path, "checkpoint")
    for key in ("model", "network", "state_dict"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    load_state_dict_checked(network, state, path, config_id)
    if device is not None:
        network.to(device)
    return network.eval()


def _fingerprint(checkpoint: str, items: Sequence[Mapping[str, Any]], extra: str) -> str:
    h = hashlib.sha256()
    stat = os.stat(checkpoint)
    h.update(f"{os.path.abspath(checkpoint)}|{stat.st_size}|{stat.st_mtime_ns}|{extra}".encode())
    for it in items:
        h.update(f"{it.get('image')}|{it.get('slice', '')}|{it.get('label', '')}\n".encode())
    return h.hexdigest()


def encode_codes(
    vqvae: torch.nn.Module,
    vqvae_checkpoint: str | os.PathLike,
    items: Sequence[Mapping[str, Any]],
    transform: Callable,
    cache_file: str | os.PathLike,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    num_workers: int = 0,
    cache_key: Any = None,
    amp: bool | str = False,
    channels_last: bool | str = False,
    config_id: str = "autoencoder_def",
) -> Any:
    """Encodes ``items`` into code maps once and caches them; reuses the cache while inputs are unchanged.

    The cache is keyed by the VQ-VAE checkpoint (path, size, mtime), the listed files, ``transform``'s class and
    ``cache_key`` (the preprocessing settings, e.g. the spatial size), so a retrained VQ-VAE, another datalist or
    other preprocessing re-encodes.

    Args:
        vqvae: the VQ-VAE architecture (weights are loaded from ``vqvae_checkpoint``).
        vqvae_checkpoint: trained VQ-VAE weights.
        items: datalist items.
        transform: the deterministic (validation) preprocessing.
        cache_file: where the codes are cached (``torch.save``).
        device: device of the VQ-VAE.
        batch_size: encoding batch size.
        num_workers: data loader workers.
        cache_key: anything whose ``repr`` identifies the preprocessing settings.
        amp: bf16 autocast for the encoder (as in training on GPUs; part of the cache key).
        channels_last: channels-last input for the encoder.
        config_id: the config ID of the VQ-VAE, named when its checkpoint does not match.

    Returns:
        a :class:`~brainvq_monai.data.codes.CodesDataset`. The codes and then their key file are written atomically,
        so an interrupted run leaves either a complete cache or one that the next run re-encodes.
    """
    from monai.data import DataLoader, Dataset

    from brainvq_monai.data.codes import CodesDataset, load_codes, save_codes
    from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer

    amp, channels_last = as_bool(amp, "amp"), as_bool(channels_last, "channels_last")
    if not items:
        raise BrainVQInputError(cache_file, "no items to encode (empty split)")
    ckpt = os.fspath(vqvae_checkpoint)
    if not os.path.isfile(ckpt):
        raise BrainVQInputError(ckpt, "VQ-VAE checkpoint not found; run train_vqvae.json first")
    key = _fingerprint(ckpt, items, f"{type(transform).__name__}|{cache_key!r}|amp={bool(amp)}")
    cache = Path(os.fspath(cache_file))
    key_file = cache.with_suffix(cache.suffix + ".key")
    if cache.is_file() and key_file.is_file() and key_file.read_text().strip() == key:
        try:
            return CodesDataset(load_codes(cache))
        except BrainVQInputError as err:  # a damaged cache is re-encoded, not trusted
            logger.warning(f"re-encoding: {err}")
    load_network(vqvae, ckpt, device, config_id=config_id)
    with preserved_rng():  # training after a fresh encoding draws the same random numbers as after a cached one
        loader = DataLoader(
            Dataset(list(items), transform),
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=torch.device(device).type == "cuda",
        )
        batches = ({**b, "image": torch.as_tensor(b["image"]).as_tensor()} for b in loader)  # metadata not needed
        encoded = AutoregressivePriorInferer().encode_dataset(
            vqvae, batches, device=device, verbose=True, amp=amp, channels_last=channels_last
        )
    save_codes(encoded, cache)
    atomic_write_text(key_file, key + "\n")
    logger.info(f"encoded {len(encoded['codes'])} images into codes {tuple(encoded['codes'].shape[1:])} -> {cache}")
    return CodesDataset(encoded)


def perceptual_network(
    items: Sequence[Mapping[str, Any]],
    transform: Callable,
    cache_file: str | os.PathLike,
    device: str | torch.device = "cpu",
    seed: int = 0,
    epochs: int = 30,
) -> torch.nn.Module:
    """The frozen network of the VQ-VAE's perceptual loss, trained in-house on the training split (cached).

    A :class:`~brainvq_monai.networks.nets.BrainFeatureNet` learns a self-supervised task (which flip was applied)
    and to reconstruct the image from its features, on the training images only: no downloaded weights, and not the
    evaluation's feature network (that one learns the class and the slice position, with another seed), so the
    VQ-VAE is not trained against the network that scores it.

    Args:
        items: training datalist items.
        transform: the deterministic preprocessing (validation transforms).
        cache_file: where the trained network is kept; reused while the items, seed and epochs are unchanged.
        device: device of the returned network.
        seed: training seed (offset from the run seed: the evaluation's network uses the run seed).
        epochs: training epochs.

    Returns:
        the network, frozen, in eval mode, on ``device``.
    """
    from brainvq_monai.engines.feature_trainer import train_feature_net
    from brainvq_monai.networks.nets.feature_net import items_hash, load_feature_net, save_feature_net

    if not items:
        raise BrainVQInputError(cache_file, "no training items for the perceptual network")
    data_hash = items_hash(items, {"task": "perceptual", "seed": seed, "epochs": epochs})
    path = Path(os.fspath(cache_file))
    if path.is_file():
        try:
            return load_feature_net(path, data_hash, map_location=device)[0]
        except BrainVQInputError as err:
            logger.info(f"retraining the perceptual network ({err})")
    images = torch.stack([torch.as_tensor(transform(dict(it))["image"]).float() for it in items])
    logger.info(f"training the perceptual network on {len(images)} training images ({epochs} epochs)")
    with preserved_rng():  # the VQ-VAE's training does not depend on whether this network was cached
        net, history = train_feature_net(
            images, None, None, epochs=epochs, seed=seed + 1000, feature_dim=64, position_weight=0.0
        )
    save_feature_net(net, path, data_hash, {"task": "perceptual (flips + reconstruction)", **history})
    return net.to(device)


def latent_shape_of(vqvae: torch.nn.Module, spatial_size: Sequence[int]) -> tuple[int, ...]:
    """Spatial shape of the code map of a VQ-VAE for images of ``spatial_size``.

    Args:
        vqvae: a VQ-VAE with ``latent_shape`` (``BrainVQVAE``) or any MONAI ``VQVAE`` (measured by a dry run).
        spatial_size: image spatial size.

    Returns:
        the latent spatial shape.
    """
    if hasattr(vqvae, "latent_shape"):
        return tuple(int(s) for s in vqvae.latent_shape(spatial_size))
    device = next(vqvae.parameters()).device
    with torch.no_grad():
        z = vqvae.encode(torch.zeros(1, vqvae.in_channels, *spatial_size, device=device))
    return tuple(z.shape[2:])


def training_prepare_batch(augment_on_device: bool, seed: int | None = None) -> Callable:
    """The VQ-VAE trainer's ``prepare_batch``: plain, or with the random augmentation batched on the device.

    With ``augment_on_device`` the training dataset is built with ``brain_transforms(..., augment=False)`` (so
    ``CacheDataset`` caches every item whole and the loader only copies tensors) and
    :class:`~brainvq_monai.transforms.RandBrainAugment` augments each batch on the training device: the per-sample
    augmentation in CPU workers cannot feed a GPU trainer of thousands of images/s (see ``docs/benchmarks.md``).

    Args:
        augment_on_device: augment batches on the device (else the loader's transforms augment per sample).
        seed: seed of the augmentation's generator (``None``: torch's global generator); under
            ``torch.distributed`` each rank uses ``seed + rank``, so ranks draw different augmentations.

    Returns:
        a ``prepare_batch`` callable for :class:`~brainvq_monai.engines.VQVAETrainer`.
    """
    from brainvq_monai.engines.utils import prepare_images
    from brainvq_monai.transforms.batch import AugmentedPrepareBatch, RandBrainAugment

    if not as_bool(augment_on_device, "augment_on_device"):
        return prepare_images
    if seed is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        seed = int(seed) + torch.distributed.get_rank()
    return AugmentedPrepareBatch(RandBrainAugment().set_random_state(seed), prepare_images)


def training_state(**objects: Any) -> dict[str, Any]:
    """The ``save_dict`` of a training run's last checkpoint: the given objects, without those that are ``None``.

    Lets a config list every object that may take part (``discriminator=@discriminator`` is ``None`` unless the
    adversarial loss is on) without a conditional expression.

    Args:
        objects: ``name=object`` (networks, optimizers, schedulers, the trainer), ``None`` for absent ones.

    Returns:
        ``{name: object}`` of the present objects.
    """
    return {name: obj for name, obj in objects.items() if obj is not None}

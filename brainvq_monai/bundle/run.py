"""One definition of a run: what training records in ``<output_dir>/run_settings.json`` and how later steps read it.

``train_vqvae`` and ``train_prior`` call :func:`record_run_settings` when they start. The record holds the run's
config: the ``configs/common.json`` of the bundle folder the run used, with the settings that shape the networks
baked in (from whatever set them: the file, ``--overrides``, ``brainvq demo``), the networks' own constructor
arguments, the run's paths (data, datalist, outputs, weights) and the settings it was run with. Every later step
rebuilds from it through MONAI's parser (:func:`run_parser`): ``brainvq report``, ``anomaly`` and ``compare``
(through :func:`brainvq_monai.apps.run_loader.load_run`) and ``brainvq export-bundle``, for 2D and 3D bundles and
every data format.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from brainvq_monai.bundle.layout import AUTOENCODER_ID, COMMON_CONFIG, PRIOR_ID
from brainvq_monai.utils.distributed import rank_and_world
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.io import atomic_write_json
from brainvq_monai.utils.settings import json_ready

__all__ = ["RUN_SETTINGS", "SETTING_IDS", "find_run_record", "record_run_settings", "run_parser"]

RUN_SETTINGS = "run_settings.json"
RUN_FORMAT = 2
#: the settings of ``common.json`` that shape the networks or their use: recorded and baked into the run's config
SETTING_IDS = ("spatial_size", "pixdim", "num_embeddings", "embedding_dim", "class_names", "conditional", "prior")
SETTING_IDS += ("data_format", "slices")
#: the run's paths, recorded absolute (relocated when the run folder moves)
PATH_IDS = ("output_dir", "ckpt_dir", "dataset_dir", "datalist", "autoencoder_ckpt", "prior_ckpt")


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("@", "$", "%"))


def _autoencoder_overrides(source_def: Mapping[str, Any], recorded: Mapping[str, Any]) -> dict[str, Any]:
    """``autoencoder_def#key`` values: the recorded arguments the config shows or that differ from the defaults."""
    from brainvq_monai.networks.nets.vqvae import BrainVQVAE

    defaults = {k: p.default for k, p in inspect.signature(BrainVQVAE).parameters.items() if p.default is not p.empty}
    out = {}
    for key, value in recorded.items():
        if _is_reference(source_def.get(key)) or key in ("spatial_dims", "num_embeddings", "embedding_dim"):
            continue
        if key in source_def or json_ready(defaults.get(key)) != value:
            out[f"{AUTOENCODER_ID}#{key}"] = value
    return out


def _prior_overrides(source_def: Mapping[str, Any], recorded: Mapping[str, Any]) -> dict[str, Any]:
    name = recorded.get("prior")
    if name is None:
        return {}
    source = dict(source_def.get(name) or {})
    # exactly the options the run built its prior with; settings the config ties to other IDs stay tied
    options = {k: source[k] if _is_reference(source.get(k)) else v for k, v in dict(recorded.get(name) or {}).items()}
    return {f"{PRIOR_ID}#{name}": options}


def baked_config(common_file: str | os.PathLike, record: Mapping[str, Any], paths: bool = True) -> dict[str, Any]:
    """``common.json`` with a run's settings and network arguments baked in (MONAI config content).

    Args:
        common_file: the ``configs/common.json`` to start from.
        record: a run record (``settings``, ``autoencoder_def``, ``prior_def``, ``paths``).
        paths: also bake the run's absolute paths (``False``: keep the file's ``bundle_root``-relative ones).

    Returns:
        the config dict.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(os.fspath(common_file))
    settings = dict(record.get("settings", {}))
    overrides: dict[str, Any] = {k: settings[k] for k in SETTING_IDS if k in settings}
    if AUTOENCODER_ID in record:
        overrides.update(_autoencoder_overrides(parser[AUTOENCODER_ID], record[AUTOENCODER_ID]))
    if PRIOR_ID in record:
        overrides.update(_prior_overrides(parser[PRIOR_ID], record[PRIOR_ID]))
    if paths:
        overrides.update({k: v for k, v in dict(record.get("paths", {})).items() if v is not None})
    for key, value in overrides.items():
        parser[key] = value
    return parser.get()


def _common_config(bundle_root: str | os.PathLike | None, spatial_dims: int) -> Path:
    """The ``common.json`` a run used: its ``bundle_root``'s, or (a ``bundle_root`` pointed at an output folder)
    the package's bundle of that dimension."""
    from brainvq_monai.bundle.utils import default_bundle_root

    if bundle_root is not None:
        common = Path(os.path.abspath(os.fspath(bundle_root))) / "configs" / COMMON_CONFIG
        if common.is_file():
            return common
    return Path(default_bundle_root(f"brain_vqvae_{spatial_dims}d")) / "configs" / COMMON_CONFIG


def record_run_settings(
    output_dir: str | os.PathLike,
    settings: Mapping[str, Any],
    autoencoder: torch.nn.Module | None = None,
    prior: torch.nn.Module | None = None,
    bundle_root: str | os.PathLike | None = None,
    paths: Mapping[str, Any] | None = None,
) -> Path | None:
    """Adds what a training workflow trains to ``<output_dir>/run_settings.json`` (rank 0 writes).

    Args:
        output_dir: the run's ``output_dir``.
        settings: the workflow's ``run_settings`` (values of :data:`SETTING_IDS`, ``spatial_dims``).
        autoencoder: the VQ-VAE as built (its ``init_args`` are recorded).
        prior: the prior as built by ``build_prior`` (its ``build_args`` are recorded).
        bundle_root: the bundle folder the run used (its ``configs/common.json`` is the base of the run's config;
            without one there, the package's bundle of the run's ``spatial_dims``).
        paths: the run's paths (:data:`PATH_IDS`), made absolute.

    Returns:
        the record's path (``None`` on other ranks).
    """
    if rank_and_world()[0] > 0:
        return None
    path = Path(os.path.abspath(os.fspath(output_dir))) / RUN_SETTINGS
    record: dict[str, Any] = {}
    if path.is_file():
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            record = {}
    record.update(format=RUN_FORMAT, settings={**record.get("settings", {}), **json_ready(dict(settings))})
    if autoencoder is not None:
        record[AUTOENCODER_ID] = dict(getattr(autoencoder, "init_args", {}))
    if prior is not None:
        record[PRIOR_ID] = dict(getattr(prior, "build_args", {}))
    absolute = {k: None if v is None else os.path.abspath(os.fspath(v)) for k, v in dict(paths or {}).items()}
    record["paths"] = {**record.get("paths", {}), **absolute}
    common = _common_config(bundle_root, int(record["settings"].get("spatial_dims", 2)))
    record["bundle_root"] = str(common.parents[1])
    record["config"] = baked_config(common, record)
    atomic_write_json(path, record)
    return path


def find_run_record(run_dir: str | os.PathLike) -> Path:
    """The record of a run folder: ``run_settings.json`` in it or in its ``runs/`` (a bundle trained in place).

    Args:
        run_dir: the run folder.

    Returns:
        the record's path.

    Raises:
        BrainVQInputError: no run folder, or no record in it (a run of an older version, or not a run).
    """
    run = Path(os.path.abspath(os.fspath(run_dir)))
    if not run.is_dir():
        raise BrainVQInputError(run, "run folder not found")
    for candidate in (run / RUN_SETTINGS, run / "runs" / RUN_SETTINGS):
        if candidate.is_file():
            return candidate
    older = " (it has the run_config.json of brainvq_monai < 0.2.0: train it again)"
    raise BrainVQInputError(
        run,
        f"no {RUN_SETTINGS} here or in runs/: not a run folder"
        + (older if (run / "run_config.json").is_file() else " (train_vqvae and train_prior write it)"),
    )


def _relocated(path: str | None, recorded_output: str | None, output_dir: Path) -> str | None:
    """A recorded path under the recorded ``output_dir`` (or its parent), in the run folder's copy when the folder
    was moved or copied (the copy's own files, where they exist)."""
    if path is None or not recorded_output or Path(recorded_output) == output_dir:
        return path
    for old, new in ((Path(recorded_output), output_dir), (Path(recorded_output).parent, output_dir.parent)):
        try:
            candidate = new / Path(path).relative_to(old)
        except ValueError:
            continue
        if candidate.exists():
            return str(candidate)
    return path


def run_parser(run_dir: str | os.PathLike, device: str | torch.device | None = None) -> Any:
    """The run's config in MONAI's parser, ready to build its networks, data and preprocessing.

    ``parser.get_parsed_content("autoencoder")`` is the trained VQ-VAE, ``"prior_def"`` the prior (load
    ``"prior_ckpt"`` into it), ``"preprocessing"``, ``"datalist_data"``, ``"class_names"``, ``"latent_shape"``...
    Paths under the run folder follow it when the folder was moved or copied.

    Args:
        run_dir: the run folder (see :func:`find_run_record`).
        device: where networks go (default: the config's ``device``).

    Returns:
        ``(parser, record)``: a ``monai.bundle.ConfigParser`` and the record dict.
    """
    from monai.bundle import ConfigParser

    record_file = find_run_record(run_dir)
    record = json.loads(record_file.read_text())
    if "config" not in record:
        raise BrainVQInputError(record_file, "holds no run config (written by an older version): train it again")
    parser = ConfigParser(record["config"])
    recorded_output = dict(record.get("paths", {})).get("output_dir")
    for key in PATH_IDS:
        value = record.get("paths", {}).get(key)
        moved = _relocated(value, recorded_output, record_file.parent)
        if moved != value:
            parser[key] = moved
    parser["create_demo_data"] = False
    if device is not None:
        parser["device"] = f"$torch.device('{torch.device(device)}')"
    return parser, record

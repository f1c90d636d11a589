"""A trained run as a self-contained MONAI bundle: ``brainvq export-bundle --run RUN_DIR --out BUNDLE_DIR``.

Training records what it trained: ``train_vqvae`` and ``train_prior`` write ``<output_dir>/run_settings.json``
(:func:`record_run_settings`: the settings that shape the networks, the networks' own constructor arguments and the
weight files), whatever the config files, ``--overrides`` or ``brainvq demo`` settings were. :func:`export_bundle`
reads that record and writes a bundle folder that needs nothing else:

* ``configs/``: the source bundle's configs with the run's settings baked into ``common.json``; ``inference.json``
  is written self-contained (common + overlay merged), so ``python -m monai.bundle run --config_file
  configs/inference.json`` and the model zoo's single-file tools (``verify_net_in_out``, ``ckpt_export``) work from
  inside the folder; the training overlays still layer over ``common.json`` for fine-tuning;
* ``models/model.pt`` (the prior, ``network_def`` of ``inference.json``) and ``models/model_autoencoder.pt`` (the
  VQ-VAE), plain state dicts;
* ``configs/metadata.json`` with ``eval_metrics`` from the run's ``metrics.json`` (labelled with what they were
  measured on) and the data formats of the run's shapes;
* ``large_files.yml`` with each weight file's md5 and an empty ``url`` for the publisher to fill in.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from brainvq_monai.bundle.layout import (
    AUTOENCODER_ID,
    AUTOENCODER_WEIGHTS,
    COMMON_CONFIG,
    PRIOR_ID,
    PRIOR_WEIGHTS,
    WORKFLOWS,
)
from brainvq_monai.utils.distributed import rank_and_world
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.io import atomic_write_json, atomic_write_text, load_torch_file
from brainvq_monai.utils.settings import json_ready

__all__ = ["RUN_SETTINGS", "export_bundle", "record_run_settings"]

RUN_SETTINGS = "run_settings.json"
_FORMAT = 1
# the settings of common.json that shape the networks or their use; recorded and baked into an export
SETTING_IDS = ("spatial_size", "pixdim", "num_embeddings", "embedding_dim", "class_names", "conditional", "prior")
SETTING_IDS += ("data_format", "slices")


def record_run_settings(
    output_dir: str | os.PathLike,
    settings: Mapping[str, Any],
    autoencoder: torch.nn.Module | None = None,
    prior: torch.nn.Module | None = None,
    autoencoder_ckpt: str | os.PathLike | None = None,
    prior_ckpt: str | os.PathLike | None = None,
) -> Path | None:
    """Adds what a training workflow trains to ``<output_dir>/run_settings.json`` (rank 0 writes).

    Args:
        output_dir: the run's ``output_dir``.
        settings: the workflow's ``run_settings`` (values of :data:`SETTING_IDS`, ``spatial_dims``).
        autoencoder: the VQ-VAE as built (its ``init_args`` are recorded).
        prior: the prior as built by ``build_prior`` (its ``build_args`` are recorded).
        autoencoder_ckpt: where the best VQ-VAE weights are written.
        prior_ckpt: where the best prior weights are written.

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
    record.update(format=_FORMAT, settings={**record.get("settings", {}), **json_ready(dict(settings))})
    if autoencoder is not None:
        record[AUTOENCODER_ID] = dict(getattr(autoencoder, "init_args", {}))
        record["autoencoder_class"] = f"{type(autoencoder).__module__}.{type(autoencoder).__qualname__}"
    if prior is not None:
        record[PRIOR_ID] = dict(getattr(prior, "build_args", {}))
    checkpoints = dict(record.get("checkpoints", {}))
    if autoencoder_ckpt is not None:
        checkpoints["autoencoder"] = os.path.abspath(os.fspath(autoencoder_ckpt))
    if prior_ckpt is not None:
        checkpoints["prior"] = os.path.abspath(os.fspath(prior_ckpt))
    record["checkpoints"] = checkpoints
    atomic_write_json(path, record)
    return path


def _find_record(run: Path) -> Path:
    for candidate in (run / RUN_SETTINGS, run / "runs" / RUN_SETTINGS):
        if candidate.is_file():
            return candidate
    raise BrainVQInputError(
        run, f"no {RUN_SETTINGS} (here or in runs/): not a finished brainvq run; train it with this version first"
    )


def _plain_state_dict(path: Path) -> dict[str, torch.Tensor]:
    data = load_torch_file(path)
    for key in ("model", "network", "state_dict"):
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            return dict(data[key])
    return dict(data)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def _eval_metrics(metrics_file: Path, record: Mapping[str, Any], run: Path) -> dict[str, Any]:
    if not metrics_file.is_file():
        return {"measured_on": f"not measured: the run {run} has no metrics.json (run the evaluate workflow)"}
    metrics = json.loads(metrics_file.read_text())
    rec = metrics.get("reconstruction") or {}
    prior = metrics.get("prior") or {}
    out: dict[str, Any] = {k: round(float(v), 5) for k, v in (rec.get("metrics") or {}).items()}
    for key, value in (prior.get("metrics") or {}).items():
        name = {"test_nll": "test_prior_nll_nats_per_token", "test_bits_per_dim": "test_prior_bits_per_dim"}
        out[name.get(key, key)] = round(float(value), 5)
    s = record.get("settings", {})
    out["measured_on"] = (
        f"evaluate workflow on the {rec.get('split', '?')} split ({rec.get('num_images', '?')} images) of the run "
        f"{run.name}, written {rec.get('written', '?')}: images {s.get('spatial_size')}, {s.get('num_embeddings')} "
        f"codes of dim {s.get('embedding_dim')}, {s.get('prior')} prior; the settings baked into configs/common.json"
    )
    return out


def _data_formats(meta: dict[str, Any], spatial_size: list[int], latent: list[int], num_embeddings: int) -> None:
    """Updates the shapes of ``network_data_format`` (the prior) and ``autoencoder_data_format`` to the run's."""
    fmt = meta.get("network_data_format", {})
    for tensor in list(fmt.get("inputs", {}).values()) + list(fmt.get("outputs", {}).values()):
        tensor["spatial_shape"] = list(latent)
    for tensor in fmt.get("inputs", {}).values():
        tensor["value_range"] = [0, num_embeddings - 1]
    for tensor in fmt.get("outputs", {}).values():
        tensor["num_channels"] = num_embeddings
    ae = meta.get("autoencoder_data_format", {})
    for tensor in list(ae.get("inputs", {}).values()) + list(ae.get("outputs", {}).values()):
        tensor["spatial_shape"] = list(spatial_size)


def export_bundle(run_dir: str | os.PathLike, out_dir: str | os.PathLike, version: str | None = None) -> dict[str, Any]:
    """Writes a self-contained bundle folder from a finished run (see the module docstring).

    Args:
        run_dir: the run: a ``brainvq demo`` folder, or a bundle folder (or its ``runs/``) trained in place.
        out_dir: the new bundle folder; must not exist or be empty.
        version: the bundle's ``version`` (default: the source bundle's); added to the changelog.

    Returns:
        a summary: ``bundle`` (path), ``weights`` (name -> md5), ``eval_metrics``.

    Raises:
        BrainVQInputError: no run record, missing weights, or a non-empty ``out_dir``.
    """
    from monai.bundle import ConfigParser

    from brainvq_monai.bundle.utils import BUNDLE_NAMES, default_bundle_root, latent_shape_of
    from brainvq_monai.networks.nets.vqvae import BrainVQVAE

    run = Path(os.path.abspath(os.fspath(run_dir)))
    out = Path(os.path.abspath(os.fspath(out_dir)))
    if not run.is_dir():
        raise BrainVQInputError(run, "run folder not found")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BrainVQInputError(out, "exists and is not an empty folder; choose a new folder for the bundle")
    record_file = _find_record(run)
    record = json.loads(record_file.read_text())
    settings = dict(record.get("settings", {}))
    checkpoints = dict(record.get("checkpoints", {}))
    for key in ("autoencoder", "prior"):
        if key not in checkpoints or not Path(checkpoints[key]).is_file():
            where = checkpoints.get(key, f"the {key} checkpoint")
            raise BrainVQInputError(where, f"not found: the run must have trained its {key} (train_{key})")
    dims = int(settings.get("spatial_dims", len(settings.get("spatial_size", [0, 0]))))
    name = next(n for n in BUNDLE_NAMES if n.endswith(f"{dims}d"))
    source = Path(default_bundle_root(name))

    out.mkdir(parents=True, exist_ok=True)
    for item in ("LICENSE", "docs"):
        src = source / item
        if src.is_dir():
            shutil.copytree(src, out / item)
        elif src.is_file():
            shutil.copy2(src, out / item)
    configs = out / "configs"
    shutil.copytree(source / "configs", configs)

    common = ConfigParser()
    common.read_config(str(source / "configs" / COMMON_CONFIG))
    overrides: dict[str, Any] = {k: settings[k] for k in SETTING_IDS if k in settings}
    overrides.update(_autoencoder_overrides(common[AUTOENCODER_ID], record.get(AUTOENCODER_ID, {})))
    overrides.update(_prior_overrides(common[PRIOR_ID], record.get(PRIOR_ID, {})))
    for key, value in overrides.items():
        common[key] = value
    atomic_write_json(configs / COMMON_CONFIG, common.get(), indent=4)
    inference = ConfigParser()
    inference.read_config([str(configs / COMMON_CONFIG), str(configs / WORKFLOWS["inference"])])
    atomic_write_json(configs / WORKFLOWS["inference"], inference.get(), indent=4)

    models = out / "models"
    models.mkdir()
    weights = {AUTOENCODER_WEIGHTS: checkpoints["autoencoder"], PRIOR_WEIGHTS: checkpoints["prior"]}
    for target, src in weights.items():
        torch.save(_plain_state_dict(Path(src)), models / target)
    md5 = {f"models/{n}": _md5(models / n) for n in weights}
    lines = ["# weights of this bundle: fill in each url where you publish them (the model zoo downloads from it)"]
    lines.append("large_files:")
    for path, digest in md5.items():
        lines += [f'  - path: "{path}"', '    url: ""', f'    hash_val: "{digest}"', '    hash_type: "md5"']
    atomic_write_text(out / "large_files.yml", "\n".join(lines) + "\n")

    meta = json.loads((configs / "metadata.json").read_text())
    recorded_ae = dict(record.get(AUTOENCODER_ID, {}))
    spatial_size = [int(s) for s in settings["spatial_size"]]
    latent = list(latent_shape_of(BrainVQVAE(**recorded_ae), spatial_size)) if recorded_ae else spatial_size
    _data_formats(meta, spatial_size, latent, int(settings["num_embeddings"]))
    meta["eval_metrics"] = _eval_metrics(record_file.parent / "metrics.json", record, run)
    if version and version != meta.get("version"):
        meta["version"] = version
        meta["changelog"] = {version: f"exported from the run {run.name}", **meta.get("changelog", {})}
    meta["exported"] = {
        "from_run": str(run),
        "date": datetime.date.today().isoformat(),
        "source_bundle": name,
        "source_version": json.loads((source / "configs" / "metadata.json").read_text()).get("version"),
    }
    atomic_write_json(configs / "metadata.json", meta, indent=4)
    return {"bundle": str(out), "weights": md5, "eval_metrics": meta["eval_metrics"], "overrides": overrides}

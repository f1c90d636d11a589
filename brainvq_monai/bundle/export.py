"""A trained run as a self-contained MONAI bundle: ``brainvq export-bundle --run RUN_DIR --out BUNDLE_DIR``.

Training records what it trained (:mod:`brainvq_monai.bundle.run`: ``<output_dir>/run_settings.json``, the run's
config with its settings baked in, whatever the config files, ``--overrides`` or ``brainvq demo`` settings were).
:func:`export_bundle` reads that record and writes a bundle folder that needs nothing else:

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
from brainvq_monai.bundle.run import baked_config, find_run_record, run_parser
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.io import atomic_write_json, atomic_write_text, load_torch_file

__all__ = ["export_bundle"]


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


def _noise_input(meta: dict[str, Any], prior_args: Mapping[str, Any]) -> None:
    """A DCGAN prior's network takes noise, not code maps: ``network_data_format``'s input says so (its shape is
    ``(B, noise_dim)``, which ``verify_net_in_out`` feeds as ``torch.rand(1, noise_dim)``)."""
    if prior_args.get("prior") != "dcgan":
        return
    noise_dim = int((prior_args.get("dcgan") or {}).get("noise_dim", 64))
    for tensor in meta.get("network_data_format", {}).get("inputs", {}).values():
        tensor.update(
            {"type": "noise", "format": "gaussian", "num_channels": noise_dim, "spatial_shape": [], "value_range": []}
        )
        tensor["channel_def"] = {"0": "noise vector of the DCGAN generator (MONAI tools call every input 'image')"}
    for tensor in meta.get("network_data_format", {}).get("outputs", {}).values():
        tensor["channel_def"] = {"0": "logit of codebook entry 0 (channel k: entry k), independent per position"}


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
    from brainvq_monai.bundle.utils import BUNDLE_NAMES, default_bundle_root

    run = Path(os.path.abspath(os.fspath(run_dir)))
    out = Path(os.path.abspath(os.fspath(out_dir)))
    record_file = find_run_record(run)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BrainVQInputError(out, "exists and is not an empty folder; choose a new folder for the bundle")
    parser, record = run_parser(run)
    settings = dict(record.get("settings", {}))
    checkpoints = {k: parser.get_parsed_content(f"{k}_ckpt") for k in ("autoencoder", "prior")}
    for key, where in checkpoints.items():
        if where is None or not Path(where).is_file():
            raise BrainVQInputError(where or run, f"not found: the run must have trained its {key} (train_{key})")
    dims = int(settings.get("spatial_dims", len(settings.get("spatial_size", [0, 0]))))
    name = next(n for n in BUNDLE_NAMES if n.endswith(f"{dims}d"))
    source = Path(record.get("bundle_root") or default_bundle_root(name))
    if not (source / "configs" / COMMON_CONFIG).is_file():
        source = Path(default_bundle_root(name))  # the run's bundle folder is gone: the package's own copy

    staging = out.parent / f".{out.name}.partial"  # written whole, then renamed: a failed export leaves no bundle
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _write_configs(source, staging, record)
        md5 = _write_weights(staging, checkpoints)
        meta = _write_metadata(staging / "configs" / "metadata.json", record, record_file, run, name, source, version)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"bundle": str(out), "weights": md5, "eval_metrics": meta["eval_metrics"]}


def _write_configs(source: Path, out: Path, record: Mapping[str, Any]) -> None:
    """LICENSE, docs and configs of the source bundle; the run's settings baked into ``common.json``; a
    self-contained ``inference.json`` (common + overlay)."""
    from monai.bundle import ConfigParser

    for item in ("LICENSE", "docs"):
        src = source / item
        if src.is_dir():
            shutil.copytree(src, out / item)
        elif src.is_file():
            shutil.copy2(src, out / item)
    configs = out / "configs"
    shutil.copytree(source / "configs", configs)
    common = baked_config(source / "configs" / COMMON_CONFIG, record, False)
    atomic_write_json(configs / COMMON_CONFIG, common, indent=4)
    inference = ConfigParser()
    inference.read_config([str(configs / COMMON_CONFIG), str(configs / WORKFLOWS["inference"])])
    atomic_write_json(configs / WORKFLOWS["inference"], inference.get(), indent=4)


def _write_weights(out: Path, checkpoints: Mapping[str, str]) -> dict[str, str]:
    """``models/`` under the zoo's names (plain state dicts) and ``large_files.yml``; returns ``{path: md5}``."""
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
    return md5


def _write_metadata(
    meta_file: Path,
    record: Mapping[str, Any],
    record_file: Path,
    run: Path,
    name: str,
    source: Path,
    version: str | None,
) -> dict[str, Any]:
    """The source metadata with the run's data formats, ``eval_metrics`` and export provenance."""
    from brainvq_monai.bundle.utils import latent_shape_of
    from brainvq_monai.networks.nets.vqvae import BrainVQVAE

    meta = json.loads(meta_file.read_text())
    settings = dict(record.get("settings", {}))
    recorded_ae = dict(record.get(AUTOENCODER_ID, {}))
    spatial_size = [int(s) for s in settings["spatial_size"]]
    latent = list(latent_shape_of(BrainVQVAE(**recorded_ae), spatial_size)) if recorded_ae else spatial_size
    _data_formats(meta, spatial_size, latent, int(settings["num_embeddings"]))
    _noise_input(meta, record.get(PRIOR_ID, {}))
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
    atomic_write_json(meta_file, meta, indent=4)
    return meta

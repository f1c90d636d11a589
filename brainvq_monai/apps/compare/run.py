"""Runs both head-to-heads (VQ-VAEs, then priors on the codes of ours) and collects one JSON-safe report."""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from brainvq_monai.apps.compare.models import build_priors, build_vqvaes, num_params, sample_images, vqvae_kwargs
from brainvq_monai.apps.compare.settings import MODES, TUTORIAL_LR, TUTORIAL_VQVAE
from brainvq_monai.apps.compare.training import (
    batch_plan,
    evaluate_vqvae,
    prior_test_nll,
    train_prior,
    train_vqvae,
)
from brainvq_monai.metrics import CodeMapDivergence
from brainvq_monai.utils.environment import device_info, versions
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["run_compare"]

_VQVAE_DESCRIPTION = {
    "brainvq": "BrainVQVAE: k-means init, dead-code restarts, EMA decay 0.99",
    "monai": "monai.networks.nets.VQVAE: random codebook, EMA decay 0.5 (MONAI default)",
}


class _Data(NamedTuple):
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    positions: torch.Tensor | None  # slice positions of the training images, for the feature network
    class_names: dict[int, str]
    record: dict[str, Any]


def _say(msg: str) -> None:
    print(f"compare: {msg}", file=sys.stderr, flush=True)


def _finite(x: Any) -> Any:
    """JSON-safe copy: tensors to lists/floats, non-finite floats to ``None``, tuples to lists."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().tolist()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return _finite(x.item())
    return x


def _ensure_cohort(data_dir: Path, subjects: int, slices: int, seed: int) -> dict[str, Any]:
    """Builds the demo cohort in ``data_dir`` or reuses one made there with the same settings."""
    from brainvq_monai.data.demo import make_demo_cohort

    marker = data_dir / "demo_cohort.json"
    if marker.is_file():
        try:
            meta = json.loads(marker.read_text())
        except (OSError, ValueError):
            meta = {}
        same = (meta.get("subjects"), meta.get("seed"), meta.get("slices_per_subject")) == (subjects, seed, slices)
        if meta.get("complete") and same:
            return {"dir": str(data_dir), "reused": True, "seconds": 0.0}
    start = time.time()
    make_demo_cohort(data_dir, subjects=subjects, seed=seed, slices_per_subject=slices)
    return {"dir": str(data_dir), "reused": False, "seconds": round(time.time() - start, 1)}


def _load_split(items: Sequence[Mapping[str, Any]], spatial_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, S, S)`` in [0, 1] (evaluation pre-processing, no augmentation) and their class labels."""
    from brainvq_monai.transforms.pipeline import brain_transforms

    xform = brain_transforms(2, (spatial_size, spatial_size), train=False)
    images = [torch.as_tensor(xform(dict(item))["image"]).as_subclass(torch.Tensor).float() for item in items]
    return torch.stack(images), torch.tensor([int(item["label"]) for item in items], dtype=torch.long)


def _data(out: Path, cfg: Mapping[str, Any], seed: int) -> _Data:
    """The demo cohort (ADNI layout: train folder -> training, test folder -> test), loaded into memory."""
    from brainvq_monai.apps.generation_eval import slice_positions
    from brainvq_monai.data.datalist import build_datalist

    _say(f"[1/5] demo cohort ({cfg['subjects']} subjects x {cfg['slices_per_subject']} slices) in {out / 'data'}")
    cohort = _ensure_cohort(out / "data", cfg["subjects"], cfg["slices_per_subject"], seed)
    datalist = build_datalist("adni", out / "data", val_fraction=0.0, seed=seed)
    size = cfg["spatial_size"]
    class_names = {int(k): str(v) for k, v in datalist["labels"].items()}
    train_x, train_y = _load_split(datalist["training"], size)
    test_x, test_y = _load_split(datalist["test"], size)
    record = {
        **cohort,
        "format": "adni",
        "subjects": cfg["subjects"],
        "slices_per_subject": cfg["slices_per_subject"],
        "spatial_size": [size, size],
        "preprocessing": "brain_transforms(2, spatial_size, train=False): min-max to [0, 1], fit + pad; no augmentation",
        "split": "ADNI train folder -> training (no validation split), ADNI test folder -> test; disjoint subjects",
        "num_train": int(train_x.shape[0]),
        "num_test": int(test_x.shape[0]),
        "class_names": class_names,
        "train_per_class": {n: int((train_y == c).sum()) for c, n in class_names.items()},
        "test_per_class": {n: int((test_y == c).sum()) for c, n in class_names.items()},
    }
    # positions scaled by the slice range of both splits (the feature network's auxiliary target)
    positions = slice_positions(datalist["training"], datalist["training"] + datalist["test"])
    return _Data(train_x, train_y, test_x, test_y, positions, class_names, record)


def _run_data(run_dir: str | os.PathLike) -> tuple[_Data, torch.nn.Module, int]:
    """A run folder's training and test images, classes and trained VQ-VAE (any bundle run: 2D or 3D, any format).

    Raises:
        BrainVQInputError: an unconditional run (the priors are compared class-conditionally).
    """
    from brainvq_monai.apps.generation_eval import slice_positions
    from brainvq_monai.apps.run_loader import load_run

    art = load_run(run_dir)
    if not art.conditional:
        raise BrainVQInputError(art.run_dir, "compare --run needs a class-conditional run (labelled data)")
    _say(f"[1/4] the run's images ({art.run_dir}): {'x'.join(map(str, art.spatial_size))}")
    train_x, train_y = art.load_images("training")
    test_x, test_y = art.load_images("test")
    if train_y is None or test_y is None:
        raise BrainVQInputError(art.run_dir, "compare --run needs class labels on every training and test item")
    train_items, test_items = art.items("training"), art.items("test")
    record = {
        "run": str(art.run_dir),
        "format": art.datalist.get("format"),
        "spatial_size": list(art.spatial_size),
        "preprocessing": "the run's own (configs/common.json preprocessing, evaluation mode)",
        "split": "the run's datalist: training -> training, test -> test",
        "num_train": int(train_x.shape[0]),
        "num_test": int(test_x.shape[0]),
        "class_names": dict(art.class_names),
        "train_per_class": {n: int((train_y == c).sum()) for c, n in art.class_names.items()},
        "test_per_class": {n: int((test_y == c).sum()) for c, n in art.class_names.items()},
    }
    positions = slice_positions(train_items, train_items + test_items) if art.spatial_dims == 2 else None
    data = _Data(train_x, train_y, test_x, test_y, positions, dict(art.class_names), record)
    return data, art.vqvae, int(art.vqvae.ema_quantizer.num_embeddings)


def _compare_vqvaes(cfg: Mapping[str, Any], data: _Data, seed: int, dev: torch.device) -> tuple[torch.nn.Module, dict]:
    """(a): both VQ-VAEs trained on the same batches and scored on the test split; returns ours and the section."""
    from brainvq_monai.metrics.generation import masked_ssim_psnr

    ours, monai_net = build_vqvaes(cfg, seed)
    plan = batch_plan(data.train_x.shape[0], cfg["vqvae_batch_size"], cfg["vqvae_steps"], seed)
    models: dict[str, Any] = {}
    for i, (name, net) in enumerate({"brainvq": ours, "monai": monai_net}.items()):
        _say(f"[2/5] VQ-VAE {i + 1}/2 ({name}): {len(plan)} steps")
        train_info = train_vqvae(net, data.train_x, plan, TUTORIAL_LR, dev)
        metrics, recons = evaluate_vqvae(net, data.test_x, dev, 32)
        masked = masked_ssim_psnr(recons, data.test_x.cpu(), None)
        models[name] = {
            "description": _VQVAE_DESCRIPTION[name],
            "quantizer": type(net.quantizer.quantizer).__name__,
            "decay": float(net.quantizer.quantizer.decay),
            "num_params": num_params(net),
            **train_info,
            **metrics,
            "test_ssim_brain_mask": float(masked["ssim"]),
            "test_psnr_brain_mask": float(masked["psnr"]),
        }
    settings = {
        **{k: (list(map(list, v)) if k.endswith("parameters") else v) for k, v in vqvae_kwargs(cfg).items()},
        "channels": [cfg["channels"], cfg["channels"]],
        "tutorial_channels": list(TUTORIAL_VQVAE["channels"]),
        "channels_shrunk": cfg["channels"] != TUTORIAL_VQVAE["channels"][0],
        "optimizer": "Adam",
        "lr": TUTORIAL_LR,
        "loss": "L1(reconstruction, image) + quantization loss",
        "trainer": "brainvq_monai.engines.VQVAETrainer (fp32, no gradient clipping)",
        "steps": len(plan),
        "batch_size": int(plan[0].numel()),
        "same_encoder_decoder_init": True,
        "same_batches": True,
    }
    return ours, {"settings": settings, "models": models}


@torch.no_grad()
def _encode(vqvae: torch.nn.Module, images: torch.Tensor, dev: torch.device) -> torch.Tensor:
    vqvae.eval()
    return torch.cat([vqvae.index_quantize(images[i : i + 64].to(dev)).cpu() for i in range(0, len(images), 64)])


def code_map_divergence(generated: torch.Tensor, real: torch.Tensor, num_embeddings: int) -> float:
    """:class:`~brainvq_monai.metrics.CodeMapDivergence` of generated vs real code maps (bits; 0: same statistics)."""
    metric = CodeMapDivergence(num_embeddings)
    metric.update((generated, real))
    return metric.compute()


def _compare_priors(
    cfg: Mapping[str, Any], data: _Data, vqvae: torch.nn.Module, seed: int, dev: torch.device
) -> tuple[dict[str, Any], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """(b): the priors trained on the same batches of our VQ-VAE's codes; returns the section and their samples."""
    _say("[3/5] caching codes of our VQ-VAE")
    train_codes, test_codes = _encode(vqvae, data.train_x, dev), _encode(vqvae, data.test_x, dev)
    latent = tuple(train_codes.shape[1:])
    priors, prior_settings = build_priors(cfg, latent, len(data.class_names), seed)
    plan = batch_plan(train_codes.shape[0], cfg["prior_batch_size"], cfg["prior_steps"], seed + 1)
    sample_labels = torch.tensor(sorted(data.class_names)).repeat_interleave(cfg["samples_per_class"])
    models: dict[str, Any] = {}
    samples: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for i, (name, prior) in enumerate(priors.items()):
        _say(
            f"[4/5] prior {i + 1}/{len(priors)} ({name}, {num_params(prior)} parameters): {len(plan)} steps + sampling"
        )
        lr = cfg["dcgan_lr"] if name == "dcgan" else cfg["prior_lr"]
        train_info = train_prior(prior, train_codes, data.train_y, plan, lr, seed, dev, vqvae=vqvae)
        images, codes, timing = sample_images(prior, vqvae, latent, sample_labels, seed, dev)
        samples[name] = (images, sample_labels)
        models[name] = {
            "class": type(prior).__name__,
            "num_params": num_params(prior),
            "sampling_params": num_params(getattr(prior, "generator", prior)),
            "lr": lr,
            **train_info,
            "test_nll": prior_test_nll(prior, test_codes, data.test_y, dev),
            "test_code_js": code_map_divergence(codes, test_codes, cfg["num_embeddings"]),
            **timing,
            "seconds_per_sample": timing["sampling_seconds"] / timing["num_samples"],
        }
    settings = {
        "trained_on": "codes of the brainvq VQ-VAE from (a) (training split), class-conditional",
        "class_names": data.class_names,
        "latent_shape": list(latent),
        "num_embeddings": cfg["num_embeddings"],
        "optimizer": "Adam",
        "lr": cfg["prior_lr"],
        "loss": "cross-entropy (NLL) of the codes; DCGAN: non-saturating logistic GAN loss (no likelihood)",
        "trainer": "brainvq_monai.engines.PriorTrainer / DCGANTrainer (fp32, no gradient clipping)",
        "dcgan_lr": cfg["dcgan_lr"],
        "code_js": "CodeMapDivergence (4x4 regions) of the samples' codes vs the test codes, bits; 0 = same",
        "steps": len(plan),
        "batch_size": int(plan[0].numel()),
        "same_batches": True,
        "samples_per_class": cfg["samples_per_class"],
        "num_samples": int(sample_labels.numel()),
        "sampler": "AutoregressivePriorInferer.sample_codes(use_cache=True), temperature 1 (DCGAN: one generator pass)",
        **prior_settings,
    }
    return {"settings": settings, "models": models}, samples


def _generation_metrics(
    samples: Mapping[str, tuple[torch.Tensor, torch.Tensor]], data: _Data, cfg: Mapping[str, Any], seed: int
) -> dict[str, Any]:
    """:func:`~brainvq_monai.metrics.generation.evaluate_generation` of every prior's samples, on the features of
    the in-house network trained on the training split only."""
    from brainvq_monai.engines.feature_trainer import train_feature_net
    from brainvq_monai.metrics.generation import evaluate_generation
    from brainvq_monai.networks.nets.feature_net import FEATURE_NET_VERSION

    _say("[5/5] generation metrics (feature network trained on the training split only)")
    net, history = train_feature_net(
        data.train_x, data.train_y, data.positions, num_classes=len(data.class_names), epochs=cfg["feature_epochs"],
        seed=seed,
    )  # fmt: skip
    net = net.cpu().eval()
    out: dict[str, Any] = {}
    for name, (images, labels) in samples.items():
        out[name] = evaluate_generation(
            images, data.test_x, data.train_x, net, sample_labels=labels, test_labels=data.test_y,
            train_labels=data.train_y, seed=seed, class_names=dict(data.class_names),
            num_bootstrap=cfg["num_bootstrap"], kid_subsets=cfg["kid_subsets"], max_pairs=cfg["max_pairs"],
        )  # fmt: skip
    out["feature_net"] = {
        "version": FEATURE_NET_VERSION,
        "trained_on": "training split only",
        "num_images": int(data.train_x.shape[0]),
        "epochs": cfg["feature_epochs"],
        "final_train_accuracy": history["accuracy"][-1] if history.get("accuracy") else None,
        "train_seconds": history.get("seconds"),
    }
    return out


def _device(mode: str, device: str) -> torch.device:
    if mode not in MODES:
        raise BrainVQInputError("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BrainVQInputError("--device", "cuda requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise BrainVQInputError("--device", f"must be cpu or cuda, got {device!r}")
    return dev


def run_compare(
    out: str | os.PathLike = "compare_run",
    mode: str = "quick",
    device: str = "cpu",
    seed: int = 0,
    command: str | None = None,
    run: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Runs both head-to-heads and returns the report (the input of :func:`~.table.format_table`).

    With ``run``, the priors are compared on that run's data through its trained VQ-VAE (any bundle run: 2D or 3D,
    PNG/JPEG or NIfTI slices; on 3D codes the plain transformer against the block transformer), and (a) is not run:
    the VQ-VAE head-to-head trains both VQ-VAEs from scratch on the demo cohort.

    Args:
        out: working folder; the demo cohort goes to ``out/data`` (reused when it was made with the same settings).
        mode: ``"full"`` (128x128, the tutorial's channel sizes; meant for a GPU), ``"quick"`` (64x64, shrunk
            channels; a few minutes on a CPU) or ``"tiny"`` (the test suite's seconds-long smoke run); with ``run``
            it sets the priors' sizes and steps.
        device: ``"cpu"`` or ``"cuda"``.
        seed: seed of the cohort, the split, the weights, the batches and the samplers.
        command: the command line that ran it, recorded in the report.
        run: a run folder whose data and VQ-VAE the priors are compared on (see above).

    Returns:
        the report dict (JSON-safe).

    Raises:
        BrainVQInputError: unknown mode, or a device that is not there.
    """
    dev = _device(mode, device)
    cfg = MODES[mode]
    t0 = time.time()
    out_path = Path(os.path.abspath(os.fspath(out)))
    out_path.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}

    def lap(name: str) -> None:
        stages[name] = round(time.time() - t0 - sum(stages.values()), 1)

    if run is None:
        data = _data(out_path, cfg, seed)
        lap("data")
        ours, vqvae_section = _compare_vqvaes(cfg, data, seed, dev)
        lap("vqvae")
    else:
        data, ours, num_embeddings = _run_data(run)
        ours = ours.to(dev)
        cfg = {**cfg, "num_embeddings": num_embeddings}
        vqvae_section = {"settings": {"from_run": str(data.record["run"])}, "models": {}}
        lap("data")
    prior_section, samples = _compare_priors(cfg, data, ours, seed, dev)
    lap("priors")
    prior_section["generation"] = _generation_metrics(samples, data, cfg, seed)
    lap("generation_metrics")
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode,
        "command": command,
        "seeds": {
            **dict.fromkeys(("cohort_and_split", "weights", "vqvae_batches"), seed),
            "prior_batches": seed + 1,
            **dict.fromkeys(("prior_dropout", "sampling", "feature_net", "metrics"), seed),
        },
        "device": device_info(dev),
        "versions": versions(),
        "data": data.record,
        "vqvae": vqvae_section,
        "prior": prior_section,
        "seconds_total": round(time.time() - t0, 1),
        "seconds_per_stage": stages,
    }
    return _finite(report)

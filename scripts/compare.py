#!/usr/bin/env python
"""Head-to-head comparisons on the synthetic demo cohort, with identical data, seeds and optimisation steps.

(a) **VQ-VAE**: :class:`~brainvq_monai.networks.nets.vqvae.BrainVQVAE` (k-means codebook init, dead-code restarts,
    EMA decay 0.99) against MONAI's ``monai.networks.nets.VQVAE`` configured as in MONAI's 2D VQ-VAE tutorial
    (``channels=(256, 256)``, ``num_res_channels=256``, ``num_res_layers=2``, two ``(2, 4, 1, 1)`` downsamplings,
    ``num_embeddings=256``, ``embedding_dim=32``, MONAI defaults otherwise, i.e. EMA decay 0.5; Adam lr 1e-4, L1
    loss + quantization loss). Same architecture on both sides (the encoder/decoder start from the same weights),
    only the quantizer differs. ``--quick`` shrinks the channels equally on both sides so that it runs on a CPU.
    Reported over the test split: SSIM, PSNR (whole image and, when the generation metrics are installed, inside a
    brain mask), codes used and perplexity.
(b) **Priors**: class-conditional (AD/NC) :class:`GatedPixelCNN` against :class:`TransformerPrior`, trained on the
    same cached codes of the VQ-VAE from (a) for the same number of steps with matched parameter counts (the
    PixelCNN width is chosen to match the transformer's count). Reported: test NLL (nats/token), time to sample
    ``N`` images with the fast exact samplers, and the generation metrics of
    :func:`brainvq_monai.metrics.generation.evaluate_generation` (FID/KID/PRDC on an in-house feature network trained
    on the training split only, diversity, memorisation), each next to its real-vs-real (train vs test) floor.

Everything is measured in the run; nothing is hard-coded. Usage::

    python scripts/compare.py --quick --device cpu --out compare_run --json compare.json   # a few minutes on a CPU
    python scripts/compare.py --device cuda --out compare_gpu --json compare_gpu.json      # 128x128, tutorial sizes
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from brainvq_monai.utils.environment import device_info, versions
from brainvq_monai.utils.format import fmt as _fmt

__all__ = ["MODES", "format_table", "main", "run_compare"]

# MONAI 2d_vqvae_tutorial settings (what MONAI's own tutorial trains); shared by both VQ-VAEs.
TUTORIAL_VQVAE: dict[str, Any] = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "num_res_layers": 2,
    "downsample_parameters": ((2, 4, 1, 1), (2, 4, 1, 1)),
    "upsample_parameters": ((2, 4, 1, 1, 0), (2, 4, 1, 1, 0)),
    "channels": (256, 256),
    "num_res_channels": 256,
    "num_embeddings": 256,
    "embedding_dim": 32,
}
TUTORIAL_LR = 1e-4

# Run sizes. ``channels`` overrides the tutorial's (256, 256) (and num_res_channels) on both sides equally.
MODES: dict[str, dict[str, Any]] = {
    "full": {
        "subjects": 40,
        "slices_per_subject": 20,
        "spatial_size": 128,
        "channels": 256,
        "num_embeddings": 256,
        "embedding_dim": 32,
        "vqvae_steps": 3000,
        "vqvae_batch_size": 16,
        "prior_steps": 3000,
        "prior_batch_size": 32,
        "prior_lr": 1e-3,
        "transformer": {"attn_layers_dim": 128, "attn_layers_depth": 6, "attn_layers_heads": 8},
        "pixelcnn": {"num_layers": 12, "kernel_size": 5},
        "prior_dropout": 0.1,
        "samples_per_class": 128,
        "feature_epochs": 30,
        "num_bootstrap": 50,
        "kid_subsets": 50,
        "max_pairs": 300,
    },
    "quick": {
        "subjects": 20,
        "slices_per_subject": 12,
        "spatial_size": 64,
        "channels": 32,
        "num_embeddings": 256,
        "embedding_dim": 32,
        "vqvae_steps": 300,
        "vqvae_batch_size": 16,
        "prior_steps": 200,
        "prior_batch_size": 16,
        "prior_lr": 1e-3,
        "transformer": {"attn_layers_dim": 64, "attn_layers_depth": 4, "attn_layers_heads": 4},
        "pixelcnn": {"num_layers": 8, "kernel_size": 5},
        "prior_dropout": 0.1,
        "samples_per_class": 32,
        "feature_epochs": 10,
        "num_bootstrap": 0,  # FID bootstraps cost seconds per replicate on a CPU (scipy sqrtm)
        "kid_subsets": 20,
        "max_pairs": 100,
    },
    "tiny": {  # the test suite's mode: seconds, not minutes; numbers mean nothing
        "subjects": 6,
        "slices_per_subject": 4,
        "spatial_size": 32,
        "channels": 8,
        "num_embeddings": 16,
        "embedding_dim": 8,
        "vqvae_steps": 3,
        "vqvae_batch_size": 8,
        "prior_steps": 3,
        "prior_batch_size": 8,
        "prior_lr": 1e-3,
        "transformer": {"attn_layers_dim": 16, "attn_layers_depth": 1, "attn_layers_heads": 2},
        "pixelcnn": {"num_layers": 2, "kernel_size": 3},
        "prior_dropout": 0.0,
        "samples_per_class": 4,
        "feature_epochs": 1,
        "num_bootstrap": 0,
        "kid_subsets": 5,
        "max_pairs": 20,
    },
}


# ----------------------------------------------------------------------------------------------------------- helpers
def _say(msg: str) -> None:
    print(f"compare: {msg}", file=sys.stderr, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _num_params(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


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


def _batch_plan(n: int, batch_size: int, steps: int, seed: int) -> list[torch.Tensor]:
    """The index batches of ``steps`` optimisation steps: reshuffled epochs, incomplete last batches dropped.

    Both sides of a head-to-head consume the same plan, so they see the same images in the same order.
    """
    batch_size = max(1, min(batch_size, n))
    gen = torch.Generator().manual_seed(seed)
    plan: list[torch.Tensor] = []
    while len(plan) < steps:
        perm = torch.randperm(n, generator=gen)
        plan += [perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
    return plan[:steps]


# -------------------------------------------------------------------------------------------------------------- data
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


def _load_split(items: Sequence[Mapping[str, Any]], spatial_size: int) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Images ``(N, 1, S, S)`` in [0, 1] (evaluation pre-processing, no augmentation), labels and slice indices."""
    from brainvq_monai.transforms.pipeline import brain_transforms

    xform = brain_transforms(2, (spatial_size, spatial_size), train=False)
    images, labels, slices = [], [], []
    for item in items:
        out = xform(dict(item))
        images.append(torch.as_tensor(out["image"]).as_subclass(torch.Tensor).float())
        labels.append(int(item["label"]))
        slices.append(item.get("slice"))
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), slices


def _positions(slices: list, lo: float, hi: float) -> torch.Tensor | None:
    if any(s is None for s in slices) or hi <= lo:
        return None
    return torch.tensor([(float(s) - lo) / (hi - lo) for s in slices], dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------- VQ-VAEs
def _vqvae_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = dict(TUTORIAL_VQVAE)
    kwargs.update(
        channels=(cfg["channels"], cfg["channels"]),
        num_res_channels=cfg["channels"],
        num_embeddings=cfg["num_embeddings"],
        embedding_dim=cfg["embedding_dim"],
    )
    return kwargs


def _build_vqvaes(cfg: Mapping[str, Any], seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """MONAI's VQVAE (tutorial settings) and BrainVQVAE with the same architecture and the same encoder/decoder init."""
    from monai.networks.nets import VQVAE

    from brainvq_monai.networks.nets.vqvae import BrainVQVAE

    kwargs = _vqvae_kwargs(cfg)
    torch.manual_seed(seed)
    monai_net = VQVAE(**kwargs)  # MONAI defaults otherwise: decay 0.5, random normal codebook
    torch.manual_seed(seed)
    ours = BrainVQVAE(**kwargs, decay=0.99, init="kmeans", codebook_seed=seed)
    shared = {k: v for k, v in monai_net.state_dict().items() if not k.startswith("quantizer.")}
    missing = ours.load_state_dict(shared, strict=False)
    if missing.unexpected_keys or any(not k.startswith("quantizer.") for k in missing.missing_keys):
        raise RuntimeError(f"encoder/decoder weights do not line up: {missing}")
    return ours, monai_net


def _train_vqvae(
    net: torch.nn.Module, images: torch.Tensor, plan: list[torch.Tensor], lr: float, device: torch.device
) -> dict[str, Any]:
    """Tutorial recipe: Adam, ``L1(recon, x) + quantization_loss`` per step, on the given batches.

    Both networks are called through ``forward`` (one quantization, hence one EMA codebook update per step);
    ``engines.utils.vqvae_forward`` is not used here because for MONAI's ``VQVAE`` in training mode it quantizes
    twice and so updates MONAI's EMA codebook twice per step.
    """
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    _sync(device)
    start = time.perf_counter()
    for idx in plan:
        x = images[idx].to(device)
        recon, quant_loss = net(x)[:2]
        loss = F.l1_loss(recon.float(), x) + quant_loss.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    _sync(device)
    tail = losses[-max(1, len(losses) // 10) :]
    return {"train_seconds": time.perf_counter() - start, "final_train_loss": sum(tail) / len(tail)}


@torch.no_grad()
def _eval_vqvae(
    net: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int, masked_fn: Any
) -> dict[str, Any]:
    """Reconstruction metrics and codebook usage of ``net`` over ``images`` (eval mode: the codebook is frozen)."""
    from monai.metrics import PSNRMetric, SSIMMetric

    from brainvq_monai.engines.utils import vqvae_forward
    from brainvq_monai.networks.layers.quantizer import codebook_perplexity

    net.to(device).eval()
    k = int(net.num_embeddings)
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0)
    psnr = PSNRMetric(max_val=1.0)
    counts = torch.zeros(k)
    recons = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size].to(device)
        recon, _, indices = vqvae_forward(net, x)
        recon = recon.float().clamp(0, 1)
        ssim(recon, x)
        psnr(recon, x)
        counts += torch.bincount(indices.reshape(-1).cpu(), minlength=k).float()
        recons.append(recon.cpu())
    out = {
        "test_ssim": float(ssim.aggregate()),
        "test_psnr": float(psnr.aggregate()),
        "codes_used": int((counts > 0).sum()),
        "num_embeddings": k,
        "perplexity": float(codebook_perplexity(counts)),
        "num_test_images": int(images.shape[0]),
    }
    if masked_fn is not None:
        masked = masked_fn(torch.cat(recons), images.cpu(), None)
        out["test_ssim_brain_mask"] = float(masked["ssim"])
        out["test_psnr_brain_mask"] = float(masked["psnr"])
    return out


def _masked_metric_fn() -> Any:
    """G1's brain-mask SSIM/PSNR when installed (``masked_ssim_psnr(pred, target, mask)``), else ``None``."""
    try:
        from brainvq_monai.metrics.generation import masked_ssim_psnr
    except ImportError:
        return None
    return masked_ssim_psnr


# ------------------------------------------------------------------------------------------------------------ priors
def _build_priors(
    cfg: Mapping[str, Any], latent: Sequence[int], num_classes: int, seed: int
) -> tuple[dict[str, torch.nn.Module], dict[str, Any]]:
    """The transformer from the mode's settings and the Gated PixelCNN whose width best matches its parameter count."""
    from brainvq_monai.networks.nets.gated_pixelcnn import GatedPixelCNN
    from brainvq_monai.networks.nets.transformer_prior import TransformerPrior

    k = cfg["num_embeddings"]
    dropout = cfg["prior_dropout"]
    torch.manual_seed(seed)
    transformer = TransformerPrior(
        2,
        k,
        tuple(latent),
        num_classes,
        embedding_dropout_rate=dropout,
        ordering_type="raster_scan",
        **cfg["transformer"],
    )
    target = _num_params(transformer)
    pcfg = dict(cfg["pixelcnn"])

    def pixelcnn(channels: int) -> GatedPixelCNN:
        return GatedPixelCNN(2, k, num_classes, channels=channels, dropout=dropout, **pcfg)

    best = min(range(4, 513, 2), key=lambda c: abs(_num_params(pixelcnn(c)) - target))
    torch.manual_seed(seed)
    pcnn = pixelcnn(best)
    settings = {
        "transformer": {
            **cfg["transformer"],
            "embedding_dropout_rate": dropout,
            "ordering_type": "raster_scan",
            "use_checkpointing": False,
        },
        "pixelcnn": {**pcfg, "channels": best, "dropout": dropout, "width_chosen_to_match_transformer_params": True},
    }
    return {"pixelcnn": pcnn, "transformer": transformer}, settings


def _train_prior(
    prior: torch.nn.Module,
    codes: torch.Tensor,
    labels: torch.Tensor,
    plan: list[torch.Tensor],
    lr: float,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    prior.to(device).train()
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    torch.manual_seed(seed)  # dropout draws
    losses = []
    _sync(device)
    start = time.perf_counter()
    for idx in plan:
        c, y = codes[idx].to(device), labels[idx].to(device)
        loss = F.cross_entropy(prior(c, y), c)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    _sync(device)
    tail = losses[-max(1, len(losses) // 10) :]
    return {"train_seconds": time.perf_counter() - start, "final_train_nll": sum(tail) / len(tail)}


@torch.no_grad()
def _test_nll(prior: torch.nn.Module, codes: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    from brainvq_monai.inferers.sampling import token_nll

    prior.eval()
    total, count = 0.0, 0
    for i in range(0, codes.shape[0], 64):
        nll = token_nll(prior, codes[i : i + 64].to(device), labels[i : i + 64].to(device))
        total += float(nll.double().sum())
        count += nll.numel()
    return total / count


def _sample(
    prior: torch.nn.Module,
    vqvae: torch.nn.Module,
    latent: Sequence[int],
    labels: torch.Tensor,
    seed: int,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Samples one image per entry of ``labels`` with the fast exact sampler; times sampling and decoding."""
    from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer

    inferer = AutoregressivePriorInferer()
    prior.eval()
    vqvae.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    _sync(device)
    start = time.perf_counter()
    codes = inferer.sample_codes(prior, labels.shape[0], latent, class_labels=labels.to(device), generator=gen)
    _sync(device)
    mid = time.perf_counter()
    with torch.no_grad():
        images = vqvae.decode_samples(codes.to(device)).float().clamp(0, 1)
    _sync(device)
    end = time.perf_counter()
    timing = {"sampling_seconds": mid - start, "decode_seconds": end - mid, "num_samples": int(labels.shape[0])}
    return images.cpu(), timing


def _generation_metrics(
    samples: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    test: tuple[torch.Tensor, torch.Tensor],
    train: tuple[torch.Tensor, torch.Tensor],
    feature_net: torch.nn.Module | None,
    cfg: Mapping[str, Any],
    class_names: Mapping[int, str],
    seed: int,
) -> dict[str, Any]:
    """``evaluate_generation`` for every prior's samples (G1's module), or why it was skipped."""
    if feature_net is None:
        return {"available": False, "reason": "brainvq_monai.metrics.generation is not installed"}
    from brainvq_monai.metrics.generation import evaluate_generation

    out: dict[str, Any] = {"available": True}
    for name, (images, labels) in samples.items():
        out[name] = evaluate_generation(
            images,
            test[0],
            train[0],
            feature_net,
            sample_labels=labels,
            test_labels=test[1],
            train_labels=train[1],
            seed=seed,
            class_names=dict(class_names),
            num_bootstrap=cfg["num_bootstrap"],
            kid_subsets=cfg["kid_subsets"],
            max_pairs=cfg["max_pairs"],
        )
    return out


def _feature_net(
    train: tuple[torch.Tensor, torch.Tensor],
    positions: torch.Tensor | None,
    num_classes: int,
    cfg: Mapping[str, Any],
    seed: int,
) -> tuple[torch.nn.Module | None, dict[str, Any]]:
    """The in-house feature network, trained on the training split only (G1's module), or ``None``."""
    try:
        import brainvq_monai.metrics.generation  # noqa: F401
        from brainvq_monai.networks.nets.feature_net import FEATURE_NET_VERSION, train_feature_net
    except ImportError as err:
        return None, {"available": False, "reason": f"{type(err).__name__}: {err}"}
    net, history = train_feature_net(
        train[0], train[1], positions, num_classes=num_classes, epochs=cfg["feature_epochs"], seed=seed
    )
    info = {
        "available": True,
        "version": FEATURE_NET_VERSION,
        "trained_on": "training split only",
        "num_images": int(train[0].shape[0]),
        "epochs": cfg["feature_epochs"],
        "final_train_accuracy": history["accuracy"][-1] if history.get("accuracy") else None,
        "train_seconds": history.get("seconds"),
    }
    return net.cpu().eval(), info


# --------------------------------------------------------------------------------------------------------------- run
def run_compare(
    out: str | os.PathLike = "compare_run",
    mode: str = "quick",
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Runs both head-to-heads and returns the report (also the input of :func:`format_table`).

    Args:
        out: working folder; the demo cohort goes to ``out/data`` (reused when it was made with the same settings).
        mode: ``"full"`` (128x128, the tutorial's channel sizes; meant for a GPU), ``"quick"`` (64x64, shrunk
            channels; a few minutes on a CPU) or ``"tiny"`` (the test suite's seconds-long smoke run).
        device: ``"cpu"`` or ``"cuda"``.
        seed: seed of the cohort, the split, the weights, the batches and the samplers.

    Returns:
        the report dict (JSON-safe).
    """
    from brainvq_monai.data.datalist import build_datalist
    from brainvq_monai.utils.errors import BrainVQInputError

    if mode not in MODES:
        raise BrainVQInputError("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BrainVQInputError("--device", "cuda requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise BrainVQInputError("--device", f"must be cpu or cuda, got {device!r}")
    cfg = MODES[mode]
    t0 = time.time()
    stages: dict[str, float] = {}
    out_path = Path(os.path.abspath(os.fspath(out)))
    out_path.mkdir(parents=True, exist_ok=True)

    # ---- data
    _say(f"[1/5] demo cohort ({cfg['subjects']} subjects x {cfg['slices_per_subject']} slices) in {out_path / 'data'}")
    cohort = _ensure_cohort(out_path / "data", cfg["subjects"], cfg["slices_per_subject"], seed)
    datalist = build_datalist("adni", out_path / "data", val_fraction=0.0, seed=seed)
    size = cfg["spatial_size"]
    class_names = {int(k): str(v) for k, v in datalist["labels"].items()}
    train_x, train_y, train_slices = _load_split(datalist["training"], size)
    test_x, test_y, test_slices = _load_split(datalist["test"], size)
    all_slices = [s for s in train_slices + test_slices if s is not None]
    lo, hi = (min(all_slices), max(all_slices)) if all_slices else (0, 0)
    data = {
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

    stages["data"] = round(time.time() - t0, 1)

    # ---- (a) VQ-VAEs
    ours, monai_net = _build_vqvaes(cfg, seed)
    vq_plan = _batch_plan(train_x.shape[0], cfg["vqvae_batch_size"], cfg["vqvae_steps"], seed)
    masked_fn = _masked_metric_fn()
    vq_models: dict[str, Any] = {}
    nets = {"brainvq": ours, "monai": monai_net}
    descr = {
        "brainvq": "BrainVQVAE: k-means init, dead-code restarts, EMA decay 0.99",
        "monai": "monai.networks.nets.VQVAE: random codebook, EMA decay 0.5 (MONAI default)",
    }
    for i, (name, net) in enumerate(nets.items()):
        _say(f"[2/5] VQ-VAE {i + 1}/2 ({name}): {len(vq_plan)} steps")
        train_info = _train_vqvae(net, train_x, vq_plan, TUTORIAL_LR, dev)
        vq_models[name] = {
            "description": descr[name],
            "quantizer": type(net.quantizer.quantizer).__name__,
            "decay": float(net.quantizer.quantizer.decay),
            "num_params": _num_params(net),
            **train_info,
            **_eval_vqvae(net, test_x, dev, 32, masked_fn),
        }
    vq_settings = {
        **{k: (list(map(list, v)) if k.endswith("parameters") else v) for k, v in _vqvae_kwargs(cfg).items()},
        "channels": [cfg["channels"], cfg["channels"]],
        "tutorial_channels": list(TUTORIAL_VQVAE["channels"]),
        "channels_shrunk": cfg["channels"] != TUTORIAL_VQVAE["channels"][0],
        "optimizer": "Adam",
        "lr": TUTORIAL_LR,
        "loss": "L1(reconstruction, image) + quantization loss",
        "steps": len(vq_plan),
        "batch_size": int(vq_plan[0].numel()),
        "same_encoder_decoder_init": True,
        "same_batches": True,
    }

    stages["vqvae"] = round(time.time() - t0 - sum(stages.values()), 1)

    # ---- (b) priors on the codes of our VQ-VAE
    _say("[3/5] caching codes of our VQ-VAE")
    ours.eval()
    with torch.no_grad():
        train_codes = torch.cat(
            [ours.index_quantize(train_x[i : i + 64].to(dev)).cpu() for i in range(0, len(train_x), 64)]
        )
        test_codes = torch.cat(
            [ours.index_quantize(test_x[i : i + 64].to(dev)).cpu() for i in range(0, len(test_x), 64)]
        )
    latent = tuple(train_codes.shape[1:])
    num_classes = len(class_names)
    priors, prior_settings = _build_priors(cfg, latent, num_classes, seed)
    prior_plan = _batch_plan(train_codes.shape[0], cfg["prior_batch_size"], cfg["prior_steps"], seed + 1)
    n_per_class = cfg["samples_per_class"]
    sample_labels = torch.tensor(sorted(class_names)).repeat_interleave(n_per_class)
    prior_models: dict[str, Any] = {}
    samples: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for i, (name, prior) in enumerate(priors.items()):
        _say(f"[4/5] prior {i + 1}/2 ({name}, {_num_params(prior)} parameters): {len(prior_plan)} steps + sampling")
        train_info = _train_prior(prior, train_codes, train_y, prior_plan, cfg["prior_lr"], seed, dev)
        images, timing = _sample(prior, ours, latent, sample_labels, seed, dev)
        samples[name] = (images, sample_labels)
        prior_models[name] = {
            "class": type(prior).__name__,
            "num_params": _num_params(prior),
            **train_info,
            "test_nll": _test_nll(prior, test_codes, test_y, dev),
            **timing,
            "seconds_per_sample": timing["sampling_seconds"] / timing["num_samples"],
        }

    stages["priors"] = round(time.time() - t0 - sum(stages.values()), 1)
    _say("[5/5] generation metrics (feature network trained on the training split only)")
    positions = _positions(train_slices, lo, hi)
    feature_net, feature_info = _feature_net((train_x, train_y), positions, num_classes, cfg, seed)
    generation = _generation_metrics(samples, (test_x, test_y), (train_x, train_y), feature_net, cfg, class_names, seed)
    generation["feature_net"] = feature_info
    stages["generation_metrics"] = round(time.time() - t0 - sum(stages.values()), 1)

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode,
        "command": "python scripts/compare.py " + " ".join(sys.argv[1:]) if sys.argv[1:] else None,
        "seeds": {
            "cohort_and_split": seed,
            "weights": seed,
            "vqvae_batches": seed,
            "prior_batches": seed + 1,
            "prior_dropout": seed,
            "sampling": seed,
            "feature_net": seed,
            "metrics": seed,
        },
        "device": device_info(dev),
        "versions": versions(),
        "data": data,
        "vqvae": {"settings": vq_settings, "models": vq_models},
        "prior": {
            "settings": {
                "trained_on": "codes of the brainvq VQ-VAE from (a) (training split), class-conditional",
                "class_names": class_names,
                "latent_shape": list(latent),
                "num_embeddings": cfg["num_embeddings"],
                "optimizer": "Adam",
                "lr": cfg["prior_lr"],
                "loss": "cross-entropy (NLL) of the codes",
                "steps": len(prior_plan),
                "batch_size": int(prior_plan[0].numel()),
                "same_batches": True,
                "samples_per_class": n_per_class,
                "num_samples": int(sample_labels.numel()),
                "sampler": "AutoregressivePriorInferer.sample_codes(use_cache=True), temperature 1",
                **prior_settings,
            },
            "models": prior_models,
            "generation": generation,
        },
    }
    report["seconds_total"] = round(time.time() - t0, 1)
    report["seconds_per_stage"] = stages
    return _finite(report)


# ------------------------------------------------------------------------------------------------------------- table
def _secs(x: float) -> str:
    return f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def format_table(report: Mapping[str, Any]) -> str:
    """Markdown tables of a :func:`run_compare` report."""
    dev = report["device"]
    vs = report["vqvae"]["settings"]
    ps = report["prior"]["settings"]
    data = report["data"]
    lines = [
        f"mode `{report['mode']}`, {report['date']}, seed {report['seeds']['weights']}; device {dev['device']} "
        f"({dev['cpu']}, {dev['cpu_count']} cores, {dev['torch_threads']} torch threads"
        + (f", {dev['gpu']}" if "gpu" in dev else "")
        + "); "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        f"data: demo cohort, {data['subjects']} subjects x {data['slices_per_subject']} slices, "
        f"{data['spatial_size'][0]}x{data['spatial_size'][1]}, train {data['num_train']} / test {data['num_test']} "
        f"images (disjoint subjects); total {report['seconds_total']} s",
        "",
        f"### (a) VQ-VAE: ours vs MONAI `VQVAE` (tutorial config), {vs['steps']} steps x batch {vs['batch_size']}, "
        f"Adam lr {vs['lr']:g}, L1 + quantization loss",
        "",
        f"Channels ({', '.join(map(str, vs['channels']))}), res channels {vs['num_res_channels']}, "
        f"{vs['num_res_layers']} res layers, K = {vs['num_embeddings']}, D = {vs['embedding_dim']}"
        + (
            f" (**shrunk from the tutorial's ({', '.join(map(str, vs['tutorial_channels']))}) on both sides**)"
            if vs["channels_shrunk"]
            else " (the tutorial's sizes)"
        )
        + "; same encoder/decoder init and batches; only the quantizer differs.",
        "",
        "| model | quantizer | EMA decay | test SSIM | test PSNR (dB) | SSIM in brain | PSNR in brain (dB) "
        "| codes used | perplexity | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in report["vqvae"]["models"].items():
        lines.append(
            f"| {name} | {m['quantizer']} | {m['decay']:g} | {_fmt(m['test_ssim'])} | {_fmt(m['test_psnr'], 2)} "
            f"| {_fmt(m.get('test_ssim_brain_mask'))} | {_fmt(m.get('test_psnr_brain_mask'), 2)} "
            f"| {m['codes_used']}/{m['num_embeddings']} | {_fmt(m['perplexity'], 1)} | {_secs(m['train_seconds'])} |"
        )
    lines += [
        "",
        f"### (b) Priors on the same codes (latent {'x'.join(map(str, ps['latent_shape']))}, K = "
        f"{ps['num_embeddings']}), {ps['steps']} steps x batch {ps['batch_size']}, Adam lr {ps['lr']:g}, "
        f"conditional on AD/NC; {ps['num_samples']} samples ({ps['samples_per_class']} per class)",
        "",
        "| prior | config | params | test NLL (nats/token) | sampling s | s/sample | train s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in report["prior"]["models"].items():
        conf = ps[name]
        if name == "transformer":
            desc = (
                f"dim {conf['attn_layers_dim']}, depth {conf['attn_layers_depth']}, {conf['attn_layers_heads']} heads"
            )
        else:
            desc = f"{conf['channels']} ch, {conf['num_layers']} layers, kernel {conf['kernel_size']}"
        lines.append(
            f"| {name} | {desc} | {m['num_params']:,} | {_fmt(m['test_nll'], 4)} | {_fmt(m['sampling_seconds'], 2)} "
            f"| {_fmt(m['seconds_per_sample'])} | {_secs(m['train_seconds'])} |"
        )
    lines += ["", *_generation_table(report["prior"]["generation"])]
    return "\n".join(lines)


_GEN_ROWS = (
    ("fid", "FID (in-house features)"),
    ("kid", "KID"),
    ("precision", "precision (k=5)"),
    ("recall", "recall (k=5)"),
    ("density", "density"),
    ("coverage", "coverage"),
    ("ms_ssim_diversity", "diversity: mean pairwise MS-SSIM"),
    ("nn_ssim_to_train", "memorisation: mean NN-SSIM to train"),
)


def _ci(row: Mapping[str, Any], key: str) -> str:
    ci = row.get(f"{key}_ci")
    return f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""


def _generation_table(gen: Mapping[str, Any]) -> list[str]:
    """Markdown rows of the generation metrics: one column per prior, then the real-vs-real floor (and target)."""
    if not gen.get("available"):
        return [f"Generation metrics: not computed ({gen.get('reason', 'unavailable')})."]
    priors = [k for k, v in gen.items() if isinstance(v, Mapping) and "groups" in v]
    if not priors:
        return ["Generation metrics: no results."]
    first = gen[priors[0]]
    fn = gen.get("feature_net", {})
    out = [
        f"Generation metrics ({first['counts']['samples']} samples per prior vs {first['counts']['real_test']} test "
        f"images; features: `{fn.get('version')}` trained on the {fn.get('num_images')} training images only; "
        f"seed {first['seed']}; "
        + (
            f"{first['num_bootstrap']} bootstrap replicates for the 95% CIs of FID/PRDC"
            if first["num_bootstrap"]
            else "no bootstrap CIs for FID/PRDC in this mode (too slow on a CPU)"
        )
        + f", bootstrap CIs for diversity and memorisation; KID over {first['kid_subsets']} subsets, its std in the "
        "JSON). The real-vs-real floor scores as many training images as there "
        "are samples (per class: as many as that class has) against the test images in exactly the same way; "
        "diversity is matched against the test images' own value, memorisation against the test images' "
        "NN-SSIM to the training set.",
        "",
    ]
    for group in first["groups"]:
        n = first["groups"][group]["counts"]
        out += [
            f"**{'all classes' if group == 'all' else group}** ({n['samples']} samples, {n['real_test']} test, "
            f"floor {n['real_floor_subset']} training images)",
            "",
            "| metric | " + " | ".join(priors) + " | real-vs-real floor | real test | better |",
            "|---|" + "---:|" * (len(priors) + 2) + "---|",
        ]
        for key, label in _GEN_ROWS:
            rows = [gen[p]["groups"].get(group, {}).get("metrics", {}).get(key) for p in priors]
            if all(r is None for r in rows):
                continue
            ref = next(r for r in rows if r is not None)
            digits = 4 if key == "kid" else 3
            cells = ["—" if r is None else f"{_fmt(r['generated'], digits)}{_ci(r, 'generated')}" for r in rows]
            floor = f"{_fmt(ref.get('real_floor'), digits)}{_ci(ref, 'real_floor')}"
            real_test = _fmt(ref.get("real_test"), digits) if "real_test" in ref else "—"
            out.append(f"| {label} | " + " | ".join(cells) + f" | {floor} | {real_test} | {ref['better']} |")
        copies = [gen[p]["groups"][group]["memorisation"].get("copy_fraction") for p in priors]
        out.append(
            "| memorisation: fraction of samples closer to train than any test image | "
            + " | ".join(_fmt(c) for c in copies)
            + " | — | — | lower |"
        )
        out.append("")
    return out


def main(argv: list[str] | None = None) -> int:
    from brainvq_monai.utils.errors import BrainVQInputError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64x64, shrunk channels, fewer steps (a CPU, minutes)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--out", default="compare_run", help="working folder (demo cohort under OUT/data)")
    parser.add_argument("--json", default=None, help="write the report to this JSON file (default: OUT/compare.json)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, weights, batches and samplers")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # test-suite mode
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    mode = "tiny" if args.tiny else ("quick" if args.quick else "full")
    try:
        report = run_compare(args.out, mode=mode, device=args.device, seed=args.seed)
    except BrainVQInputError as err:
        print(f"compare: {err}", file=sys.stderr)
        return 2
    table = format_table(report)
    print(table)
    path = Path(args.json) if args.json else Path(args.out) / "compare.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**report, "table": table}, indent=2) + "\n")
    _say(f"report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark section ``sampling``: our exact fast samplers against the reference samplers, with identical weights.

* ``transformer_16x16`` (every device), and on CUDA ``transformer_32x32`` (64 samples; dim 96, depth 12, 8 heads):
  ``monai.inferers.VQVAETransformerInferer.sample`` (re-runs the prefix for every token) on MONAI's own
  ``DecoderOnlyTransformer`` (``TransformerPrior.transformer.to_monai()``: the same weights) against
  :class:`~brainvq_monai.inferers.prior_inferer.AutoregressivePriorInferer` with the KV-cached decoder, both decoding
  with the same (cheap) VQ-VAE; on CUDA also the CUDA-graph decoder. MONAI's sampler draws its random numbers
  differently, so the check is that our cached logits equal MONAI's full-forward logits at every position of a
  sampled sequence.
* ``pixelcnn_32x32``: Gated PixelCNN sampling with ``sample_codes(use_cache=True)`` against the naive loop
  (``use_cache=False``, one full forward per position); the check is that both return the same codes for one seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from brainvq_monai.apps.benchmark.timing import make_row, time_fn

__all__ = ["TARGETS", "format_rows", "run"]

SECTION = "sampling"
# issue targets (minimum speedups); recorded next to the measurements, never asserted
TARGETS = {"transformer_cpu": 10.0, "transformer_gpu_32x32": 30.0, "pixelcnn": 5.0}


def _speed(seconds_reference: float, seconds_ours: float, target: float) -> dict[str, Any]:
    speedup = seconds_reference / seconds_ours
    return {
        "seconds_reference": seconds_reference,
        "seconds_ours": seconds_ours,
        "speedup": speedup,
        "target_speedup": target,
        "meets_target": speedup >= target,
    }


def _cheap_vqvae(num_embeddings: int, device: torch.device) -> torch.nn.Module:
    """A tiny MONAI VQ-VAE (one stride-2 level, 8 channels): decoding costs next to nothing."""
    from monai.networks.nets import VQVAE

    return (
        VQVAE(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            channels=(8,),
            num_res_layers=1,
            num_res_channels=(8,),
            downsample_parameters=((2, 4, 1, 1),),
            upsample_parameters=((2, 4, 1, 1, 0),),
            num_embeddings=num_embeddings,
            embedding_dim=4,
        )
        .to(device)
        .eval()
    )


@torch.no_grad()
def _cached_vs_full_logits(
    prior: Any, monai_transformer: torch.nn.Module, codes: torch.Tensor, use_cuda_graph: bool = False
) -> float:
    """Max |cached-decoder logits - MONAI full-forward logits| over every position of the sequences ``codes``."""
    batch = codes.shape[0]
    order = prior.sequence_ordering
    seq = codes.reshape(batch, -1)[:, order]
    bos = torch.full((batch, 1), prior.bos_token, dtype=torch.long, device=codes.device)
    full = monai_transformer(torch.cat([bos, seq[:, :-1]], dim=1))[..., : prior.num_embeddings]
    decoder = prior.incremental_decoder(batch, prior.spatial_shape, use_cuda_graph=use_cuda_graph)
    flat = codes.reshape(batch, -1)
    return max(float((decoder.step(flat, t) - full[:, t]).abs().max()) for t in range(seq.shape[1]))


def _transformer_case(
    name: str,
    device: torch.device,
    latent: tuple[int, int],
    num_samples: int,
    dim: int,
    depth: int,
    heads: int,
    num_embeddings: int,
    repeats: int,
    seed: int,
    target: float,
) -> list[dict[str, Any]]:
    from monai.inferers import VQVAETransformerInferer
    from monai.utils import Ordering

    from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer
    from brainvq_monai.networks.nets.transformer_prior import TransformerPrior

    torch.manual_seed(seed)
    prior = TransformerPrior(
        2,
        num_embeddings,
        latent,
        attn_layers_dim=dim,
        attn_layers_depth=depth,
        attn_layers_heads=heads,
        ordering_type="raster_scan",
    )
    prior = prior.to(device).eval()
    monai_transformer = prior.transformer.to_monai().to(device).eval()  # MONAI's class, the same weights
    vqvae = _cheap_vqvae(num_embeddings, device)
    ordering = Ordering("raster_scan", spatial_dims=2, dimensions=(1, *latent))
    reference = VQVAETransformerInferer()
    ours = AutoregressivePriorInferer()
    starting_tokens = torch.full((num_samples, 1), num_embeddings, dtype=torch.long, device=device)
    config = {
        "latent_shape": list(latent),
        "num_samples": num_samples,
        "num_embeddings": num_embeddings,
        "attn_layers_dim": dim,
        "attn_layers_depth": depth,
        "attn_layers_heads": heads,
    }

    def run_reference() -> torch.Tensor:
        return reference.sample(
            latent, starting_tokens, vqvae, monai_transformer, ordering, temperature=1.0, verbose=False
        )

    def run_ours(cuda_graph: bool) -> Callable[[], torch.Tensor]:
        def fn() -> torch.Tensor:
            prior.use_cuda_graph = cuda_graph
            gen = torch.Generator(device=device).manual_seed(seed)
            codes = ours.sample_codes(prior, num_samples, generator=gen)
            images = vqvae.decode_samples(codes)
            fn.codes = codes  # type: ignore[attr-defined]
            return images

        return fn

    with torch.no_grad():  # warm the reference's kernels with one full-length forward, not a whole sampling run
        monai_transformer(torch.zeros(num_samples, prior.num_positions, dtype=torch.long, device=device))
    t_ref, ref_images = time_fn(run_reference, device, repeats=1, warmup=0)
    variants = [("kv_cache", False)] + ([("kv_cache_cuda_graph", True)] if device.type == "cuda" else [])
    rows = []
    for label, cuda_graph in variants:
        fn = run_ours(cuda_graph)
        t_ours, images = time_fn(fn, device, repeats=repeats, warmup=1)
        codes = fn.codes  # type: ignore[attr-defined]
        diff = _cached_vs_full_logits(prior, monai_transformer, codes, use_cuda_graph=cuda_graph)
        tol = 1e-4 if device.type == "cpu" else 1e-3
        rows.append(
            make_row(
                SECTION,
                name if not cuda_graph else f"{name}_cuda_graph",
                config,
                _speed(t_ref, t_ours, target),
                reference="monai.VQVAETransformerInferer.sample (MONAI DecoderOnlyTransformer)",
                ours=f"AutoregressivePriorInferer.sample_codes ({label})",
                check={
                    "kind": "cached logits == MONAI full-forward logits at every position of a sampled sequence",
                    "max_abs_diff": diff,
                    "tolerance": tol,
                    "passed": diff <= tol and tuple(images.shape) == tuple(ref_images.shape),
                },
            )
        )
    prior.use_cuda_graph = False
    return rows


def _pixelcnn_case(
    name: str,
    device: torch.device,
    latent: tuple[int, int],
    num_samples: int,
    channels: int,
    num_layers: int,
    kernel_size: int,
    num_embeddings: int,
    repeats: int,
    seed: int,
    target: float,
) -> dict[str, Any]:
    from brainvq_monai.inferers.sampling import sample_codes
    from brainvq_monai.networks.nets.gated_pixelcnn import GatedPixelCNN

    torch.manual_seed(seed)
    prior = GatedPixelCNN(
        spatial_dims=2, num_embeddings=num_embeddings, channels=channels, num_layers=num_layers, kernel_size=kernel_size
    )
    prior = prior.to(device).eval()

    def run(use_cache: bool) -> Callable[[], torch.Tensor]:
        def fn() -> torch.Tensor:
            gen = torch.Generator(device=device).manual_seed(seed)
            return sample_codes(prior, num_samples, latent, generator=gen, use_cache=use_cache)

        return fn

    with torch.no_grad():
        prior(torch.zeros(num_samples, *latent, dtype=torch.long, device=device))
    t_naive, codes_naive = time_fn(run(False), device, repeats=1, warmup=0)
    t_fast, codes_fast = time_fn(run(True), device, repeats=repeats, warmup=1)
    return make_row(
        SECTION,
        name,
        {
            "latent_shape": list(latent),
            "num_samples": num_samples,
            "num_embeddings": num_embeddings,
            "channels": channels,
            "num_layers": num_layers,
            "kernel_size": kernel_size,
        },
        _speed(t_naive, t_fast, target),
        reference="sample_codes(use_cache=False) (full forward per position)",
        ours="sample_codes(use_cache=True) (row/column caches)",
        check={"kind": "same codes for the same seed", "passed": bool(torch.equal(codes_naive, codes_fast))},
    )


def run(device: torch.device, quick: bool, tiny: bool, seed: int) -> list[dict[str, Any]]:
    """Runs the section.

    Args:
        device: benchmark device.
        quick: CPU ``--quick`` sizes (fewer samples and repeats).
        tiny: test-suite sizes.
        seed: seed of weights and samplers.

    Returns:
        the rows.
    """
    dev = torch.device(device)
    if tiny:
        t_cfg = {"dim": 16, "depth": 2, "heads": 2, "num_embeddings": 16, "repeats": 1}
        t_cases = [("transformer_4x4", (4, 4), 2, TARGETS["transformer_cpu"])]
        p_cfg = {"latent": (6, 6), "num_samples": 2, "channels": 8, "num_layers": 2, "kernel_size": 3}
        p_cfg.update(num_embeddings=16, repeats=1)
    else:
        t_cfg = {"dim": 96, "depth": 12, "heads": 8, "num_embeddings": 256, "repeats": 2 if quick else 3}
        t_cases = [("transformer_16x16", (16, 16), 4 if quick else 8, TARGETS["transformer_cpu"])]
        if dev.type == "cuda":
            t_cases.append(("transformer_32x32", (32, 32), 64, TARGETS["transformer_gpu_32x32"]))
        p_samples = (2 if quick else 8) if dev.type == "cpu" else 64  # the naive CPU loop dominates --quick
        p_cfg = {"latent": (32, 32), "num_samples": p_samples, "channels": 64, "num_layers": 8, "kernel_size": 5}
        p_cfg.update(num_embeddings=256, repeats=2 if quick else 3)
    rows: list[dict[str, Any]] = []
    for name, latent, samples, target in t_cases:
        rows += _transformer_case(
            name,
            dev,
            latent,
            samples,
            t_cfg["dim"],
            t_cfg["depth"],
            t_cfg["heads"],
            t_cfg["num_embeddings"],
            t_cfg["repeats"],
            seed,
            target,
        )
    latent = p_cfg.pop("latent")
    rows.append(
        _pixelcnn_case(f"pixelcnn_{latent[0]}x{latent[1]}", dev, latent, seed=seed, target=TARGETS["pixelcnn"], **p_cfg)
    )
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of the section's rows.

    Args:
        rows: the rows of :func:`run`.

    Returns:
        the table.
    """
    lines = [f"{'case':<32}{'samples':>8}{'reference s':>13}{'ours s':>10}{'speedup':>9}{'target':>8}  check"]
    for row in rows:
        r, check = row["results"], row["check"]
        detail = f" (max|diff| {check['max_abs_diff']:.1e})" if "max_abs_diff" in check else ""
        lines.append(
            f"{row['case']:<32}{row['config']['num_samples']:>8}{r['seconds_reference']:>13.2f}"
            f"{r['seconds_ours']:>10.3f}{r['speedup']:>8.1f}x{r['target_speedup']:>7.0f}x  "
            f"{'pass' if check['passed'] else 'FAIL'}{detail}"
        )
    return "\n".join(lines)

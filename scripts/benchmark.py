#!/usr/bin/env python
"""Sampling benchmark: our exact fast samplers against the reference samplers, with identical weights.

Cases (one run, side by side):

* ``transformer_16x16`` (every device), and on CUDA ``transformer_32x32`` (64 samples; dim 96, depth 12, 8 heads):
  ``monai.inferers.VQVAETransformerInferer.sample`` (re-runs the prefix for every token) against
  :class:`~brainvq_monai.inferers.prior_inferer.AutoregressivePriorInferer` with the KV-cached decoder, both
  sampling through the same ``DecoderOnlyTransformer`` object and decoding with the same (cheap) VQ-VAE; on CUDA also
  the CUDA-graph decoder. MONAI's sampler draws its random numbers differently, so the check is that our cached
  logits equal MONAI's full-forward logits at every position of a sampled sequence.
* ``pixelcnn_32x32``: Gated PixelCNN sampling with ``sample_codes(use_cache=True)`` against the naive loop
  (``use_cache=False``, one full forward per position); the check is that both return the same codes for one seed.

Usage::

    python scripts/benchmark.py --device cpu --quick --json benchmark.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from brainvq_monai.utils.environment import device_info, versions

__all__ = ["main", "run_benchmark"]

# issue targets (minimum speedups); recorded next to the measurements, never asserted
TARGETS = {"transformer_cpu": 10.0, "transformer_gpu_32x32": 20.0, "pixelcnn": 5.0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: bool) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls (after one untimed call when ``warmup``) and the last result."""
    out = None
    if warmup:
        out = fn()
        _sync(device)
    times = []
    for _ in range(max(1, repeats)):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


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
def _cached_vs_full_logits(prior: Any, codes: torch.Tensor, use_cuda_graph: bool = False) -> float:
    """Max |cached-decoder logits - MONAI full-forward logits| over every position of the sequences ``codes``."""
    batch = codes.shape[0]
    order = prior.sequence_ordering
    seq = codes.reshape(batch, -1)[:, order]
    bos = torch.full((batch, 1), prior.bos_token, dtype=torch.long, device=codes.device)
    full = prior.transformer(torch.cat([bos, seq[:, :-1]], dim=1))[..., : prior.num_embeddings]  # MONAI's forward
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
            latent, starting_tokens, vqvae, prior.transformer, ordering, temperature=1.0, verbose=False
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
        prior.transformer(torch.zeros(num_samples, prior.num_positions, dtype=torch.long, device=device))
    t_ref, ref_images = _time(run_reference, device, repeats=1, warmup=False)
    variants = [("kv_cache", False)] + ([("kv_cache_cuda_graph", True)] if device.type == "cuda" else [])
    rows = []
    for label, cuda_graph in variants:
        fn = run_ours(cuda_graph)
        t_ours, images = _time(fn, device, repeats=repeats, warmup=True)
        diff = _cached_vs_full_logits(prior, fn.codes, use_cuda_graph=cuda_graph)  # type: ignore[attr-defined]
        tol = 1e-4 if device.type == "cpu" else 1e-3
        rows.append(
            {
                "case": name if not cuda_graph else f"{name}_cuda_graph",
                "reference": "monai.VQVAETransformerInferer.sample",
                "ours": f"AutoregressivePriorInferer.sample_codes ({label})",
                "config": config,
                "seconds_reference": t_ref,
                "seconds_ours": t_ours,
                "speedup": t_ref / t_ours,
                "target_speedup": target,
                "meets_target": t_ref / t_ours >= target,
                "check": {
                    "kind": "cached logits == MONAI full-forward logits at every position of a sampled sequence",
                    "max_abs_diff": diff,
                    "tolerance": tol,
                    "passed": diff <= tol and tuple(images.shape) == tuple(ref_images.shape),
                },
            }
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
) -> dict[str, Any] | None:
    try:
        from brainvq_monai.networks.nets.gated_pixelcnn import GatedPixelCNN
    except ImportError:
        return None
    from brainvq_monai.inferers.sampling import sample_codes

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
    t_naive, codes_naive = _time(run(False), device, repeats=1, warmup=False)
    t_fast, codes_fast = _time(run(True), device, repeats=repeats, warmup=True)
    return {
        "case": name,
        "reference": "sample_codes(use_cache=False) (full forward per position)",
        "ours": "sample_codes(use_cache=True) (row/column caches)",
        "config": {
            "latent_shape": list(latent),
            "num_samples": num_samples,
            "num_embeddings": num_embeddings,
            "channels": channels,
            "num_layers": num_layers,
            "kernel_size": kernel_size,
        },
        "seconds_reference": t_naive,
        "seconds_ours": t_fast,
        "speedup": t_naive / t_fast,
        "target_speedup": target,
        "meets_target": t_naive / t_fast >= target,
        "check": {"kind": "same codes for the same seed", "passed": bool(torch.equal(codes_naive, codes_fast))},
    }


def run_benchmark(device: str = "cpu", quick: bool = False, seed: int = 0, tiny: bool = False) -> dict[str, Any]:
    """Runs every case and returns the report (device, versions, date, cases)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmark: --device cuda requested but CUDA is not available")
    if tiny:  # for the test suite: seconds, not minutes
        t_cfg = {"dim": 16, "depth": 2, "heads": 2, "num_embeddings": 16, "repeats": 1}
        t_cases = [("transformer_4x4", (4, 4), 2, TARGETS["transformer_cpu"])]
        p_cfg = {"latent": (6, 6), "num_samples": 2, "channels": 8, "num_layers": 2, "kernel_size": 3}
        p_cfg.update(num_embeddings=16, repeats=1)
    else:
        t_cfg = {"dim": 96, "depth": 12, "heads": 8, "num_embeddings": 256, "repeats": 2 if quick else 3}
        cpu_samples = 4 if quick else 8
        t_cases = [("transformer_16x16", (16, 16), cpu_samples, TARGETS["transformer_cpu"])]
        if dev.type == "cuda":
            t_cases.append(("transformer_32x32", (32, 32), 64, TARGETS["transformer_gpu_32x32"]))
        p_samples = (2 if quick else 8) if dev.type == "cpu" else 64  # the naive CPU loop dominates --quick
        p_cfg = {"latent": (32, 32), "num_samples": p_samples, "channels": 64, "num_layers": 8, "kernel_size": 5}
        p_cfg.update(num_embeddings=256, repeats=2 if quick else 3)
    cases: list[dict[str, Any]] = []
    for name, latent, samples, target in t_cases:
        cases += _transformer_case(
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
    p_case = _pixelcnn_case(
        f"pixelcnn_{p_cfg['latent'][0]}x{p_cfg['latent'][1]}",
        dev,
        p_cfg["latent"],
        p_cfg["num_samples"],
        p_cfg["channels"],
        p_cfg["num_layers"],
        p_cfg["kernel_size"],
        p_cfg["num_embeddings"],
        p_cfg["repeats"],
        seed,
        TARGETS["pixelcnn"],
    )
    if p_case is not None:
        cases.append(p_case)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "tiny" if tiny else ("quick" if quick else "full"),
        "seed": seed,
        "device": device_info(dev),
        "versions": versions(),
        "cases": cases,
    }


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table of the report."""
    dev = report["device"]
    lines = [
        f"date: {report['date']}  mode: {report['mode']}  seed: {report['seed']}",
        f"device: {dev['device']}  cpu: {dev['cpu']} ({dev['cpu_count']} cores, {dev['torch_threads']} torch threads)"
        + (f"  gpu: {dev['gpu']}" if "gpu" in dev else ""),
        "versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        "",
        f"{'case':<32}{'samples':>8}{'reference s':>13}{'ours s':>10}{'speedup':>9}{'target':>8}  check",
    ]
    for c in report["cases"]:
        check = c["check"]
        detail = f" (max|diff| {check['max_abs_diff']:.1e})" if "max_abs_diff" in check else ""
        lines.append(
            f"{c['case']:<32}{c['config']['num_samples']:>8}{c['seconds_reference']:>13.2f}{c['seconds_ours']:>10.3f}"
            f"{c['speedup']:>8.1f}x{c['target_speedup']:>7.0f}x  {'pass' if check['passed'] else 'FAIL'}{detail}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--quick", action="store_true", help="fewer samples and repeats (CPU: a few minutes)")
    parser.add_argument("--json", default=None, help="write the report to this JSON file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of the samplers")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # test-suite mode
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run_benchmark(args.device, quick=args.quick, seed=args.seed, tiny=args.tiny)
    print(format_table(report))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if all(c["check"]["passed"] for c in report["cases"]) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark section ``sampling``: our exact fast samplers against the reference samplers, with identical weights.

* ``transformer_16x16`` (CPU ``--quick``: ``transformer_12x12``, 8 samples), and on CUDA ``transformer_32x32``
  (64 samples; dim 96, depth 12, 8 heads):
  ``monai.inferers.VQVAETransformerInferer.sample`` (re-runs the prefix for every token) on MONAI's own
  ``DecoderOnlyTransformer`` (``TransformerPrior.transformer.to_monai()``: the same weights) against
  :class:`~brainvq_monai.inferers.prior_inferer.AutoregressivePriorInferer` with the KV-cached decoder, both decoding
  with the same (cheap) VQ-VAE; on CUDA also the CUDA-graph decoder. MONAI's sampler draws its random numbers
  differently, so the check is that our cached logits equal MONAI's full-forward logits at every position of a
  sampled sequence.
* ``pixelcnn_32x32`` (CPU ``--quick``: ``pixelcnn_16x16``, 4 samples): Gated PixelCNN sampling with
  ``sample_codes(use_cache=True)`` against the naive loop
  (``use_cache=False``, one full forward per position); the check is that both return the same codes for one seed.

Reference and ours run interleaved (reference, ours, reference, ours, ...) for 3 to ``max_repeats`` repeats, and
each row reports the median and spread of both sides and of the per-repeat speedup. Before it runs, a case
estimates the reference's cost from a few forward passes (the transformer's at three prefix lengths, integrated
over the sequence by Simpson's rule; the PixelCNN's one full pass times the number of positions) and walks down its
size ladder until three repeats fit its share of the section budget. A case named ``transformer_16x16`` that had to
shrink says so in its note and its ``config`` (``latent_shape``, ``num_samples``, ``planned``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from brainvq_monai.apps.benchmark.budget import Budget, choose_size
from brainvq_monai.apps.benchmark.timing import Interleaved, make_row, paired, sync, time_interleaved

__all__ = [
    "MIN_REPEATS",
    "TARGETS",
    "SampleSize",
    "case_name",
    "estimate_pixelcnn_reference",
    "estimate_transformer_reference",
    "format_rows",
    "run",
]

SECTION = "sampling"
# issue targets (minimum speedups); recorded next to the measurements, never asserted
TARGETS = {"transformer_cpu": 10.0, "transformer_gpu_32x32": 30.0, "pixelcnn": 5.0}
#: a size is chosen only if this many interleaved repeats fit its share of the budget (unless it is the smallest)
MIN_REPEATS = 3


@dataclass(frozen=True)
class SampleSize:
    """One size of a sampling case: the latent and the number of samples drawn at once."""

    latent: tuple[int, int]
    num_samples: int

    def __str__(self) -> str:
        return f"{self.latent[0]}x{self.latent[1]}, {self.num_samples} samples"

    @property
    def tokens(self) -> int:
        """Positions sampled per map."""
        return self.latent[0] * self.latent[1]


def _ladder(*sizes: tuple[int, int, int]) -> list[SampleSize]:
    return [SampleSize((h, w), n) for h, w, n in sizes]


def _plan(device: torch.device, quick: bool, tiny: bool) -> dict[str, Any]:
    """The cases (``(kind, size ladder, target)``, planned size first), the model sizes and the most repeats.

    The CPU ``--quick`` sizes fit their share of the default budget three times over on a 2-core Xeon under load, so
    that they shrink only on much slower CPUs; the full CPU sizes are the issue's figures (16x16, 32x32).
    """
    plan: dict[str, Any] = {
        "transformer": {"dim": 96, "depth": 12, "heads": 8, "num_embeddings": 256},
        "pixelcnn": {"channels": 64, "num_layers": 8, "kernel_size": 5, "num_embeddings": 256},
        "max_repeats": 5 if quick else 7,
    }
    if tiny:
        plan["transformer"] = {"dim": 16, "depth": 2, "heads": 2, "num_embeddings": 16}
        plan["pixelcnn"] = {"channels": 8, "num_layers": 2, "kernel_size": 3, "num_embeddings": 16}
        plan["max_repeats"] = 2
        transformers, pixel = [_ladder((4, 4, 2))], _ladder((6, 6, 2))
    elif device.type == "cuda":
        transformers = [
            _ladder((16, 16, 4 if quick else 8), (16, 16, 2), (8, 8, 2)),
            _ladder((32, 32, 64), (32, 32, 16), (16, 16, 16)),
        ]
        pixel = _ladder((32, 32, 64), (32, 32, 16), (16, 16, 16))
    elif quick:
        transformers = [_ladder((12, 12, 8), (12, 12, 4), (8, 8, 4), (8, 8, 2), (4, 4, 1))]
        pixel = _ladder((16, 16, 4), (16, 16, 2), (12, 12, 2), (8, 8, 1))
    else:
        transformers = [_ladder((16, 16, 8), (16, 16, 4), (12, 12, 4), (8, 8, 2), (4, 4, 1))]
        pixel = _ladder((32, 32, 8), (32, 32, 2), (24, 24, 2), (16, 16, 2), (8, 8, 1))
    cases = []
    for ladder in transformers:
        big = ladder[0].latent[0] >= 32 and device.type == "cuda"
        cases.append(("transformer", ladder, TARGETS["transformer_gpu_32x32" if big else "transformer_cpu"]))
    plan["cases"] = [*cases, ("pixelcnn", pixel, TARGETS["pixelcnn"])]
    return plan


def case_name(kind: str, ladder: list[SampleSize]) -> str:
    """A case's name: its kind and planned latent (``transformer_16x16``), whatever size it shrinks to.

    Args:
        kind: ``"transformer"`` or ``"pixelcnn"``.
        ladder: its sizes, planned first.

    Returns:
        the name.
    """
    return f"{kind}_{ladder[0].latent[0]}x{ladder[0].latent[1]}"


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


def _min_seconds(fn: Callable[[], Any], device: torch.device, calls: int = 2) -> float:
    """The fastest of ``calls`` timed calls (a probe: the first call also warms the kernels)."""
    best = math.inf
    for _ in range(calls):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def estimate_transformer_reference(model: torch.nn.Module, size: SampleSize, device: torch.device) -> float:
    """Estimated seconds of ``VQVAETransformerInferer.sample`` at ``size``: one forward per token over the prefix.

    Times the forward at prefix lengths 1, n/2 and n and integrates over the n tokens with Simpson's rule (exact for
    a cost quadratic in the length, as attention is).

    Args:
        model: MONAI's ``DecoderOnlyTransformer``.
        size: the sampling size.
        device: where it runs.

    Returns:
        seconds.
    """
    n = size.tokens
    c = [
        _min_seconds(
            lambda length=length: model(torch.zeros(size.num_samples, length, dtype=torch.long, device=device)), device
        )
        for length in (1, n // 2 + 1, n + 1)
    ]
    return n * (c[0] + 4 * c[1] + c[2]) / 6


@torch.no_grad()
def estimate_pixelcnn_reference(prior: torch.nn.Module, size: SampleSize, device: torch.device) -> float:
    """Estimated seconds of ``sample_codes(use_cache=False)`` at ``size``: one full forward per position.

    Args:
        prior: the Gated PixelCNN.
        size: the sampling size.
        device: where it runs.

    Returns:
        seconds.
    """
    codes = torch.zeros(size.num_samples, *size.latent, dtype=torch.long, device=device)
    return size.tokens * _min_seconds(lambda: prior(codes), device)


def _case_cost(reference_s: float, ours_s: float) -> float:
    """Estimated seconds of a case: MIN_REPEATS reference calls, and ours' warm-ups, repeats and check."""
    return reference_s * MIN_REPEATS + ours_s * (MIN_REPEATS + 2)


def _speed_results(rec: Interleaved, ours: str, target: float, estimate_s: float) -> dict[str, Any]:
    out = paired(rec.times["reference"], rec.times[ours])
    out.update(target_speedup=target, meets_target=out["speedup"] >= target, estimated_reference_s=estimate_s)
    return out


def _config(size: SampleSize, planned: SampleSize, rec: Interleaved, max_repeats: int, **model: Any) -> dict:
    return {
        "latent_shape": list(size.latent),
        "num_samples": size.num_samples,
        **model,
        "planned": {"latent_shape": list(planned.latent), "num_samples": planned.num_samples},
        "repeats": rec.repeats,
        "repeats_planned": rec.planned_repeats,
        "max_repeats": max_repeats,
        "order": "interleaved: " + ", ".join(rec.times) + " per repeat",
    }


def _note(*parts: str | None) -> str | None:
    return "; ".join(p for p in parts if p) or None


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


class _TransformerModels:
    """Our prior, MONAI's transformer with the same weights, and the cheap VQ-VAE, at one latent size."""

    def __init__(self, latent: tuple[int, int], cfg: dict[str, Any], device: torch.device, seed: int) -> None:
        from brainvq_monai.networks.nets.transformer_prior import TransformerPrior

        torch.manual_seed(seed)
        self.prior = TransformerPrior(
            2,
            cfg["num_embeddings"],
            latent,
            attn_layers_dim=cfg["dim"],
            attn_layers_depth=cfg["depth"],
            attn_layers_heads=cfg["heads"],
            ordering_type="raster_scan",
        )
        self.prior = self.prior.to(device).eval()
        self.monai = self.prior.transformer.to_monai().to(device).eval()  # MONAI's class, the same weights
        self.vqvae = _cheap_vqvae(cfg["num_embeddings"], device)


def _transformer_calls(
    m: _TransformerModels, size: SampleSize, device: torch.device, seed: int
) -> list[tuple[str, Callable[[], Any]]]:
    from monai.inferers import VQVAETransformerInferer
    from monai.utils import Ordering

    from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer

    ordering = Ordering("raster_scan", spatial_dims=2, dimensions=(1, *size.latent))
    reference, ours = VQVAETransformerInferer(), AutoregressivePriorInferer()
    start = torch.full((size.num_samples, 1), m.prior.num_embeddings, dtype=torch.long, device=device)

    def run_reference() -> torch.Tensor:
        return reference.sample(size.latent, start, m.vqvae, m.monai, ordering, temperature=1.0, verbose=False)

    def run_ours(cuda_graph: bool) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        def fn() -> tuple[torch.Tensor, torch.Tensor]:
            m.prior.use_cuda_graph = cuda_graph
            gen = torch.Generator(device=device).manual_seed(seed)
            codes = ours.sample_codes(m.prior, size.num_samples, generator=gen)
            return m.vqvae.decode_samples(codes), codes

        return fn

    calls = [("reference", run_reference), ("kv_cache", run_ours(False))]
    if device.type == "cuda":
        calls.append(("kv_cache_cuda_graph", run_ours(True)))
    return calls


def _transformer_case(
    name: str,
    device: torch.device,
    ladder: list[SampleSize],
    cfg: dict[str, Any],
    max_repeats: int,
    available_s: float,
    seed: int,
    target: float,
) -> list[dict[str, Any]]:
    deadline = time.perf_counter() + available_s
    models: dict[SampleSize, _TransformerModels] = {}
    estimates: dict[SampleSize, float] = {}

    def cost(size: SampleSize) -> float:  # probes: reference forwards (warming its kernels), one call of ours
        models[size] = _TransformerModels(size.latent, cfg, device, seed)
        estimates[size] = estimate_transformer_reference(models[size].monai, size, device)
        ours = _min_seconds(_transformer_calls(models[size], size, device, seed)[1][1], device, calls=1)
        return _case_cost(estimates[size], ours)

    choice = choose_size(ladder, cost, available_s)
    size, m = choice.size, models[choice.size]
    rec = time_interleaved(
        _transformer_calls(m, size, device, seed),
        device,
        max_repeats=max_repeats,
        available_s=deadline - time.perf_counter(),
        warmup={"reference": 0},
        estimates={"reference": estimates[size]},
    )
    model_cfg = {
        "num_embeddings": cfg["num_embeddings"],
        "attn_layers_dim": cfg["dim"],
        "attn_layers_depth": cfg["depth"],
        "attn_layers_heads": cfg["heads"],
    }
    ref_images = rec.outputs["reference"]
    rows = []
    for label in [n for n in rec.times if n != "reference"]:
        cuda_graph = label.endswith("cuda_graph")
        images, codes = rec.outputs[label]
        diff = _cached_vs_full_logits(m.prior, m.monai, codes, use_cuda_graph=cuda_graph)
        tol = 1e-4 if device.type == "cpu" else 1e-3
        rows.append(
            make_row(
                SECTION,
                name if not cuda_graph else f"{name}_cuda_graph",
                _config(size, ladder[0], rec, max_repeats, **model_cfg),
                _speed_results(rec, label, target, estimates[size]),
                reference="monai.VQVAETransformerInferer.sample (MONAI DecoderOnlyTransformer)",
                ours=f"AutoregressivePriorInferer.sample_codes ({label})",
                check={
                    "kind": "cached logits == MONAI full-forward logits at every position of a sampled sequence",
                    "max_abs_diff": diff,
                    "tolerance": tol,
                    "passed": diff <= tol and tuple(images.shape) == tuple(ref_images.shape),
                },
                note=_note(choice.note(str), rec.short_note(min(max_repeats, MIN_REPEATS))),
            )
        )
    m.prior.use_cuda_graph = False
    return rows


def _pixelcnn_case(
    name: str,
    device: torch.device,
    ladder: list[SampleSize],
    cfg: dict[str, Any],
    max_repeats: int,
    available_s: float,
    seed: int,
    target: float,
) -> list[dict[str, Any]]:
    from brainvq_monai.inferers.sampling import sample_codes
    from brainvq_monai.networks.nets.gated_pixelcnn import GatedPixelCNN

    deadline = time.perf_counter() + available_s
    torch.manual_seed(seed)
    prior = GatedPixelCNN(spatial_dims=2, **cfg).to(device).eval()
    estimates: dict[SampleSize, float] = {}

    def run(use_cache: bool, size: SampleSize) -> Callable[[], torch.Tensor]:
        def fn() -> torch.Tensor:
            gen = torch.Generator(device=device).manual_seed(seed)
            return sample_codes(prior, size.num_samples, size.latent, generator=gen, use_cache=use_cache)

        return fn

    def cost(size: SampleSize) -> float:  # probes: a reference forward (warming its kernels), one call of ours
        estimates[size] = estimate_pixelcnn_reference(prior, size, device)
        return _case_cost(estimates[size], _min_seconds(run(True, size), device, calls=1))

    choice = choose_size(ladder, cost, available_s)
    size = choice.size

    rec = time_interleaved(
        [("reference", run(False, size)), ("cached", run(True, size))],
        device,
        max_repeats=max_repeats,
        available_s=deadline - time.perf_counter(),
        warmup={"reference": 0},
        estimates={"reference": estimates[size]},
    )
    same = bool(torch.equal(rec.outputs["reference"], rec.outputs["cached"]))
    return [
        make_row(
            SECTION,
            name,
            _config(size, ladder[0], rec, max_repeats, **cfg),
            _speed_results(rec, "cached", target, estimates[size]),
            reference="sample_codes(use_cache=False) (full forward per position)",
            ours="sample_codes(use_cache=True) (row/column caches)",
            check={"kind": "same codes for the same seed", "passed": same},
            note=_note(choice.note(str), rec.short_note(min(max_repeats, MIN_REPEATS))),
        )
    ]


def run(
    device: torch.device,
    quick: bool,
    tiny: bool,
    seed: int,
    budget: Budget | None = None,
    bf16: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Runs the section within ``budget``.

    Args:
        device: benchmark device.
        quick: CPU ``--quick`` sizes (fewer samples and repeats).
        tiny: test-suite sizes.
        seed: seed of weights and samplers.
        budget: the section's time budget and progress lines (default: none, silent).
        bf16: unused (no bf16 rows in this section).

    Returns:
        the rows.
    """
    dev = torch.device(device)
    budget = budget or Budget(SECTION, math.inf, quiet=True)
    plan = _plan(dev, quick, tiny)
    rows: list[dict[str, Any]] = []
    cases = plan["cases"]
    for i, (kind, ladder, target) in enumerate(cases):
        name = case_name(kind, ladder)
        budget.log(f"{name}: planning ({ladder[0]} first, {budget.remaining():.0f} s left)")
        case = _transformer_case if kind == "transformer" else _pixelcnn_case
        new = case(name, dev, ladder, plan[kind], plan["max_repeats"], budget.share(1, len(cases) - i), seed, target)
        budget.rows_done(new)
        rows += new
    return rows


def _med_range(s: dict[str, Any], spec: str, unit: str = "") -> str:
    return f"{s['median']:{spec}}{unit} ({s['min']:{spec}}-{s['max']:{spec}})"


def format_rows(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of the section's rows: medians with the (min-max) over the interleaved repeats.

    Args:
        rows: the rows of :func:`run`.

    Returns:
        the table, with a line per note.
    """
    lines = [
        f"{'case':<30}{'latent':>8}{'samples':>8}{'reps':>5}  {'reference s (min-max)':<24}{'ours s (min-max)':<22}"
        f"{'speedup (min-max)':<22}{'target':>6}  check"
    ]
    for row in rows:
        r, c, check = row["results"], row["config"], row["check"]
        detail = f" (max|diff| {check['max_abs_diff']:.1e})" if "max_abs_diff" in check else ""
        sp = r["spread"]
        lines.append(
            f"{row['case']:<30}{'x'.join(map(str, c['latent_shape'])):>8}{c['num_samples']:>8}{r['repeats']:>5}  "
            f"{_med_range(sp['seconds_reference'], '.2f'):<24}{_med_range(sp['seconds_ours'], '.3f'):<22}"
            f"{_med_range(sp['speedup'], '.1f', 'x'):<22}{r['target_speedup']:>5.0f}x  "
            f"{'pass' if check['passed'] else 'FAIL'}{detail}"
        )
        if row.get("note"):
            lines.append(f"{'':<30}note: {row['note']}")
    return "\n".join(lines)

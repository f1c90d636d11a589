"""Benchmark section ``training``: VQ-VAE and prior training throughput, and code-encoding throughput.

Cases:

* ``vqvae_*``: MONAI's tutorial VQ-VAE (channels 256, 2 residual layers, 256 codes; 128x128 on full runs) trained by
  the tutorial loop (fp32, NCHW, ``Adam``) against our :class:`~brainvq_monai.engines.VQVAETrainer` stepping a
  :class:`~brainvq_monai.networks.nets.BrainVQVAE` of the same sizes (identical initial weights), with each speed
  option added in turn: bf16 autocast, channels-last, fused Adam, ``torch.compile``. The trainer is timed as a real
  Ignite run over a loader of on-device batches, so the figure includes the engine's own per-iteration cost.
* ``prior_*``: tokens/s of prior training from cached codes. References: MONAI's tutorial loop through
  ``VQVAETransformerInferer`` (re-encodes images with the VQ-VAE at every step) and MONAI's ``DecoderOnlyTransformer``
  on cached codes with a per-item collating ``DataLoader`` (fp32). Ours: :class:`~brainvq_monai.engines.PriorTrainer`
  with :class:`~brainvq_monai.networks.nets.TransformerPrior` (no mask buffers, SDPA attention), bf16, fused AdamW and
  the device-resident :func:`~brainvq_monai.data.codes.codes_dataloader`; also the Gated PixelCNN.
* ``encode_*``: images/s of encoding a dataset into code maps: a per-batch fp32 ``index_quantize`` + host copy loop
  against :meth:`~brainvq_monai.inferers.AutoregressivePriorInferer.encode_dataset` with bf16 and channels-last.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Events
from torch.nn import functional as F

from brainvq_monai.apps.benchmark.timing import make_row, measure_memory, sync, time_fn

__all__ = ["format_rows", "run"]

SECTION = "training"
# MONAI's 2D VQ-VAE tutorial model (the reference model)
TUTORIAL_VQVAE = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "channels": (256, 256),
    "num_res_layers": 2,
    "num_res_channels": (256, 256),
    "downsample_parameters": ((2, 4, 1, 1), (2, 4, 1, 1)),
    "upsample_parameters": ((2, 4, 1, 1, 0), (2, 4, 1, 1, 0)),
    "num_embeddings": 256,
    "embedding_dim": 32,
}
# the 2D bundle's VQ-VAE (encoding case, and the VQ-VAE of the tutorial prior loop)
BUNDLE_2D_VQVAE = {**TUTORIAL_VQVAE, "channels": (64, 128), "num_res_channels": (64, 128), "embedding_dim": 64}
TINY_VQVAE = {**TUTORIAL_VQVAE, "channels": (8, 8), "num_res_channels": (8, 8), "num_embeddings": 16}


def _sizes(device: torch.device, quick: bool, tiny: bool) -> dict[str, Any]:
    """What each case runs at: the issue's sizes on CUDA, smaller (and labelled) on CPU."""
    if tiny:
        return {"encode_vqvae": TINY_VQVAE,
            "vqvae": TINY_VQVAE, "image": (32, 32), "vq_batch": 2, "vq_steps": 2, "vq_warmup": 1, "compile": device.type == "cuda",
            "prior_latent": (4, 4), "prior_batch": 2, "prior_dim": 16, "prior_depth": 1, "prior_heads": 2,
            "prior_k": 16, "prior_steps": 2, "encode_images": 8, "encode_batch": 4,
        }  # fmt: skip
    if device.type == "cuda":
        return {"encode_vqvae": BUNDLE_2D_VQVAE,
            "vqvae": TUTORIAL_VQVAE, "image": (128, 128), "vq_batch": 64, "vq_steps": 10 if quick else 30,
            "vq_warmup": 3, "compile": True, "prior_latent": (32, 32), "prior_batch": 32, "prior_dim": 256,
            "prior_depth": 8, "prior_heads": 8, "prior_k": 256, "prior_steps": 10 if quick else 30,
            "encode_images": 2048, "encode_batch": 64,
        }  # fmt: skip
    return {"encode_vqvae": BUNDLE_2D_VQVAE,
        "vqvae": TUTORIAL_VQVAE, "image": (128, 128), "vq_batch": 4 if quick else 16, "vq_steps": 2 if quick else 4,
        "vq_warmup": 1, "compile": not quick, "prior_latent": (16, 16) if quick else (32, 32),
        "prior_batch": 4 if quick else 8, "prior_dim": 256, "prior_depth": 8, "prior_heads": 8, "prior_k": 256,
        "prior_steps": 2 if quick else 3, "encode_images": 32 if quick else 128, "encode_batch": 16,
    }  # fmt: skip


def _engine_rate(trainer: Any, warmup: int, device: torch.device) -> float:
    """Runs an Ignite trainer and returns iterations/s after its first ``warmup`` iterations (device-synchronised)."""
    marks: dict[str, float] = {}

    @trainer.on(Events.ITERATION_COMPLETED)
    def _mark(engine: Any) -> None:
        if engine.state.iteration == warmup:
            sync(device)
            marks["start"] = time.perf_counter()

    trainer.run()
    sync(device)
    timed = trainer.state.iteration - warmup
    return timed / (time.perf_counter() - marks["start"])


def _batches(batch: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
    """A loader of ``n`` identical on-device batches: the step is measured, not the data pipeline."""
    return [batch] * n


def _tutorial_vqvae(
    s: dict[str, Any], images: torch.Tensor, device: torch.device, seed: int
) -> tuple[dict[str, torch.Tensor], tuple[float, float | None]]:
    """MONAI's tutorial loop (fp32, NCHW, Adam lr 1e-4, L1 + quantization loss): its initial weights and timing."""
    from monai.networks.nets import VQVAE

    torch.manual_seed(seed)
    tutorial = VQVAE(**s["vqvae"]).to(device)
    initial = {k: v.detach().clone() for k, v in tutorial.state_dict().items()}
    opt = torch.optim.Adam(tutorial.parameters(), lr=1e-4)

    def step() -> None:
        tutorial.train()
        opt.zero_grad(set_to_none=True)
        recon, quant_loss = tutorial(images=images)
        loss = F.l1_loss(recon.float(), images.float()) + quant_loss
        loss.backward()
        opt.step()

    with measure_memory(device) as mem:
        for _ in range(s["vq_warmup"]):
            step()
        seconds, _ = time_fn(lambda: [step() for _ in range(s["vq_steps"])], device, repeats=1, warmup=0)
    return initial, (seconds, mem.peak_gib)


# ---------------------------------------------------------------------------------------------------- VQ-VAE
def _vqvae_cases(device: torch.device, s: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    from brainvq_monai.engines import VQVAETrainer
    from brainvq_monai.networks.nets import BrainVQVAE

    torch.manual_seed(seed)
    images = torch.rand(s["vq_batch"], 1, *s["image"], generator=torch.Generator().manual_seed(seed)).to(device)
    steps, warmup = s["vq_steps"], s["vq_warmup"]
    initial, (seconds, peak) = _tutorial_vqvae(s, images, device, seed)
    config = {"model": {k: v for k, v in s["vqvae"].items()}, "image_size": list(s["image"]), "batch": s["vq_batch"]}
    config["timed_steps"], config["warmup_steps"] = steps, warmup
    ref_rate = steps * s["vq_batch"] / seconds
    rows = [
        make_row(
            SECTION,
            "vqvae_monai_tutorial_loop",
            config,
            {"images_per_s": ref_rate, "seconds_per_step": seconds / steps, "speedup": 1.0, "peak_gib": peak},
            ours="MONAI tutorial loop: monai VQVAE, fp32, NCHW, torch.optim.Adam (foreach)",
        )
    ]
    variants = [
        ("vqvae_trainer_fp32", "VQVAETrainer, fp32, NCHW", {}),
        ("vqvae_trainer_bf16", "VQVAETrainer, bf16 autocast", {"amp": True}),
        ("vqvae_trainer_bf16_cl", "VQVAETrainer, bf16 + channels-last", {"amp": True, "channels_last": True}),
        (
            "vqvae_trainer_bf16_cl_fused",
            "VQVAETrainer, bf16 + channels-last + fused Adam (bundle default on GPU)",
            {"amp": True, "channels_last": True, "fused": True},
        ),
    ]
    if s["compile"]:
        variants.append(
            (
                "vqvae_trainer_bf16_cl_fused_compile",
                "VQVAETrainer, bf16 + channels-last + fused Adam + torch.compile",
                {"amp": True, "channels_last": True, "fused": True, "compile": True},
            )
        )
    for case, label, opts in variants:
        torch.manual_seed(seed)
        net = BrainVQVAE(**s["vqvae"]).to(device)
        net.load_state_dict(initial, strict=False)  # same initial weights (ours adds codebook-state buffers)
        fused = opts.get("fused", False)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, **({"fused": True} if fused else {}))
        warm = warmup + (2 if opts.get("compile") else 0)  # compilation happens in the first iterations
        trainer = VQVAETrainer(
            device=device,
            max_epochs=1,
            train_data_loader=_batches({"image": images}, warm + steps),
            network=net,
            optimizer=optimizer,
            amp=opts.get("amp", False),
            channels_last=opts.get("channels_last", False),
            compile=opts.get("compile", False),
        )
        with measure_memory(device) as mem:
            rate = _engine_rate(trainer, warm, device) * s["vq_batch"]
        rows.append(
            make_row(
                SECTION,
                case,
                {**config, "options": opts},
                {
                    "images_per_s": rate,
                    "seconds_per_step": s["vq_batch"] / rate,
                    "speedup": rate / ref_rate,
                    "peak_gib": mem.peak_gib,
                },
                reference="vqvae_monai_tutorial_loop",
                ours=label,
            )
        )
        del trainer, net, optimizer
    if not s["compile"]:
        rows[-1]["note"] = "torch.compile variant skipped in this mode (compilation takes minutes on a CPU)"
    return rows


def _monai_prior(
    s: dict[str, Any],
    dataset: Any,
    ordering: Any,
    width: dict[str, int],
    image_size: tuple[int, ...],
    device: torch.device,
    seed: int,
) -> tuple[dict[str, torch.Tensor], float, float]:
    """MONAI's transformer trained the tutorial way (through ``VQVAETransformerInferer``) and on cached codes.

    Returns:
        its initial weights, the seconds of ``prior_steps`` tutorial steps and of ``prior_steps`` cached-code steps.
    """
    from monai.data import DataLoader
    from monai.inferers import VQVAETransformerInferer
    from monai.networks.nets import VQVAE, DecoderOnlyTransformer

    latent, batch, k, steps = s["prior_latent"], s["prior_batch"], s["prior_k"], s["prior_steps"]
    n_tokens = latent[0] * latent[1]
    torch.manual_seed(seed)
    transformer = DecoderOnlyTransformer(num_tokens=k + 1, max_seq_len=n_tokens + 1, **width).to(device)
    initial = {k_: v.detach().clone() for k_, v in transformer.state_dict().items()}
    opt = torch.optim.Adam(transformer.parameters(), lr=5e-4)
    order = torch.as_tensor(ordering.get_sequence_ordering(), device=device)
    vqvae = VQVAE(**{**s["encode_vqvae"], "num_embeddings": k}).to(device).eval()
    images = torch.rand(batch, 1, *image_size, generator=torch.Generator().manual_seed(seed)).to(device)
    inferer = VQVAETransformerInferer()

    def tutorial_step() -> None:  # VQVAETransformerInferer encodes the images with the VQ-VAE at every step
        transformer.train()
        opt.zero_grad(set_to_none=True)
        logits, target, _ = inferer(images, vqvae, transformer, ordering, return_latent=True)
        F.cross_entropy(logits.transpose(1, 2), target).backward()
        opt.step()

    def codes_epoch() -> None:  # the same transformer on cached codes, per-item collating DataLoader
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True)
        for i, item in enumerate(loader):
            if i == steps:
                break
            transformer.train()
            opt.zero_grad(set_to_none=True)
            seq = F.pad(item["codes"].to(device).reshape(batch, -1)[:, order], (1, 0), value=k)
            F.cross_entropy(transformer(seq[:, :-1]).transpose(1, 2), seq[:, 1:]).backward()
            opt.step()

    t_tutorial, _ = time_fn(lambda: [tutorial_step() for _ in range(steps)], device, repeats=1, warmup=1)
    t_codes, _ = time_fn(codes_epoch, device, repeats=1, warmup=0)
    return initial, t_tutorial, t_codes


# ---------------------------------------------------------------------------------------------------- priors
def _prior_cases(device: torch.device, s: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    from monai.utils import Ordering

    from brainvq_monai.data.codes import CodesDataset, codes_dataloader
    from brainvq_monai.engines import PriorTrainer
    from brainvq_monai.networks.nets import GatedPixelCNN, TransformerPrior

    latent, batch, k, steps = s["prior_latent"], s["prior_batch"], s["prior_k"], s["prior_steps"]
    n_tokens = latent[0] * latent[1]
    gen = torch.Generator().manual_seed(seed)
    n_items = batch * (steps + 2)
    codes = torch.randint(0, k, (n_items, *latent), generator=gen)
    dataset = CodesDataset({"codes": codes, "labels": torch.arange(n_items) % 2, "subjects": None})
    width = {"attn_layers_dim": s["prior_dim"], "attn_layers_depth": s["prior_depth"]}
    width["attn_layers_heads"] = s["prior_heads"]
    config = {"latent_shape": list(latent), "tokens_per_sequence": n_tokens + 1, "batch": batch, "num_embeddings": k}
    config.update(width, timed_steps=steps)
    ordering = Ordering("raster_scan", spatial_dims=2, dimensions=(1, *latent))
    rows = []

    image_size = tuple(4 * x for x in latent)
    initial, t_tutorial, t_codes = _monai_prior(s, dataset, ordering, width, image_size, device, seed)
    ref_rate = steps * batch * n_tokens / t_tutorial
    rows.append(
        make_row(
            SECTION,
            "prior_monai_tutorial_inferer",
            {**config, "image_size": list(image_size)},
            {"tokens_per_s": ref_rate, "seconds_per_step": t_tutorial / steps, "speedup": 1.0},
            ours="MONAI tutorial: VQVAETransformerInferer (VQ-VAE encode every step), DecoderOnlyTransformer fp32",
        )
    )
    codes_rate = steps * batch * n_tokens / t_codes
    rows.append(
        make_row(
            SECTION,
            "prior_monai_transformer_cached_codes",
            config,
            {"tokens_per_s": codes_rate, "seconds_per_step": t_codes / steps, "speedup": codes_rate / ref_rate},
            reference="prior_monai_tutorial_inferer",
            ours="MONAI DecoderOnlyTransformer fp32 on cached codes, DataLoader(CodesDataset) collation",
        )
    )

    def prior_trainer_rate(network: torch.nn.Module, amp: bool) -> tuple[float, float | None]:
        optimizer = torch.optim.AdamW(network.parameters(), lr=5e-4, fused=True)
        loader = codes_dataloader(dataset.to(device), batch_size=batch, shuffle=True, drop_last=True)
        warm = 1
        trainer = PriorTrainer(
            device=device,
            max_epochs=1,
            train_data_loader=loader,
            network=network,
            optimizer=optimizer,
            amp=amp,
            epoch_length=warm + steps,
        )
        with measure_memory(device) as mem:
            rate = _engine_rate(trainer, warm, device) * batch * n_tokens
        return rate, mem.peak_gib

    torch.manual_seed(seed)
    prior = TransformerPrior(2, k, latent, num_classes=None, **width).to(device)
    prior.transformer.load_state_dict(initial)  # identical weights (MONAI's mask buffers are dropped on load)
    for amp in (False, True):
        rate, peak = prior_trainer_rate(prior, amp)
        rows.append(
            make_row(
                SECTION,
                f"prior_transformer_trainer_{'bf16' if amp else 'fp32'}",
                config,
                {"tokens_per_s": rate, "seconds_per_step": batch * n_tokens / rate, "speedup": rate / ref_rate},
                reference="prior_monai_tutorial_inferer",
                ours=f"PriorTrainer + TransformerPrior (SDPA, no mask buffers), {'bf16' if amp else 'fp32'}, "
                "fused AdamW, device-resident codes_dataloader",
                check=None,
            )
        )
        rows[-1]["results"]["peak_gib"] = peak
    del prior
    torch.manual_seed(seed)
    pixel_cfg = {"channels": s["prior_dim"] // 2, "num_layers": s["prior_depth"] + 4, "kernel_size": 5}
    pixelcnn = GatedPixelCNN(spatial_dims=2, num_embeddings=k, **pixel_cfg)
    rate, peak = prior_trainer_rate(pixelcnn.to(device), True)
    rows.append(
        make_row(
            SECTION,
            "prior_pixelcnn_trainer_bf16",
            {**{k_: v for k_, v in config.items() if not k_.startswith("attn_")}, "pixelcnn": pixel_cfg},
            {"tokens_per_s": rate, "seconds_per_step": batch * n_tokens / rate, "peak_gib": peak},
            ours="PriorTrainer + GatedPixelCNN, bf16, fused AdamW, device-resident codes_dataloader",
        )
    )
    return rows


# ---------------------------------------------------------------------------------------------------- encoding
def _encode_cases(device: torch.device, s: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    from brainvq_monai.inferers import AutoregressivePriorInferer
    from brainvq_monai.networks.nets import BrainVQVAE

    torch.manual_seed(seed)
    model = s["encode_vqvae"]
    vqvae = BrainVQVAE(**model, init="none").to(device).eval()
    n, bs = s["encode_images"], s["encode_batch"]
    pin = device.type == "cuda"
    host = torch.rand(n, 1, *s["image"], generator=torch.Generator().manual_seed(seed))
    host = host.pin_memory() if pin else host
    batches = [{"image": host[i : i + bs]} for i in range(0, n, bs)]
    config = {"model": {k: v for k, v in model.items()}, "image_size": list(s["image"]), "images": n, "batch": bs}

    @torch.no_grad()
    def naive() -> torch.Tensor:
        return torch.cat([vqvae.index_quantize(b["image"].to(device)).long().cpu() for b in batches])

    inferer = AutoregressivePriorInferer()

    def ours() -> torch.Tensor:
        return inferer.encode_dataset(
            vqvae, batches, device=device, verbose=False, amp=True, channels_last=device.type == "cuda"
        )["codes"]

    t_ref, ref_codes = time_fn(naive, device, repeats=1, warmup=1)
    t_ours, our_codes = time_fn(ours, device, repeats=1, warmup=1)
    agreement = float((ref_codes == our_codes).float().mean())
    return [
        make_row(
            SECTION,
            "encode_naive_fp32",
            config,
            {"images_per_s": n / t_ref, "speedup": 1.0},
            ours="per-batch vqvae.index_quantize fp32 + .cpu() per batch",
        ),
        make_row(
            SECTION,
            "encode_dataset_bf16",
            config,
            {"images_per_s": n / t_ours, "speedup": t_ref / t_ours, "code_agreement_with_fp32": agreement},
            reference="encode_naive_fp32",
            ours="AutoregressivePriorInferer.encode_dataset(amp=True), channels-last on CUDA, one host copy",
            note="bf16 encoder outputs may pick a neighbouring code where two codes are nearly tied",
        ),
    ]


def run(device: torch.device, quick: bool, tiny: bool, seed: int) -> list[dict[str, Any]]:
    """Runs the section.

    Args:
        device: benchmark device.
        quick: CPU ``--quick`` sizes.
        tiny: test-suite sizes.
        seed: seed of weights and data.

    Returns:
        the rows.
    """
    s = _sizes(torch.device(device), quick, tiny)
    rows: list[dict[str, Any]] = []
    for part in (_vqvae_cases, _prior_cases, _encode_cases):
        rows += part(torch.device(device), s, seed)
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _rate(row: dict[str, Any]) -> str:
    r = row["results"]
    for key, unit in (("images_per_s", "img/s"), ("tokens_per_s", "tok/s")):
        if r.get(key) is not None:
            return f"{r[key]:>12,.0f} {unit}"
    return " " * 18


def format_rows(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of the section's rows.

    Args:
        rows: the rows of :func:`run`.

    Returns:
        the table.
    """
    fmt: Callable[[Any], str] = lambda v: "" if v is None else f"{v:.2f}x"  # noqa: E731
    lines = [f"{'case':<42}{'rate':>18}{'vs reference':>14}{'peak GiB':>10}  what"]
    for row in rows:
        r = row["results"]
        peak = "" if r.get("peak_gib") is None else f"{r['peak_gib']:.2f}"
        lines.append(f"{row['case']:<42}{_rate(row)}{fmt(r.get('speedup')):>14}{peak:>10}  {row.get('ours', '')}")
        if row.get("note"):
            lines.append(f"{'':<42}note: {row['note']}")
    return "\n".join(lines)

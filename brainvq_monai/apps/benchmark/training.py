"""Benchmark section ``training``: VQ-VAE and prior training throughput, and code-encoding throughput.

Cases:

* ``vqvae_*``: MONAI's tutorial VQ-VAE (channels 256, 2 residual layers, 256 codes; 128x128 on full runs) trained by
  the tutorial loop (fp32, NCHW, ``Adam``) against our :class:`~brainvq_monai.engines.VQVAETrainer` stepping a
  :class:`~brainvq_monai.networks.nets.BrainVQVAE` of the same sizes (identical initial weights), with each speed
  option added in turn: bf16 autocast, channels-last, fused Adam, ``torch.compile``. Each trainer is timed as a real
  Ignite run (one epoch of ``steps`` iterations over on-device batches, re-run per repeat), so the figure includes the
  engine's own per-run and per-iteration cost.
* ``prior_*``: tokens/s of prior training from cached codes. References: MONAI's tutorial loop through
  ``VQVAETransformerInferer`` (re-encodes images with the VQ-VAE at every step) and MONAI's ``DecoderOnlyTransformer``
  on cached codes with a per-item collating ``DataLoader`` (fp32). Ours: :class:`~brainvq_monai.engines.PriorTrainer`
  with :class:`~brainvq_monai.networks.nets.TransformerPrior` (no mask buffers, SDPA attention), bf16, fused AdamW and
  the device-resident :func:`~brainvq_monai.data.codes.codes_dataloader`; also the Gated PixelCNN.
* ``encode_*``: images/s of encoding a dataset into code maps: a per-batch fp32 ``index_quantize`` + host copy loop
  against :meth:`~brainvq_monai.inferers.AutoregressivePriorInferer.encode_dataset` with bf16 and channels-last.

In each part the reference and every variant run interleaved (reference, variant 1, variant 2, ..., per repeat), and
each row reports its median rate, the spread over repeats and the median per-repeat ratio to the reference. A part
plans its size first: one reference step at the planned size estimates the part's cost, and the size shrinks (down
a ladder of image sizes and batches) until three repeats fit its share of the section budget. bf16 rows run only
where the device has bf16 units (:func:`~brainvq_monai.apps.benchmark.hardware.bf16_support`); elsewhere they are
kept with a ``skipped: ...`` note, and fp32 rows stand in where the report needs a rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from brainvq_monai.apps.benchmark.budget import Budget, choose_size
from brainvq_monai.apps.benchmark.hardware import bf16_support
from brainvq_monai.apps.benchmark.timing import (
    Interleaved,
    make_row,
    measure_memory,
    paired,
    spread,
    sync,
    time_interleaved,
)

__all__ = ["MIN_REPEATS", "format_rows", "run"]

SECTION = "training"
#: a size is chosen only if this many interleaved repeats fit the part's share of the budget
MIN_REPEATS = 3
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
# share of the section budget per part (VQ-VAE, priors, encoding)
_WEIGHTS = {"vqvae": 0.5, "prior": 0.35, "encode": 0.15}
# cost of a bf16 variant relative to the fp32 reference, for planning only (measured: 0.15-0.35 with AMX)
_BF16_COST = 0.5
# seconds of budget a torch.compile variant needs beyond the other variants (compilation is not plannable)
_COMPILE_ALLOWANCE_S = {"cpu": 180.0, "cuda": 60.0}


@dataclass(frozen=True)
class TrainSize:
    """A training size: the spatial size (image or latent) and the batch."""

    spatial: tuple[int, int]
    batch: int

    def __str__(self) -> str:
        return f"{self.spatial[0]}x{self.spatial[1]}, batch {self.batch}"


def _ladder(*sizes: tuple[int, int]) -> list[TrainSize]:
    return [TrainSize((n, n), b) for n, b in sizes]


def _plan(device: torch.device, quick: bool, tiny: bool) -> dict[str, Any]:
    """What each part runs at (planned size first in each ladder), steps per repeat and the most repeats."""
    if tiny:
        return {"vqvae": TINY_VQVAE, "vq_ladder": _ladder((32, 2)), "vq_steps": 1, "compile": device.type == "cuda",
            "prior_ladder": _ladder((4, 2)), "prior_width": (16, 1, 2), "prior_k": 16, "prior_steps": 1,
            "encode_vqvae": TINY_VQVAE, "encode_images": [8], "encode_batch": 4, "encode_size": (32, 32),
            "max_repeats": 2,
        }  # fmt: skip
    if device.type == "cuda":
        return {"vqvae": TUTORIAL_VQVAE, "vq_ladder": _ladder((128, 64), (128, 32), (128, 16)),
            "vq_steps": 5 if quick else 10, "compile": True,
            "prior_ladder": _ladder((32, 32), (32, 16), (16, 16)), "prior_width": (256, 8, 8), "prior_k": 256,
            "prior_steps": 5 if quick else 10, "encode_vqvae": BUNDLE_2D_VQVAE, "encode_images": [2048, 1024, 512],
            "encode_batch": 64, "encode_size": (128, 128), "max_repeats": 3 if quick else 5,
        }  # fmt: skip
    if quick:
        return {"vqvae": TUTORIAL_VQVAE, "vq_ladder": _ladder((128, 1), (64, 1), (32, 1)), "vq_steps": 1,
            "compile": False, "prior_ladder": _ladder((16, 4), (16, 2), (8, 2)), "prior_width": (256, 8, 8),
            "prior_k": 256, "prior_steps": 1, "encode_vqvae": BUNDLE_2D_VQVAE, "encode_images": [32, 16, 8],
            "encode_batch": 16, "encode_size": (128, 128), "max_repeats": 3,
        }  # fmt: skip
    return {"vqvae": TUTORIAL_VQVAE, "vq_ladder": _ladder((128, 16), (128, 8), (128, 4), (64, 4)), "vq_steps": 2,
        "compile": True, "prior_ladder": _ladder((32, 8), (16, 8), (16, 4)), "prior_width": (256, 8, 8),
        "prior_k": 256, "prior_steps": 2, "encode_vqvae": BUNDLE_2D_VQVAE, "encode_images": [128, 64, 32],
        "encode_batch": 16, "encode_size": (128, 128), "max_repeats": 5,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------------- helpers
def _probe(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call of ``fn`` (device-synchronised)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def _engine_run(trainer: Any) -> Callable[[], None]:
    """One Ignite run of ``trainer`` (an epoch of its ``epoch_length`` iterations; re-runnable)."""

    def fn() -> None:
        trainer.run()

    return fn


def _skipped(case: str, config: dict[str, Any], unit: str, ours: str, reason: str) -> dict[str, Any]:
    """A row kept for a case not run here, with the reason."""
    return make_row(SECTION, case, config, {unit: None, "speedup": None}, ours=ours, note=f"skipped: {reason}")


def _rate_results(rec: Interleaved, name: str, work: float, unit: str, per_step: int) -> dict[str, Any]:
    """Median rate, its spread, and the median per-repeat speedup over the ``reference`` call."""
    times = rec.times[name]
    rates = spread([work / t for t in times])
    ratio = paired(rec.times["reference"], times)
    return {
        unit: rates["median"],
        "seconds_per_step": ratio["seconds_ours"] / per_step,
        "speedup": ratio["speedup"],
        "repeats": rec.repeats,
        "spread": {unit: rates, "speedup": ratio["spread"]["speedup"]},
    }


def _peak_gib(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Peak GPU memory of one more (untimed) call of ``fn`` on CUDA; ``None`` elsewhere (no call)."""
    if device.type != "cuda":
        return None
    with measure_memory(device) as mem:
        fn()
    return mem.peak_gib


def _plan_note(choice: Any, rec: Interleaved) -> str | None:
    parts = [choice.note(str), rec.short_note(min(MIN_REPEATS, rec.planned_repeats))]
    return "; ".join(p for p in parts if p) or None


def _order(rec: Interleaved) -> str:
    return "interleaved: " + ", ".join(rec.times) + " per repeat"


# ---------------------------------------------------------------------------------------------------- VQ-VAE
_VQ_VARIANTS = [
    ("vqvae_trainer_fp32", "VQVAETrainer, fp32, NCHW", {}),
    ("vqvae_trainer_bf16", "VQVAETrainer, bf16 autocast", {"amp": True}),
    ("vqvae_trainer_bf16_cl", "VQVAETrainer, bf16 + channels-last", {"amp": True, "channels_last": True}),
    (
        "vqvae_trainer_bf16_cl_fused",
        "VQVAETrainer, bf16 + channels-last + fused Adam (bundle default on GPU)",
        {"amp": True, "channels_last": True, "fused": True},
    ),
    (
        "vqvae_trainer_bf16_cl_fused_compile",
        "VQVAETrainer, bf16 + channels-last + fused Adam + torch.compile",
        {"amp": True, "channels_last": True, "fused": True, "compile": True},
    ),
]


class _TutorialVQVAE:
    """MONAI's tutorial loop (fp32, NCHW, Adam lr 1e-4, L1 + quantization loss) at one size."""

    def __init__(self, model: dict[str, Any], size: TrainSize, device: torch.device, seed: int) -> None:
        from monai.networks.nets import VQVAE

        torch.manual_seed(seed)
        self.net = VQVAE(**model).to(device)
        self.initial = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.rand(size.batch, 1, *size.spatial, generator=gen).to(device)

    def step(self) -> None:
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        recon, quant_loss = self.net(images=self.images)
        loss = F.l1_loss(recon.float(), self.images.float()) + quant_loss
        loss.backward()
        self.opt.step()


def _vq_trainer(
    opts: dict[str, Any], plan: dict[str, Any], tutorial: _TutorialVQVAE, device: torch.device, seed: int
) -> Any:
    from brainvq_monai.engines import VQVAETrainer
    from brainvq_monai.networks.nets import BrainVQVAE

    torch.manual_seed(seed)
    net = BrainVQVAE(**plan["vqvae"]).to(device)
    net.load_state_dict(tutorial.initial, strict=False)  # same initial weights (ours adds codebook-state buffers)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, **({"fused": True} if opts.get("fused") else {}))
    return VQVAETrainer(
        device=device,
        max_epochs=1,
        train_data_loader=[{"image": tutorial.images}] * plan["vq_steps"],
        network=net,
        optimizer=optimizer,
        amp=opts.get("amp", False),
        channels_last=opts.get("channels_last", False),
        compile=opts.get("compile", False),
    )


def _vqvae_part(
    device: torch.device, plan: dict[str, Any], bf16: dict[str, Any], available_s: float, seed: int
) -> list[dict[str, Any]]:
    deadline = time.perf_counter() + available_s
    steps = plan["vq_steps"]
    variants = [v for v in _VQ_VARIANTS if plan["compile"] or "compile" not in v[2]]
    measured = [v for v in variants if bf16["usable"] or not v[2].get("amp")]
    relative = sum(_BF16_COST if v[2].get("amp") else 1.0 for v in measured if "compile" not in v[2])
    tutorials: dict[TrainSize, _TutorialVQVAE] = {}
    probes: dict[TrainSize, float] = {}

    def cost(size: TrainSize) -> float:  # one tutorial step at the size (its warm-up)
        tutorials[size] = _TutorialVQVAE(plan["vqvae"], size, device, seed)
        probes[size] = _probe(tutorials[size].step, device)
        return probes[size] * steps * (MIN_REPEATS + 1) * (1 + relative)

    choice = choose_size(plan["vq_ladder"], cost, available_s)
    size, tutorial = choice.size, tutorials[choice.size]
    compile_note = None
    if any("compile" in v[2] for v in measured):
        spare = deadline - time.perf_counter() - choice.estimate_s
        if spare < _COMPILE_ALLOWANCE_S[device.type]:
            measured = [v for v in measured if "compile" not in v[2]]
            compile_note = (
                f"skipped: {spare:.0f} s of budget left for compilation, < {_COMPILE_ALLOWANCE_S[device.type]:.0f} s"
            )
    trainers = {case: _vq_trainer(opts, plan, tutorial, device, seed) for case, _, opts in measured}
    calls = [("reference", lambda: [tutorial.step() for _ in range(steps)])]
    calls += [(case, _engine_run(trainers[case])) for case, _, _ in measured]
    rec = time_interleaved(
        calls,
        device,
        max_repeats=plan["max_repeats"],
        available_s=deadline - time.perf_counter(),
        warmup={"reference": 0},
        estimates={"reference": probes[size] * steps},
    )
    config = {"model": dict(plan["vqvae"]), "image_size": list(size.spatial), "batch": size.batch}
    config.update(steps_per_repeat=steps, planned=str(plan["vq_ladder"][0]), order=_order(rec))
    work = steps * size.batch
    ref = _rate_results(rec, "reference", work, "images_per_s", steps)
    ref["peak_gib"] = _peak_gib(calls[0][1], device)
    rows = [
        make_row(
            SECTION,
            "vqvae_monai_tutorial_loop",
            config,
            ref,
            ours="MONAI tutorial loop: monai VQVAE, fp32, NCHW, torch.optim.Adam (foreach)",
            note=_plan_note(choice, rec),
        )
    ]
    for case, label, opts in variants:
        cfg = {**config, "options": opts}
        if case not in trainers:
            reason = bf16["reason"] if opts.get("amp") and not bf16["usable"] else None
            if "compile" in opts:
                reason = reason or compile_note or "torch.compile variant not run in this mode (minutes on a CPU)"
            rows.append(_skipped(case, cfg, "images_per_s", label, reason))
            continue
        results = _rate_results(rec, case, work, "images_per_s", steps)
        results["peak_gib"] = _peak_gib(_engine_run(trainers[case]), device)
        rows.append(make_row(SECTION, case, cfg, results, reference="vqvae_monai_tutorial_loop", ours=label))
    if not plan["compile"]:
        skip = "torch.compile variant skipped in this mode (compilation takes minutes on a CPU)"
        rows[-1]["note"] = "; ".join(n for n in (rows[-1].get("note"), skip) if n)
    return rows


# ---------------------------------------------------------------------------------------------------- priors
class _PriorSetup:
    """Codes, MONAI's transformer (tutorial loop and cached codes) and its initial weights, at one size."""

    def __init__(self, plan: dict[str, Any], size: TrainSize, device: torch.device, seed: int) -> None:
        from monai.inferers import VQVAETransformerInferer
        from monai.networks.nets import VQVAE, DecoderOnlyTransformer
        from monai.utils import Ordering

        from brainvq_monai.data.codes import CodesDataset

        dim, depth, heads = plan["prior_width"]
        self.width = {"attn_layers_dim": dim, "attn_layers_depth": depth, "attn_layers_heads": heads}
        self.k, self.batch, self.steps, self.latent = plan["prior_k"], size.batch, plan["prior_steps"], size.spatial
        self.n_tokens = size.spatial[0] * size.spatial[1]
        gen = torch.Generator().manual_seed(seed)
        n_items = size.batch * self.steps  # one epoch is `steps` batches: an Ignite re-run takes len(loader) steps
        codes = torch.randint(0, self.k, (n_items, *size.spatial), generator=gen)
        self.dataset = CodesDataset({"codes": codes, "labels": torch.arange(n_items) % 2, "subjects": None})
        self.ordering = Ordering("raster_scan", spatial_dims=2, dimensions=(1, *size.spatial))
        torch.manual_seed(seed)
        max_len = self.n_tokens + 1
        self.transformer = DecoderOnlyTransformer(num_tokens=self.k + 1, max_seq_len=max_len, **self.width).to(device)
        self.initial = {k_: v.detach().clone() for k_, v in self.transformer.state_dict().items()}
        self.opt = torch.optim.Adam(self.transformer.parameters(), lr=5e-4)
        self.order = torch.as_tensor(self.ordering.get_sequence_ordering(), device=device)
        self.vqvae = VQVAE(**{**plan["encode_vqvae"], "num_embeddings": self.k}).to(device).eval()
        self.image_size = tuple(4 * x for x in size.spatial)
        self.images = torch.rand(size.batch, 1, *self.image_size, generator=gen).to(device)
        self.inferer = VQVAETransformerInferer()
        self.device = device

    def tutorial_step(self) -> None:
        """One step of MONAI's tutorial: ``VQVAETransformerInferer`` encodes the images with the VQ-VAE each step."""
        self.transformer.train()
        self.opt.zero_grad(set_to_none=True)
        logits, target, _ = self.inferer(self.images, self.vqvae, self.transformer, self.ordering, return_latent=True)
        F.cross_entropy(logits.transpose(1, 2), target).backward()
        self.opt.step()

    def codes_epoch(self) -> None:
        """``steps`` steps of the same transformer on cached codes through a per-item collating ``DataLoader``."""
        from monai.data import DataLoader

        loader = DataLoader(self.dataset, batch_size=self.batch, shuffle=True, drop_last=True)
        for i, item in enumerate(loader):
            if i == self.steps:
                break
            self.transformer.train()
            self.opt.zero_grad(set_to_none=True)
            seq = F.pad(item["codes"].to(self.device).reshape(self.batch, -1)[:, self.order], (1, 0), value=self.k)
            F.cross_entropy(self.transformer(seq[:, :-1]).transpose(1, 2), seq[:, 1:]).backward()
            self.opt.step()

    def trainer(self, network: torch.nn.Module, amp: bool) -> Any:
        """A :class:`PriorTrainer` over the device-resident codes loader, one epoch of ``steps`` iterations."""
        from brainvq_monai.data.codes import codes_dataloader
        from brainvq_monai.engines import PriorTrainer

        loader = codes_dataloader(self.dataset.to(self.device), batch_size=self.batch, shuffle=True, drop_last=True)
        return PriorTrainer(
            device=self.device,
            max_epochs=1,
            train_data_loader=loader,
            network=network,
            optimizer=torch.optim.AdamW(network.parameters(), lr=5e-4, fused=True),
            amp=amp,
            epoch_length=self.steps,
        )


_PRIOR_OURS = "fused AdamW, device-resident codes_dataloader"


def _prior_trainers(p: _PriorSetup, bf16: dict[str, Any], seed: int) -> dict[str, tuple[Any, str, bool]]:
    """``case -> (trainer, what, amp)`` of ours: the transformer in fp32 (and bf16), the PixelCNN."""
    from brainvq_monai.networks.nets import GatedPixelCNN, TransformerPrior

    out = {}
    for amp in (False, True) if bf16["usable"] else (False,):
        torch.manual_seed(seed)
        prior = TransformerPrior(2, p.k, p.latent, num_classes=None, **p.width).to(p.device)
        prior.transformer.load_state_dict(p.initial)  # identical weights (MONAI's mask buffers are dropped on load)
        tag = "bf16" if amp else "fp32"
        what = f"PriorTrainer + TransformerPrior (SDPA, no mask buffers), {tag}, {_PRIOR_OURS}"
        out[f"prior_transformer_trainer_{tag}"] = (p.trainer(prior, amp), what, amp)
    torch.manual_seed(seed)
    pixel_cfg = {"channels": p.width["attn_layers_dim"] // 2, "num_layers": p.width["attn_layers_depth"] + 4}
    pixelcnn = GatedPixelCNN(spatial_dims=2, num_embeddings=p.k, kernel_size=5, **pixel_cfg).to(p.device)
    tag = "bf16" if bf16["usable"] else "fp32"
    out[f"prior_pixelcnn_trainer_{tag}"] = (
        p.trainer(pixelcnn, bf16["usable"]),
        f"PriorTrainer + GatedPixelCNN, {tag}, {_PRIOR_OURS}",
        bf16["usable"],
    )
    return out


def _prior_part(
    device: torch.device, plan: dict[str, Any], bf16: dict[str, Any], available_s: float, seed: int
) -> list[dict[str, Any]]:
    deadline = time.perf_counter() + available_s
    setups: dict[TrainSize, _PriorSetup] = {}
    probes: dict[TrainSize, float] = {}
    n_ours = 3 if bf16["usable"] else 2

    def cost(size: TrainSize) -> float:  # one tutorial step at the size (its warm-up)
        setups[size] = _PriorSetup(plan, size, device, seed)
        probes[size] = _probe(setups[size].tutorial_step, device)
        return probes[size] * plan["prior_steps"] * (MIN_REPEATS + 1) * (2 + n_ours)

    choice = choose_size(plan["prior_ladder"], cost, available_s)
    p = setups[choice.size]
    ours = _prior_trainers(p, bf16, seed)
    calls = [
        ("reference", lambda: [p.tutorial_step() for _ in range(p.steps)]),
        ("prior_monai_transformer_cached_codes", p.codes_epoch),
    ]
    calls += [(case, _engine_run(trainer)) for case, (trainer, _, _) in ours.items()]
    rec = time_interleaved(
        calls,
        device,
        max_repeats=plan["max_repeats"],
        available_s=deadline - time.perf_counter(),
        warmup={"reference": 0},
        estimates={"reference": probes[choice.size] * p.steps},
    )
    config = {"latent_shape": list(p.latent), "tokens_per_sequence": p.n_tokens + 1, "batch": p.batch}
    config.update(num_embeddings=p.k, **p.width, timed_steps=p.steps, planned=str(plan["prior_ladder"][0]))
    config["order"] = _order(rec)
    work = p.steps * p.batch * p.n_tokens
    rows = [
        make_row(
            SECTION,
            "prior_monai_tutorial_inferer",
            {**config, "image_size": list(p.image_size)},
            _rate_results(rec, "reference", work, "tokens_per_s", p.steps),
            ours="MONAI tutorial: VQVAETransformerInferer (VQ-VAE encode every step), DecoderOnlyTransformer fp32",
            note=_plan_note(choice, rec),
        ),
        make_row(
            SECTION,
            "prior_monai_transformer_cached_codes",
            config,
            _rate_results(rec, "prior_monai_transformer_cached_codes", work, "tokens_per_s", p.steps),
            reference="prior_monai_tutorial_inferer",
            ours="MONAI DecoderOnlyTransformer fp32 on cached codes, DataLoader(CodesDataset) collation",
        ),
    ]
    if not bf16["usable"]:
        what = f"PriorTrainer + TransformerPrior (SDPA, no mask buffers), bf16, {_PRIOR_OURS}"
        rows.append(_skipped("prior_transformer_trainer_bf16", config, "tokens_per_s", what, bf16["reason"]))
    for case, (trainer, what, _) in ours.items():
        results = _rate_results(rec, case, work, "tokens_per_s", p.steps)
        results["peak_gib"] = _peak_gib(_engine_run(trainer), device)
        cfg = config if "pixelcnn" not in case else {k: v for k, v in config.items() if not k.startswith("attn_")}
        if "pixelcnn" in case:
            results.pop("speedup")  # a different model: its rate, not a speedup
            results["spread"].pop("speedup")
        rows.append(make_row(SECTION, case, cfg, results, reference="prior_monai_tutorial_inferer", ours=what))
    if not bf16["usable"]:
        what = f"PriorTrainer + GatedPixelCNN, bf16, {_PRIOR_OURS}"
        rows.append(_skipped("prior_pixelcnn_trainer_bf16", config, "tokens_per_s", what, bf16["reason"]))
    return rows


# ---------------------------------------------------------------------------------------------------- encoding
def _encode_part(
    device: torch.device, plan: dict[str, Any], bf16: dict[str, Any], available_s: float, seed: int
) -> list[dict[str, Any]]:
    from brainvq_monai.inferers import AutoregressivePriorInferer
    from brainvq_monai.networks.nets import BrainVQVAE

    deadline = time.perf_counter() + available_s
    torch.manual_seed(seed)
    model = plan["encode_vqvae"]
    vqvae = BrainVQVAE(**model, init="none").to(device).eval()
    bs, pin, amp = plan["encode_batch"], device.type == "cuda", bool(bf16["usable"])
    inferer = AutoregressivePriorInferer()
    calls: dict[int, list[tuple[str, Callable[[], Any]]]] = {}
    probes: dict[int, float] = {}

    def make_calls(n: int) -> list[tuple[str, Callable[[], Any]]]:
        host = torch.rand(n, 1, *plan["encode_size"], generator=torch.Generator().manual_seed(seed))
        host = host.pin_memory() if pin else host
        batches = [{"image": host[i : i + bs]} for i in range(0, n, bs)]

        @torch.no_grad()
        def naive() -> torch.Tensor:
            return torch.cat([vqvae.index_quantize(b["image"].to(device)).long().cpu() for b in batches])

        def ours() -> torch.Tensor:
            out = inferer.encode_dataset(vqvae, batches, device=device, verbose=False, amp=amp, channels_last=pin)
            return out["codes"]

        return [("reference", naive), ("ours", ours)]

    def cost(n: int) -> float:  # one naive pass over the images (its warm-up)
        calls[n] = make_calls(n)
        probes[n] = _probe(calls[n][0][1], device)
        return probes[n] * (MIN_REPEATS + 1) * 2

    choice = choose_size(plan["encode_images"], cost, available_s)
    n = choice.size
    rec = time_interleaved(
        calls[n],
        device,
        max_repeats=plan["max_repeats"],
        available_s=deadline - time.perf_counter(),
        warmup={"reference": 0},
        estimates={"reference": probes[n]},
    )
    config = {"model": dict(model), "image_size": list(plan["encode_size"]), "images": n, "batch": bs}
    config.update(planned=plan["encode_images"][0], order=_order(rec))
    agreement = float((rec.outputs["reference"] == rec.outputs["ours"]).float().mean())
    ours = _rate_results(rec, "ours", n, "images_per_s", 1)
    ours.pop("seconds_per_step")
    ours["code_agreement_with_fp32"] = agreement
    naive = _rate_results(rec, "reference", n, "images_per_s", 1)
    naive.pop("seconds_per_step")
    tag = "bf16" if amp else "fp32"
    rows = [
        make_row(
            SECTION,
            "encode_naive_fp32",
            config,
            naive,
            ours="per-batch vqvae.index_quantize fp32 + .cpu() per batch",
            note=choice.note(lambda k: f"{k} images"),
        ),
        make_row(
            SECTION,
            f"encode_dataset_{tag}",
            config,
            ours,
            reference="encode_naive_fp32",
            ours=f"AutoregressivePriorInferer.encode_dataset(amp={amp}), channels-last on CUDA, one host copy",
            note="bf16 encoder outputs may pick a neighbouring code where two codes are nearly tied" if amp else None,
        ),
    ]
    if not amp:
        what = "AutoregressivePriorInferer.encode_dataset(amp=True), channels-last on CUDA, one host copy"
        rows.append(_skipped("encode_dataset_bf16", config, "images_per_s", what, bf16["reason"]))
    return rows


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
        quick: CPU ``--quick`` sizes.
        tiny: test-suite sizes.
        seed: seed of weights and data.
        budget: the section's time budget and progress lines (default: none, silent).
        bf16: :func:`~brainvq_monai.apps.benchmark.hardware.bf16_support` of the device (default: detected).

    Returns:
        the rows.
    """
    dev = torch.device(device)
    budget = budget or Budget(SECTION, math.inf, quiet=True)
    bf16 = bf16 if bf16 is not None else bf16_support(dev)
    if not bf16["usable"]:
        budget.log(f"bf16 rows skipped: {bf16['reason']}")
    plan = _plan(dev, quick, tiny)
    rows: list[dict[str, Any]] = []
    parts: Sequence[tuple[str, Callable[..., list[dict[str, Any]]]]] = (
        ("vqvae", _vqvae_part),
        ("prior", _prior_part),
        ("encode", _encode_part),
    )
    for i, (name, part) in enumerate(parts):
        weights_left = sum(_WEIGHTS[n] for n, _ in parts[i:])
        budget.log(f"{name}: planning ({budget.remaining():.0f} s left)")
        new = part(dev, plan, bf16, budget.share(_WEIGHTS[name], weights_left), seed)
        budget.rows_done(new)
        rows += new
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _rate(row: dict[str, Any]) -> str:
    r = row["results"]
    for key, unit in (("images_per_s", "img/s"), ("tokens_per_s", "tok/s")):
        if r.get(key) is not None:
            s = r["spread"][key]
            return f"{_num(r[key])} ({_num(s['min'])}-{_num(s['max'])}) {unit}"
    return "-"


def _speedup(row: dict[str, Any]) -> str:
    r = row["results"]
    if r.get("speedup") is None:
        return ""
    s = r.get("spread", {}).get("speedup")
    return f"{r['speedup']:.2f}x" + (f" ({s['min']:.2f}-{s['max']:.2f})" if s else "")


def format_rows(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of the section's rows: median rate and ratio with their (min-max) over the repeats.

    Args:
        rows: the rows of :func:`run`.

    Returns:
        the table, with a line per note.
    """
    lines = [f"{'case':<38}{'rate (min-max)':>32}{'vs reference (min-max)':>24}{'reps':>5}{'peak GiB':>9}  what"]
    for row in rows:
        r = row["results"]
        peak = "" if r.get("peak_gib") is None else f"{r['peak_gib']:.2f}"
        reps = "" if r.get("repeats") is None else str(r["repeats"])
        lines.append(f"{row['case']:<38}{_rate(row):>32}{_speedup(row):>24}{reps:>5}{peak:>9}  {row.get('ours', '')}")
        if row.get("note"):
            lines.append(f"{'':<38}note: {row['note']}")
    return "\n".join(lines)

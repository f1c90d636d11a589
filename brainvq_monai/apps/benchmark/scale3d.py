"""Benchmark section ``scale3d``: memory and step time of the 3D models at the sizes of Tudosiu et al. 2022.

Transformer prior (width 512, 24 blocks, 16 heads, ``K = 256`` codes, ``num_tokens = K + 1``) over a 10x14x10 latent
(1,400 codes, ``max_seq_len`` 1,401) and a 20x24x20 latent (9,600 codes, 9,601): our
:class:`~brainvq_monai.networks.nets.causal_transformer.CausalTransformer` (with and without activation
checkpointing) next to MONAI's ``DecoderOnlyTransformer`` (``use_flash_attention`` off and on) with identical weights.
One training step is forward, cross-entropy, backward and an AdamW step (bf16 autocast and fused AdamW on CUDA, fp32
on CPU). Per case: seconds per step, tokens/s, peak CUDA memory, the bytes autograd saves for backward in the forward
(any device), on CUDA the largest batch that fits (doubling from the measured batch up to a cap; out-of-memory is a
result, not a crash), and the size of ``torch.save(state_dict)`` (MONAI's includes its ``n x n`` float32 masks).

3D VQ-VAE (:class:`~brainvq_monai.networks.nets.vqvae.BrainVQVAE`, 4 stride-2 levels, so 160x224x160 -> 10x14x10):
step time and peak memory with and without ``use_checkpointing`` (bf16 + ``channels_last_3d`` on CUDA).

Sizes by mode: CUDA (full or quick) measures the issue's sizes (batch 8 at 1,401 tokens, 4 at 9,601, VQ-VAE batch 2;
full mode also searches the largest batch); CPU ``quick`` (about 35 s on 2 cores, 1 thread) times one step at batch 1
of ours at 1,401 tokens, counts the saved activations of ours with checkpointing and of MONAI's flash path (forward
only), leaves MONAI's default attention to full runs (its forward alone is ~9x ours), measures the checkpoint sizes
and the VQ-VAE at a reduced 80x112x80; CPU full adds every variant's step at 1,401 tokens, our checkpointed
9,601-token step and the 160x224x160 VQ-VAE; ``tiny`` runs toy sizes in seconds. Every row's ``config`` says what
ran, skipped cases keep a row with a note.

Time budget: at each length one forward of ours (with gradients) prices every variant (:data:`_STEP_COST`,
:data:`_SAVED_COST`: planning multiples, not results); each variant gets a share of the seconds left in proportion
to its planned cost, and one that does not fit runs forward only (``time`` -> ``saved``) or not at all, with a note.
The VQ-VAE input shrinks down a ladder (80x112x80, 64x80x64, ...) until its estimated steps fit what is left.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from monai.networks.nets import DecoderOnlyTransformer
from torch.nn import functional as F

from brainvq_monai.apps.benchmark.budget import Budget, SizeChoice, choose_size
from brainvq_monai.apps.benchmark.timing import make_row, measure_memory, saved_activation_bytes, sync, time_fn
from brainvq_monai.networks.nets.causal_transformer import CausalTransformer
from brainvq_monai.networks.nets.vqvae import BrainVQVAE
from brainvq_monai.utils.format import fmt as _fmt

__all__ = ["SECTION", "format_rows", "run"]

SECTION = "scale3d"
VARIANTS = ("ours", "ours_ckpt", "monai", "monai_flash")
_GIB = 2**30
# planning only: seconds of one training step / one forward with gradients of each variant, as multiples of ours'
# forward with gradients at the same length and batch (measured on a 2-core Xeon at 1,401 tokens, fp32)
_STEP_COST = {"ours": 3.5, "ours_ckpt": 3.5, "monai": 11.0, "monai_flash": 3.5}
_SAVED_COST = {"ours": 0.0, "ours_ckpt": 1.2, "monai": 8.6, "monai_flash": 2.5}
# 3D VQ-VAE step (without / with checkpointing) as multiples of its forward without gradients (planning only)
_VQ_STEP_COST = {False: 3.5, True: 4.5}


class _ByteCounter:
    """A write-only sink that counts the bytes ``torch.save`` writes (no copy of the checkpoint is kept)."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _checkpoint_bytes(module: torch.nn.Module) -> int:
    sink = _ByteCounter()
    torch.save(module.state_dict(), sink)  # type: ignore[arg-type]
    return sink.bytes


def _free(device: torch.device) -> None:
    """Returns cached CUDA memory (after collecting cycles, e.g. an OOM traceback's frames); a no-op on CPU."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def _oom_safe(fn: Callable[[], Any], device: torch.device) -> tuple[Any, str | None]:
    """``(fn(), None)``, or ``(None, message)`` after a CUDA out-of-memory error (memory freed)."""
    message = None
    try:
        return fn(), None
    except torch.cuda.OutOfMemoryError as err:
        message = str(err).splitlines()[0][:160]
    except RuntimeError as err:  # cuBLAS / cuDNN allocation failures surface as plain RuntimeErrors
        text = str(err)
        if "out of memory" not in text.lower() and "ALLOC_FAILED" not in text:
            raise
        message = text.splitlines()[0][:160]
    _free(device)
    return None, message


def _gib(value: int | None) -> float | None:
    return None if value is None else round(value / _GIB, 4)


def _plan(device: torch.device, quick: bool, tiny: bool) -> dict[str, Any]:
    """Sizes and which cases run how (``"time"``: timed steps; ``"saved"``: forward only; ``"skip"``: not run)."""
    cuda = device.type == "cuda"
    if tiny:
        return {
            "model": {"attn_layers_dim": 32, "attn_layers_depth": 2, "attn_layers_heads": 4, "num_embeddings": 16},
            "latents": [(2, 3, 2), (3, 4, 3)],
            "batch": [2, 2],
            "modes": {v: ["time", "time"] for v in VARIANTS},
            "warmup": 0,
            "repeats": 1,
            "largest_batch": False,
            "monai_ckpt_big": True,
            "vqvae": {"size": (32, 32, 32), "channels": (4, 4, 8, 8), "num_embeddings": 16, "embedding_dim": 8},
            "vq_ladder": [(32, 32, 32)],
            "vq_batch": 1,
            "vq_warmup": 0,
            "vq_repeats": 1,
            "label": "tiny (toy sizes for tests)",
        }
    full_model = {"attn_layers_dim": 512, "attn_layers_depth": 24, "attn_layers_heads": 16, "num_embeddings": 256}
    full_vq = {"size": (160, 224, 160), "channels": (32, 64, 128, 256), "num_embeddings": 256, "embedding_dim": 64}
    plan: dict[str, Any] = {"model": full_model, "latents": [(10, 14, 10), (20, 24, 20)], "vqvae": dict(full_vq)}
    if cuda:
        plan.update(
            batch=[8, 4],
            modes={v: ["time", "time"] for v in VARIANTS},
            warmup=1 if quick else 2,
            repeats=3 if quick else 5,
            largest_batch=not quick,
            monai_ckpt_big=True,
            vq_batch=2,
            vq_warmup=1 if quick else 2,
            vq_repeats=3 if quick else 5,
            label="cuda quick" if quick else "cuda full",
        )
    else:  # CPU: batch 1, one timed step; quick skips what takes minutes per step
        plan.update(
            batch=[1, 1],
            modes={
                "ours": ["time", "skip"],
                "ours_ckpt": ["saved" if quick else "time", "skip" if quick else "time"],
                "monai": ["skip" if quick else "time", "skip"],
                "monai_flash": ["saved" if quick else "time", "skip"],
            },
            warmup=0,
            repeats=1,
            largest_batch=False,
            monai_ckpt_big=False,
            vq_batch=1,
            vq_warmup=1,
            vq_repeats=1 if quick else 2,
            label="cpu quick" if quick else "cpu full",
        )
        if quick:
            plan["vqvae"]["size"] = (80, 112, 80)
    plan["vq_ladder"] = _vq_ladder(tuple(plan["vqvae"]["size"]), tiny)
    return plan


def _vq_ladder(size: tuple[int, ...], tiny: bool) -> list[tuple[int, ...]]:
    """The 3D VQ-VAE input sizes to try, planned first (each a multiple of 16: four stride-2 levels)."""
    if tiny:
        return [size]
    smaller = [(80, 112, 80), (64, 80, 64), (48, 64, 48), (32, 48, 32)]
    return [size, *[s for s in smaller if math.prod(s) < math.prod(size)]]


# ------------------------------------------------------------------------------------------------------ transformer
def _build(variant: str, reference: CausalTransformer, device: torch.device) -> torch.nn.Module:
    """A fresh model of ``variant`` on ``device`` with ``reference``'s weights (MONAI's built there, masks included)."""
    cfg = {
        "num_tokens": reference.num_tokens,
        "max_seq_len": reference.max_seq_len,
        "attn_layers_dim": reference.attn_layers_dim,
        "attn_layers_depth": reference.attn_layers_depth,
        "attn_layers_heads": reference.attn_layers_heads,
    }
    with torch.device(device):
        if variant.startswith("ours"):
            model: torch.nn.Module = CausalTransformer(**cfg, use_checkpointing=variant == "ours_ckpt")
        else:
            model = DecoderOnlyTransformer(**cfg, use_flash_attention=variant == "monai_flash")
    missing, unexpected = model.load_state_dict(reference.state_dict(), strict=False)
    if unexpected or any("causal_mask" not in key for key in missing):  # MONAI keeps its own masks
        raise RuntimeError(f"weights do not match: missing {missing}, unexpected {unexpected}")
    return model.train()


def _train_step(
    model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module], torch.Tensor], device: torch.device
) -> tuple[Callable[[], float], dict[str, int]]:
    """A training step closure (AdamW, bf16 autocast on CUDA); its first call counts the forward's saved bytes."""
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    saved: dict[str, int] = {}

    def step() -> float:
        counting = not saved
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            with saved_activation_bytes() if counting else nullcontext({}) as counter:
                loss = loss_fn(model)
        if counting:
            saved["bytes"] = counter["bytes"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step, saved


def _token_loss(batch: int, seq_len: int, num_embeddings: int, device: torch.device, seed: int):  # noqa: ANN202
    """Next-code cross-entropy on a random code sequence, start token first (MONAI's training convention)."""
    codes = torch.randint(0, num_embeddings, (batch, seq_len), generator=torch.Generator().manual_seed(seed))
    tokens = torch.cat([torch.full((batch, 1), num_embeddings), codes[:, :-1]], dim=1).to(device)
    targets = codes.to(device).flatten()

    def loss_fn(model: torch.nn.Module) -> torch.Tensor:
        return F.cross_entropy(model(tokens).float().flatten(0, 1), targets)

    return loss_fn


def _measure(step: Callable[[], float], device: torch.device, warmup: int, repeats: int) -> dict[str, Any]:
    """Median step time, last loss and peak CUDA memory of ``step``, or ``{"oom": message}``."""
    out: dict[str, Any] = {}

    def timed() -> None:
        with measure_memory(device) as mem:
            out["seconds"], out["loss"] = time_fn(step, device, repeats=repeats, warmup=warmup)
        out["peak_gib"] = mem.peak_gib

    _, err = _oom_safe(timed, device)
    return {"oom": err} if err is not None else out


def _largest_batch(
    model: torch.nn.Module, start: int, cap: int, seq_len: int, num_embeddings: int, device: torch.device, seed: int
) -> tuple[int, int | None]:
    """Largest batch (doubling from ``start`` up to ``cap``, halving below it) whose step fits, first OOM batch."""
    fits, first_oom = 0, None
    batch = start
    while 1 <= batch <= cap:
        step, _ = _train_step(model, _token_loss(batch, seq_len, num_embeddings, device, seed), device)
        _, err = _oom_safe(step, device)
        del step
        _free(device)
        if err is None:
            fits = batch
            if first_oom is not None:
                break
            batch *= 2
        else:
            first_oom = batch if first_oom is None else min(first_oom, batch)
            if fits:
                break
            batch //= 2
    return fits, first_oom


def _probe(
    reference: CausalTransformer, batch: int, device: torch.device, plan: dict[str, Any], seed: int
) -> tuple[torch.nn.Module | None, float | None, int | None]:
    """Our model on ``device`` and one forward with gradients (bf16 autocast on CUDA): its seconds and saved bytes.

    The seconds scale the cost estimates of every variant at this length (:data:`_STEP_COST`, :data:`_SAVED_COST`);
    the saved bytes are ours' result when its step is not timed. ``(None, None, None)`` after out-of-memory.
    """
    loss_fn = _token_loss(batch, reference.max_seq_len, plan["model"]["num_embeddings"], device, seed)

    def forward() -> tuple[torch.nn.Module, float, int]:
        model = _build("ours", reference, device)
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            with saved_activation_bytes() as counter:
                loss_fn(model)
        sync(device)
        return model, time.perf_counter() - start, counter["bytes"]

    out, err = _oom_safe(forward, device)
    return (None, None, None) if err is not None else out


def _estimate(variant: str, mode: str, f: float | None, plan: dict[str, Any]) -> float:
    """Estimated seconds of ``variant`` in ``mode`` from ours' forward seconds ``f`` (0 when unknown or skipped)."""
    if f is None or mode == "skip":
        return 0.0
    if mode == "saved":
        return _SAVED_COST[variant] * f
    return _STEP_COST[variant] * f * (plan["warmup"] + plan["repeats"])


def _choose_mode(
    planned: str, variant: str, f: float | None, plan: dict[str, Any], share_s: float
) -> tuple[str, str | None]:
    """The planned mode, or a cheaper one (``time`` -> ``saved`` -> ``skip``) when its estimate exceeds ``share_s``."""
    if planned == "skip":
        return planned, None
    options = ["time", "saved"] if planned == "time" else ["saved"]
    for mode in options:
        estimate = _estimate(variant, mode, f, plan)
        if estimate <= share_s:
            if mode == planned:
                return mode, None
            first = _estimate(variant, planned, f, plan)
            return mode, f"step not timed: estimated {first:.0f} s > {share_s:.0f} s of the time budget; forward only"
    estimate = _estimate(variant, options[-1], f, plan)
    return "skip", f"skipped: even its forward (estimated {estimate:.0f} s) exceeds {share_s:.0f} s of the time budget"


def _transformer_case(
    variant: str,
    mode: str,
    reference: CausalTransformer,
    li: int,
    batch: int,
    device: torch.device,
    plan: dict[str, Any],
    base_cfg: dict[str, Any],
    seed: int,
    probe: tuple[Any, float | None, int | None] = (None, None, None),
    budget_note: str | None = None,
    search_s: float = math.inf,
) -> dict[str, Any]:
    """One row: a transformer variant's training step at one sequence length (or why it was not run).

    ``probe`` is :func:`_probe`'s result at this length (reused for ``ours``), ``budget_note`` says why the mode is
    cheaper than planned, and ``search_s`` is the budget left for the largest-batch search.
    """
    n, k = reference.max_seq_len, plan["model"]["num_embeddings"]
    cuda = device.type == "cuda"
    cfg = {**base_cfg, "batch": batch, "dtype": "bf16 autocast" if cuda else "fp32"}
    cfg["optimizer"] = "AdamW fused" if cuda else "AdamW"
    cfg["activation_checkpointing"] = variant == "ours_ckpt"
    cfg["planned_mode"] = plan["modes"][variant][li]
    if variant.startswith("monai"):
        cfg["use_flash_attention"] = variant == "monai_flash"
        label = {"reference": "monai DecoderOnlyTransformer" + (" (flash)" if variant == "monai_flash" else "")}
    else:
        label = {"ours": "CausalTransformer" + (" + checkpointing" if variant == "ours_ckpt" else "")}
    case = f"transformer_{n}_{variant}"
    results: dict[str, Any] = dict.fromkeys(
        (
            "seconds_per_step",
            "tokens_per_s",
            "peak_memory_gib",
            "saved_activation_gib",
            "saved_activation_bytes",
            "loss_last_step",
            "oom",
            "largest_batch",
            "first_oom_batch",
        )
    )
    if mode == "skip":
        why = budget_note or "not run in this mode"
        if budget_note is None and not cuda and li == 1:
            why = "9,601-token step not run on CPU in this mode (minutes per step)"
            if variant.startswith("monai"):
                why = "MONAI at 9,601 tokens not built on CPU (8.8 GB of masks + n x n attention)"
        elif budget_note is None and not cuda and variant == "monai":
            why = "not run in --quick on CPU: its forward alone takes about 9x ours (n x n attention in fp32)"
        return make_row(SECTION, case, cfg, results, note=why, **label)
    notes = [] if cuda else ["peak memory: CUDA only"]
    if budget_note:
        notes.append(budget_note)
    if variant == "ours" and mode == "saved" and probe[2] is not None:  # the probe's forward is this measurement
        cfg["batch"] = batch
        results["saved_activation_gib"] = _gib(probe[2])
        results["saved_activation_bytes"] = probe[2]
        if not budget_note:
            notes.append("forward only (saved activations); step not timed in this mode")
        return make_row(SECTION, case, cfg, results, note="; ".join(notes), **label)
    if variant == "ours" and probe[0] is not None:
        model, err = probe[0], None
    else:
        model, err = _oom_safe(lambda: _build(variant, reference, device), device)
    if err is not None:
        results["oom"] = True
        return make_row(SECTION, case, cfg, results, note=f"building the model: {err}", **label)
    if mode == "saved":  # forward only: what autograd keeps for backward
        cfg["batch"] = 1
        loss_fn = _token_loss(1, n, k, device, seed)
        with saved_activation_bytes() as counter:
            loss_fn(model)
        results["saved_activation_gib"] = _gib(counter["bytes"])
        results["saved_activation_bytes"] = counter["bytes"]
        if not budget_note:
            notes.append("forward only (saved activations); step not timed in this mode")
    else:
        step, saved = _train_step(model, _token_loss(batch, n, k, device, seed), device)
        measured = _measure(step, device, plan["warmup"], plan["repeats"])
        del step
        _free(device)
        results["oom"] = "oom" in measured
        if results["oom"]:
            notes.append(f"out of memory at batch {batch}: {measured['oom']}")
        else:
            results.update(
                seconds_per_step=measured["seconds"],
                tokens_per_s=batch * n / measured["seconds"],
                peak_memory_gib=measured["peak_gib"],
                loss_last_step=measured["loss"],
            )
        results["saved_activation_gib"] = _gib(saved.get("bytes"))
        results["saved_activation_bytes"] = saved.get("bytes")
        if plan["largest_batch"]:
            cap = 64 if li == 0 else 32
            search = 4 * cap / batch * (results["seconds_per_step"] or 0.0)  # doubling up to cap, one step each
            if search <= search_s:
                results["largest_batch"], results["first_oom_batch"] = _largest_batch(
                    model, batch, cap, n, k, device, seed
                )
                cfg["largest_batch_cap"] = cap
            else:
                notes.append(f"largest-batch search skipped: estimated {search:.0f} s > {search_s:.0f} s left")
    del model
    _free(device)
    return make_row(SECTION, case, cfg, results, note="; ".join(notes) or None, **label)


def _transformer_rows(
    device: torch.device, plan: dict[str, Any], seed: int, budget: Budget, available_s: float
) -> list[dict[str, Any]]:
    """Checkpoint rows and every variant at each length, each variant's mode fitted to its share of the budget.

    At each length, a probe forward of ours prices every variant (:func:`_estimate`); a variant's share of the
    seconds left is in proportion to its planned cost, and a variant whose planned mode does not fit its share runs
    forward only, or not at all (:func:`_choose_mode`).
    """
    deadline = time.perf_counter() + available_s
    rows: list[dict[str, Any]] = []
    model_cfg = plan["model"]
    active = [[v for v in VARIANTS if plan["modes"][v][li] != "skip"] for li in range(len(plan["latents"]))]
    for li, latent in enumerate(plan["latents"]):
        n = math.prod(latent) + 1
        torch.manual_seed(seed)
        reference = CausalTransformer(
            num_tokens=model_cfg["num_embeddings"] + 1,
            max_seq_len=n,
            attn_layers_dim=model_cfg["attn_layers_dim"],
            attn_layers_depth=model_cfg["attn_layers_depth"],
            attn_layers_heads=model_cfg["attn_layers_heads"],
        )  # the shared initial weights, on CPU
        base_cfg = {**model_cfg, "latent": list(latent), "seq_len": n, "device": device.type, "mode": plan["label"]}
        ckpt_rows = _checkpoint_rows(reference, n, device, plan, base_cfg)
        budget.rows_done(ckpt_rows)
        rows += ckpt_rows
        batch = plan["batch"][li]
        probe = _probe(reference, batch, device, plan, seed) if active[li] else (None, None, None)
        f = probe[1]
        planned = {v: _estimate(v, plan["modes"][v][li], f, plan) for v in VARIANTS}
        later = sum(len(a) for a in active[li + 1 :])  # later lengths share what is left by their case count
        length_share = (deadline - time.perf_counter()) * len(active[li]) / max(1, len(active[li]) + later)
        length_deadline = time.perf_counter() + length_share
        for i, variant in enumerate(VARIANTS):
            left = max(0.0, length_deadline - time.perf_counter())
            weights = sum(planned[v] for v in VARIANTS[i:]) or 1.0
            share = left * planned[variant] / weights if planned[variant] else left
            mode, why = _choose_mode(plan["modes"][variant][li], variant, f, plan, share)
            spare = max(0.0, share - _estimate(variant, mode, f, plan))
            row = _transformer_case(
                variant, mode, reference, li, batch, device, plan, base_cfg, seed, probe, why, spare
            )
            probe = (None, probe[1], probe[2])  # ours' model is released: later peaks measure their own model only
            _free(device)
            budget.rows_done([row])
            rows.append(row)
        del probe
        _free(device)
    return rows


def _checkpoint_rows(
    reference: CausalTransformer,
    n: int,
    device: torch.device,
    plan: dict[str, Any],
    base_cfg: dict[str, Any],
) -> list[dict[str, Any]]:
    """Checkpoint sizes of ours and MONAI's (and, where MONAI's is built, an fp32 equivalence check)."""
    rows = []
    depth = reference.attn_layers_depth
    ours_bytes = _checkpoint_bytes(reference)
    rows.append(
        make_row(
            SECTION,
            f"checkpoint_{n}_ours",
            {**base_cfg, "device": "cpu"},
            {"checkpoint_bytes": ours_bytes, "checkpoint_gib": _gib(ours_bytes), "mask_bytes": 0},
            ours="CausalTransformer state_dict",
        )
    )
    mask_bytes_expected = 4 * depth * n * n
    build_on: torch.device | None = None
    if mask_bytes_expected <= _GIB:  # 1,401 tokens: 188 MB of masks, measured on CPU on every device
        build_on = torch.device("cpu")
    elif device.type == "cuda" and plan["monai_ckpt_big"]:
        free, _ = torch.cuda.mem_get_info(device)
        build_on = device if free > 2 * mask_bytes_expected else None
    results: dict[str, Any] = {"checkpoint_bytes": None, "checkpoint_gib": None, "mask_bytes": None}
    check = None
    note = None
    if build_on is None:
        note = f"not built on {device.type}: its masks alone take {mask_bytes_expected / 1e9:.1f} GB"
    else:
        sizes = {
            "num_tokens": reference.num_tokens,
            "max_seq_len": n,
            "attn_layers_dim": reference.attn_layers_dim,
            "attn_layers_depth": depth,
            "attn_layers_heads": reference.attn_layers_heads,
        }
        with torch.device(build_on):
            monai_tf = DecoderOnlyTransformer(**sizes)
        monai_tf.load_state_dict(reference.state_dict(), strict=False)
        size = _checkpoint_bytes(monai_tf)
        masks = sum(b.numel() * b.element_size() for name, b in monai_tf.named_buffers() if "causal_mask" in name)
        results = {"checkpoint_bytes": size, "checkpoint_gib": _gib(size), "mask_bytes": masks}
        results["ratio_to_ours"] = size / ours_bytes
        if build_on.type == "cpu":  # ours loads MONAI's state dict strictly and computes the same function
            loaded = CausalTransformer(**sizes)
            loaded.load_state_dict(monai_tf.state_dict(), strict=True)
            length = min(n, 256)
            x = torch.randint(0, reference.num_tokens, (1, length), generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                diff = float((loaded.eval()(x) - monai_tf.eval()(x)).abs().max())
            check = {
                "kind": "monai_state_dict_loads_strict_and_same_logits_fp32_cpu",
                "tokens": length,
                "max_abs_diff": diff,
                "tolerance": 1e-4,
                "passed": diff < 1e-4,
            }
            del loaded
        del monai_tf
        _free(build_on)
    rows.append(
        make_row(
            SECTION,
            f"checkpoint_{n}_monai",
            {**base_cfg, "device": build_on.type if build_on is not None else device.type},
            results,
            reference="monai DecoderOnlyTransformer state_dict (n x n float32 causal_mask per block)",
            check=check,
            note=note,
        )
    )
    return rows


# ----------------------------------------------------------------------------------------------------------- VQ-VAE
def _vq_model(use_ckpt: bool, device: torch.device, plan: dict[str, Any], seed: int) -> BrainVQVAE:
    vq = plan["vqvae"]
    torch.manual_seed(seed)
    with torch.device(device):
        return BrainVQVAE(
            spatial_dims=3,
            in_channels=1,
            out_channels=1,
            channels=vq["channels"],
            num_res_layers=1,
            num_res_channels=vq["channels"],
            downsample_parameters=((2, 4, 1, 1),) * 4,
            upsample_parameters=((2, 4, 1, 1, 0),) * 4,
            num_embeddings=vq["num_embeddings"],
            embedding_dim=vq["embedding_dim"],
            use_checkpointing=use_ckpt,
            init="sample",
            codebook_seed=seed,
        )


def _vqvae_case(
    use_ckpt: bool, size: tuple[int, ...], device: torch.device, plan: dict[str, Any], seed: int, note: str | None
) -> dict[str, Any]:
    """One row: a 3D VQ-VAE training step (L1 reconstruction + quantisation loss, AdamW) at input ``size``."""
    vq = plan["vqvae"]
    cuda = device.type == "cuda"
    batch = plan["vq_batch"]
    model = _vq_model(use_ckpt, device, plan, seed)
    fmt = torch.channels_last_3d if cuda else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    reduced = "" if size == (160, 224, 160) else f" (reduced input {'x'.join(map(str, size))})"
    cfg = {
        "input": list(size),
        "latent": list(model.latent_shape(size)),
        "batch": batch,
        "channels": list(vq["channels"]),
        "num_res_layers": 1,
        "num_embeddings": vq["num_embeddings"],
        "embedding_dim": vq["embedding_dim"],
        "dtype": "bf16 autocast" if cuda else "fp32",
        "memory_format": "channels_last_3d" if cuda else "contiguous",
        "use_checkpointing": use_ckpt,
        "device": device.type,
        "mode": plan["label"] + reduced,
    }
    images = torch.rand((batch, 1, *size), generator=torch.Generator().manual_seed(seed))
    images = images.to(device).contiguous(memory_format=fmt)

    def loss_fn(net: torch.nn.Module) -> torch.Tensor:
        recon, q_loss = net(images)
        return F.l1_loss(recon.float(), images) + q_loss.float()

    step, saved = _train_step(model, loss_fn, device)
    measured = _measure(step, device, plan["vq_warmup"], plan["vq_repeats"])
    results: dict[str, Any] = {"seconds_per_step": None, "volumes_per_s": None, "peak_memory_gib": None}
    note = "; ".join(n for n in (None if cuda else "peak memory: CUDA only", note) if n) or None
    if "oom" in measured:
        note = f"out of memory at batch {batch}: {measured['oom']}"
    else:
        seconds = measured["seconds"]
        results.update(seconds_per_step=seconds, volumes_per_s=batch / seconds, peak_memory_gib=measured["peak_gib"])
    results["saved_activation_gib"] = _gib(saved.get("bytes"))
    results["saved_activation_bytes"] = saved.get("bytes")
    results["oom"] = "oom" in measured
    case = f"vqvae3d_{'x'.join(map(str, size))}" + ("_ckpt" if use_ckpt else "")
    return make_row(SECTION, case, cfg, results, ours="BrainVQVAE 3D training step", note=note)


def _vq_forward_seconds(size: tuple[int, ...], device: torch.device, plan: dict[str, Any], seed: int) -> float:
    """Seconds of one forward without gradients of the 3D VQ-VAE at ``size`` (a probe; ``inf`` after OOM)."""
    model = _vq_model(False, device, plan, seed).eval()
    images = torch.rand((plan["vq_batch"], 1, *size), generator=torch.Generator().manual_seed(seed)).to(device)

    def forward() -> float:
        sync(device)
        start = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            model(images)
        sync(device)
        return time.perf_counter() - start

    seconds, err = _oom_safe(forward, device)
    return math.inf if err is not None else seconds


def _plan_vqvae(device: torch.device, plan: dict[str, Any], seed: int, available_s: float) -> SizeChoice:
    """The largest 3D VQ-VAE input of the ladder whose two cases (without and with checkpointing) fit."""
    calls = plan["vq_warmup"] + plan["vq_repeats"]

    def cost(size: tuple[int, ...]) -> float:
        seconds = _vq_forward_seconds(size, device, plan, seed)
        _free(device)
        return seconds * calls * sum(_VQ_STEP_COST.values())

    return choose_size(plan["vq_ladder"], cost, available_s)


def _vqvae_rows(device: torch.device, plan: dict[str, Any], seed: int, choice: SizeChoice) -> list[dict[str, Any]]:
    """The 3D VQ-VAE step without and with checkpointing at the planned input size."""
    note = choice.note(lambda size: "x".join(map(str, size)))
    rows = []
    for use_ckpt in (False, True):
        rows.append(_vqvae_case(use_ckpt, choice.size, device, plan, seed, note))
        _free(device)
    return rows


# -------------------------------------------------------------------------------------------------------------- API
def run(
    device: torch.device,
    quick: bool,
    tiny: bool,
    seed: int,
    budget: Budget | None = None,
    bf16: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Runs the section within ``budget``: the 3D VQ-VAE is sized first (at most a quarter), the transformer gets the rest.

    Args:
        device: where to measure (``cuda`` gives the issue's sizes; ``cpu`` the reduced plan of the module docstring).
        quick: the CPU ``--quick`` plan (about half a minute on 2 cores); on CUDA fewer repeats, no largest-batch
            search.
        tiny: toy sizes for the test suite (seconds).
        seed: seed of the weights and data.
        budget: the section's time budget and progress lines (default: none, silent).
        bf16: unused (bf16 autocast is used on CUDA only here).

    Returns:
        the rows (see :func:`brainvq_monai.apps.benchmark.timing.make_row`).
    """
    device = torch.device(device)
    budget = budget or Budget(SECTION, math.inf, quiet=True)
    plan = _plan(device, quick, tiny)
    vq = _plan_vqvae(device, plan, seed, budget.share(0.25, 1.0))  # priced first, run last
    budget.log(f"3D VQ-VAE planned at {'x'.join(map(str, vq.size))} (estimated {vq.estimate_s:.0f} s)")
    rows = _transformer_rows(device, plan, seed, budget, max(0.0, budget.remaining() - vq.estimate_s))
    vq_rows = _vqvae_rows(device, plan, seed, vq)
    budget.rows_done(vq_rows)
    return rows + vq_rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A plain-text table, one line per row (every case shown; ``-`` for what was not measured).

    Args:
        rows: rows of this section.

    Returns:
        the table.
    """
    header = (
        f"{'case':<32} {'batch':>5} {'s/step':>8} {'tok|vol/s':>10} {'peak GiB':>8} {'saved GiB':>9} "
        f"{'ckpt MB':>9} {'max b':>5} {'OOM':>4}  note"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        res, cfg = row["results"], row["config"]
        rate = res.get("tokens_per_s", res.get("volumes_per_s"))
        ckpt = res.get("checkpoint_bytes")
        extra = []
        if "check" in row:
            extra.append(f"check {'ok' if row['check']['passed'] else 'FAILED'} ({row['check']['max_abs_diff']:.1e})")
        if row.get("note"):
            extra.append(row["note"])
        if "mode" in cfg:
            extra.append(f"[{cfg['mode']}]")
        lines.append(
            f"{row['case']:<32} {_fmt(cfg.get('batch'), 'd'):>5} {_fmt(res.get('seconds_per_step'), '.3f'):>8} "
            f"{_fmt(rate, '.1f'):>10} {_fmt(res.get('peak_memory_gib'), '.2f'):>8} "
            f"{_fmt(res.get('saved_activation_gib'), '.3f'):>9} {_fmt(None if ckpt is None else ckpt / 1e6, '.1f'):>9} "
            f"{_fmt(res.get('largest_batch'), 'd'):>5} {_fmt(res.get('oom'), ''):>4}  {'; '.join(extra)}"
        )
    return "\n".join(lines)

"""EMA vector quantizer that does not collapse: data-based init, dead-code restart, fp32 math, DDP-safe.

:class:`RobustEMAQuantizer` is a drop-in replacement for :class:`monai.networks.layers.EMAQuantizer` (same constructor
arguments where they overlap, same ``quantize`` / ``embed`` / ``forward`` methods, same parameter and buffer names so
MONAI checkpoints load) and :class:`RobustVectorQuantizer` replaces MONAI's ``VectorQuantizer`` wrapper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.networks.layers.vector_quantizer import EMAQuantizer, VectorQuantizer

from brainvq_monai.networks._jit import jit_unused
from brainvq_monai.utils.distributed import rank_and_world
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["RobustEMAQuantizer", "RobustVectorQuantizer", "codebook_perplexity"]

_INIT_MODES = ("kmeans", "sample", "none")
_EMBEDDING_INITS = ("normal", "kaiming_uniform")
# distance matrices are computed in row chunks of at most this many elements (bounds memory for 3D latents)
_MAX_DISTANCE_ELEMENTS = 1 << 24


def codebook_perplexity(counts: torch.Tensor) -> torch.Tensor:
    """Perplexity of a code-usage histogram: ``exp(entropy)`` of the normalised counts.

    Equals the number of codes when usage is uniform, 1 when a single code is used; an empty histogram gives 0.

    Args:
        counts: non-negative counts (or probabilities) over the codebook in the last dimension, shape ``[..., K]``.

    Returns:
        tensor of shape ``counts.shape[:-1]``, float32 (float64 for float64 counts).
    """
    counts = counts.detach()
    counts = counts.to(torch.promote_types(counts.dtype, torch.float32))
    total = counts.sum(dim=-1, keepdim=True)
    probs = counts / total.clamp_min(torch.finfo(counts.dtype).tiny)
    entropy = -torch.special.xlogy(probs, probs).sum(dim=-1)
    return torch.where(total.squeeze(-1) > 0, entropy.exp(), torch.zeros_like(entropy))


def _nearest(x: torch.Tensor, codebook: torch.Tensor, max_elements: int = _MAX_DISTANCE_ELEMENTS) -> torch.Tensor:
    """Index of the nearest code (squared Euclidean) for every row of ``x``; fp32, chunked over rows.

    Args:
        x: ``[N, C]`` rows.
        codebook: ``[K, C]`` codes.
        max_elements: largest distance matrix computed at once (rows per chunk: ``max_elements // K``).

    Returns:
        ``[N]`` long indices.
    """
    codebook_sq = (codebook**2).sum(dim=1)
    if torch.jit.is_tracing():  # a traced graph must not bake in a data-dependent number of chunks
        return torch.addmm(codebook_sq, x, codebook.t(), beta=1.0, alpha=-2.0).argmin(dim=1)
    chunk = max(1, max_elements // max(1, codebook.shape[0]))
    out: list[torch.Tensor] = []
    for start in range(0, x.shape[0], chunk):
        rows = x[start : start + chunk]
        # ||x||^2 is constant per row and does not change the argmin
        out.append(torch.addmm(codebook_sq, rows, codebook.t(), beta=1.0, alpha=-2.0).argmin(dim=1))
    if len(out) == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    return torch.cat(out)


def _code_counts(indices: torch.Tensor, k: int) -> torch.Tensor:
    """Histogram of ``indices`` over ``k`` codes (float32); unlike ``torch.bincount`` it never syncs a CUDA stream."""
    flat = indices.reshape(-1)
    return torch.zeros(k, device=flat.device).index_add_(0, flat, torch.ones(flat.shape, device=flat.device))


def _kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (D^2 sampling) of ``k`` centroids from the rows of ``x``."""
    m = x.shape[0]
    first = torch.randint(m, (1,), generator=generator, device=x.device)
    centroids = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(dim=1)
    for _ in range(1, k):
        # the tiny constant keeps the weights valid (uniform) once every distinct point is chosen
        idx = torch.multinomial(d2 + 1e-20, 1, generator=generator)
        centroids.append(x[idx])
        d2 = torch.minimum(d2, ((x - x[idx]) ** 2).sum(dim=1))
    return torch.cat(centroids)


def _random_rows(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` random rows of ``x``: without replacement when possible, else with replacement."""
    m = x.shape[0]
    if m >= k:
        idx = torch.randperm(m, generator=generator, device=x.device)[:k]
    else:
        idx = torch.randint(m, (k,), generator=generator, device=x.device)
    return x[idx]


def _kmeans(
    x: torch.Tensor, k: int, iters: int, generator: torch.Generator, plus_plus: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on the rows of ``x`` (fp32). Empty clusters are re-seeded from random rows every iteration.

    Returns:
        centroids ``[k, D]`` and the final cluster counts ``[k]`` (float32).
    """
    centroids = _kmeans_pp(x, k, generator) if plus_plus else _random_rows(x, k, generator)
    for _ in range(iters):
        idx = _nearest(x, centroids)
        counts = _code_counts(idx, k)
        sums = torch.zeros_like(centroids).index_add_(0, idx, x)
        means = sums / counts.clamp_min(1.0).unsqueeze(1)
        reseed = _random_rows(x, k, generator)
        centroids = torch.where((counts > 0).unsqueeze(1), means, reseed)
    counts = _code_counts(_nearest(x, centroids), k)
    return centroids, counts


class RobustEMAQuantizer(EMAQuantizer):
    """EMA vector quantizer (van den Oord et al. 2017) hardened against codebook collapse.

    A subclass of MONAI's :class:`~monai.networks.layers.EMAQuantizer` with the same constructor arguments where they
    overlap (but ``decay`` defaults to 0.99, as in the paper, where MONAI's ``VQVAE`` passes 0.5), the same methods
    (``quantize``, ``embed``, ``forward -> (quantized, loss, encoding_indices)``) and the same parameter/buffer names
    (``embedding.weight``, ``ema_cluster_size``, ``ema_w``), plus:

    - **data-based init** on the first training batch (``init="kmeans"``: k-means++ seeding and ``kmeans_iters``
      Lloyd iterations on at most ``init_max_samples`` encoder outputs; ``"sample"``: random encoder outputs;
      ``"none"``: keep the random codebook). The persistent buffer ``initialized`` records that the codebook has been
      initialised or trained, so a loaded checkpoint (including a MONAI one, see ``_load_from_state_dict``) is never
      re-initialised.
    - **dead-code restart**: every ``restart_every`` codebook updates, codes that were assigned fewer than
      ``dead_code_threshold`` vectors per update on average over those updates (actual counts, summed over ranks
      under DDP) are re-seeded from current encoder outputs (random rows plus Gaussian noise of ``restart_noise``
      times the per-channel std). Counting recent assignments rather than reading the EMA cluster size matters: with
      decay 0.99 a code that was popular at init keeps an EMA size above 1 for hundreds of updates after its last
      assignment, long enough for the encoder to collapse onto a handful of codes. With ``N`` vectors per (global)
      update the mean is ``N / K``, so keep the threshold well below it (the default 1.0 means "less than one
      assignment per update"). A re-seeded code gets ``ema_cluster_size = max(dead_code_threshold, 1)`` and a
      matching ``ema_w``.
    - **fp32 math**: distances, EMA statistics and the commitment loss are computed in float32 with autocast disabled
      (for the input's device type); ``quantized`` is returned in the input dtype, ``loss`` in float32.
    - **DDP-safe**: with ``ddp_sync`` and an initialised process group of size > 1, the EMA statistics are
      all-reduced, and init / restart samples are all-gathered, computed on rank 0 and broadcast, so the codebook stays
      bit-identical across ranks.
    - **update rule**: the codebook (init, EMA, restarts) changes iff ``self.training and not self.freeze_codebook``,
      whether or not gradients are enabled (same as MONAI for ``no_grad`` in train mode); never in eval mode.
    - **usage statistics** of the last forward (detached, local to the rank): ``last_counts`` (``[K]`` histogram),
      ``last_codes_used``, ``last_perplexity``; and ``last_restarted``, the number of codes re-seeded at the last
      restart. Accumulate ``last_counts`` over an epoch and use :func:`codebook_perplexity` for epoch-level metrics.
    - **TorchScript**: ``torch.jit.script`` compiles the eval-mode forward (nearest-code assignment, straight-through
      output, loss, no autocast); codebook updates and usage statistics are host-side training logic, left out
      (``@torch.jit.unused``: a scripted quantizer in training mode raises).

    Args:
        spatial_dims: number of spatial dimensions of the input (2 or 3).
        num_embeddings: number of codes ``K``.
        embedding_dim: channels of the input and of every code.
        commitment_cost: weight of the MSE between the input and its (detached) quantization. Defaults to 0.25.
        decay: EMA decay. Defaults to 0.99.
        epsilon: Laplace smoothing of the cluster sizes. Defaults to 1e-5.
        embedding_init: random codebook init, ``"normal"`` or ``"kaiming_uniform"``. Defaults to ``"normal"``.
        ddp_sync: synchronise statistics, init and restarts across processes. Defaults to True.
        init: data-based init, ``"kmeans"``, ``"sample"`` or ``"none"``. Defaults to ``"kmeans"``.
        kmeans_iters: Lloyd iterations for ``init="kmeans"``. Defaults to 10.
        init_max_samples: encoder outputs (over all ranks) used for the init. Defaults to 20000.
        dead_code_threshold: codes assigned fewer vectors than this per update (averaged over the last
            ``restart_every`` updates) are restarted. Defaults to 1.0.
        restart_every: restart check period in codebook updates; 0 disables restarts. Defaults to 10.
        restart_noise: std of the noise added to re-seeded codes, relative to the per-channel std of the samples.
            Defaults to 0.01.
        freeze_codebook: never update the codebook (can be changed later as an attribute). Defaults to False.
        seed: seed for init/restart sampling (mixed with the update count); ``None`` draws one from torch's global
            generator at each event. Defaults to None.
    """

    def __init__(
        self,
        spatial_dims: int,
        num_embeddings: int,
        embedding_dim: int,
        commitment_cost: float = 0.25,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        embedding_init: str = "normal",
        ddp_sync: bool = True,
        init: str = "kmeans",
        kmeans_iters: int = 10,
        init_max_samples: int = 20000,
        dead_code_threshold: float = 1.0,
        restart_every: int = 10,
        restart_noise: float = 0.01,
        freeze_codebook: bool = False,
        seed: int | None = None,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise BrainVQInputError("spatial_dims", f"must be 2 or 3, got {spatial_dims}")
        if num_embeddings < 1 or embedding_dim < 1:
            raise BrainVQInputError("num_embeddings/embedding_dim", "must be positive integers")
        if embedding_init not in _EMBEDDING_INITS:
            raise BrainVQInputError("embedding_init", f"must be one of {_EMBEDDING_INITS}, got {embedding_init!r}")
        if init not in _INIT_MODES:
            raise BrainVQInputError("init", f"must be one of {_INIT_MODES}, got {init!r}")
        if not 0.0 <= decay < 1.0:
            raise BrainVQInputError("decay", f"must be in [0, 1), got {decay}")
        if restart_every < 0 or kmeans_iters < 0 or init_max_samples < 1:
            raise BrainVQInputError(
                "restart_every/kmeans_iters/init_max_samples", "must be >= 0, >= 0 and >= 1 respectively"
            )
        super().__init__(
            spatial_dims=spatial_dims,
            num_embeddings=num_embeddings,
            embedding_dim=embedding_dim,
            commitment_cost=commitment_cost,
            decay=decay,
            epsilon=epsilon,
            embedding_init=embedding_init,
            ddp_sync=ddp_sync,
        )
        self.init = init
        self.kmeans_iters = int(kmeans_iters)
        self.init_max_samples = int(init_max_samples)
        self.dead_code_threshold = float(dead_code_threshold)
        self.restart_every = int(restart_every)
        self.restart_noise = float(restart_noise)
        self.freeze_codebook = bool(freeze_codebook)
        self.seed = seed
        # consistent EMA state for a fresh codebook: one (virtual) assignment per code, so that unused codes keep
        # their position instead of being divided by epsilon on the first update (MONAI starts from zeros)
        with torch.no_grad():
            self.ema_cluster_size.fill_(1.0)
            self.ema_w.copy_(self.embedding.weight)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        # assignments since the last restart check (not saved: checkpoints stay MONAI-compatible)
        self.register_buffer("recent_counts", torch.zeros(num_embeddings), persistent=False)
        self.initialized: torch.Tensor
        self.num_updates: torch.Tensor
        self.last_counts: torch.Tensor = torch.zeros(num_embeddings, dtype=torch.long)
        self.last_codes_used: torch.Tensor = torch.zeros((), dtype=torch.long)
        self.last_perplexity: torch.Tensor = torch.zeros(())
        self.last_restarted: int = 0
        self._host: tuple[bool, int] | None = None  # host mirror of the buffers, reset on load

    # ------------------------------------------------------------------ MONAI-compatible API
    def quantize(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Nearest-code assignment, as MONAI's ``EMAQuantizer.quantize`` (never updates the codebook).

        Args:
            inputs: encoder outputs ``[B, C, *spatial]``.

        Returns:
            the flattened fp32 input ``[N, C]``, its one-hot assignment ``[N, K]`` and the indices ``[B, *spatial]``.
        """
        flat_input, encoding_indices = self._assign(inputs)
        encodings = F.one_hot(encoding_indices.reshape(-1), self.num_embeddings).float()
        return flat_input, encodings, encoding_indices

    def embed(self, embedding_indices: torch.Tensor) -> torch.Tensor:
        """Codes for indices ``[B, *spatial]`` in channel-first layout ``[B, C, *spatial]`` (codebook dtype).

        Args:
            embedding_indices: integer code indices.

        Returns:
            the embedded tensor.
        """
        if torch.jit.is_scripting():  # TorchScript's autocast needs a constant device type (and runs no autocast)
            return self._embed(embedding_indices)
        with torch.autocast(device_type=embedding_indices.device.type, enabled=False):
            return self._embed(embedding_indices)

    def _embed(self, embedding_indices: torch.Tensor) -> torch.Tensor:
        """:meth:`embed` without the autocast context."""
        return F.embedding(embedding_indices, self.embedding.weight).permute(self.quantization_permutation).contiguous()

    def distributed_synchronization(self, encodings_sum: torch.Tensor, dw: torch.Tensor) -> None:
        """All-reduce (sum) the per-batch EMA statistics in place when distributed with ``ddp_sync``.

        Args:
            encodings_sum: number of vectors assigned to each code ``[K]``.
            dw: sum of the vectors assigned to each code ``[K, C]``.
        """
        if self._sync_world() > 1:
            dist.all_reduce(encodings_sum, op=dist.ReduceOp.SUM)
            dist.all_reduce(dw, op=dist.ReduceOp.SUM)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize ``inputs`` and, in training mode, update the codebook.

        Args:
            inputs: encoder outputs ``[B, C, *spatial]``.

        Returns:
            ``(quantized, loss, encoding_indices)``: straight-through quantization in the input dtype, the fp32
            commitment loss (scalar) and the code indices ``[B, *spatial]``.
        """
        if torch.jit.is_scripting():  # TorchScript's autocast needs a constant device type (and runs no autocast)
            return self._quantize_fp32(inputs)
        with torch.autocast(device_type=inputs.device.type, enabled=False):
            quantized, loss, encoding_indices = self._quantize_fp32(inputs)
        if not torch.jit.is_tracing():
            self._record_usage(encoding_indices)
        return quantized, loss, encoding_indices

    # ------------------------------------------------------------------ internals
    def _quantize_fp32(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward` without the autocast context and the usage statistics."""
        update = self.training and not self.freeze_codebook
        x = inputs.float()
        flat = x.detach().permute(self.flatten_permutation).reshape(-1, self.embedding_dim)
        if update:
            self._maybe_data_init(flat)
        indices = _nearest(flat, self.embedding.weight.detach().float())
        encoding_indices = indices.view(x.shape[:1] + x.shape[2:])
        quantized = self._embed(encoding_indices).float()
        if update:
            self._ema_update(flat, indices)
        loss = self.commitment_cost * (quantized.detach() - x).pow(2).mean()
        quantized = (x + (quantized - x).detach()).to(inputs.dtype)
        return quantized, loss, encoding_indices

    def _assign(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=inputs.device.type, enabled=False):
            x = inputs.float()
            flat = x.permute(self.flatten_permutation).reshape(-1, self.embedding_dim)
            indices = _nearest(flat, self.embedding.weight.detach().float())
            return flat, indices.view(x.shape[:1] + x.shape[2:])

    @jit_unused
    def _maybe_data_init(self, flat: torch.Tensor) -> None:
        """Initialises the codebook from ``flat`` on the first update of an uninitialised codebook (training only).

        Args:
            flat: detached fp32 encoder outputs ``[N, C]``.
        """
        if not self._host_state()[0] and self.init != "none":
            self._data_init(flat)

    def _host_state(self) -> tuple[bool, int]:
        """Host copy of ``(initialized, num_updates)``: read from the buffers once, so training steps do not sync."""
        if self._host is None:
            self._host = (bool(self.initialized), int(self.num_updates))
        return self._host

    def _sync_world(self) -> int:
        return rank_and_world()[1] if self.ddp_sync else 1

    @jit_unused
    @torch.no_grad()
    def _record_usage(self, indices: torch.Tensor) -> None:
        counts = _code_counts(indices, self.num_embeddings).long()
        self.last_counts = counts
        self.last_codes_used = (counts > 0).sum()
        self.last_perplexity = codebook_perplexity(counts)

    def _generator(self, device: torch.device, rank: int) -> torch.Generator:
        if self.seed is None:
            base = int(torch.randint(0, 2**62, (1,)).item())
        else:
            base = int(self.seed) * 1_000_003 + self._host_state()[1]
        gen = torch.Generator(device=device)
        gen.manual_seed((base + 7919 * rank) % (2**63))
        return gen

    def _gather_rows(self, flat: torch.Tensor, max_rows: int) -> tuple[torch.Tensor, int]:
        """Random rows of ``flat`` from every rank (identical result on all ranks) and the global row count."""
        rank, world = rank_and_world() if self.ddp_sync else (0, 1)
        gen = self._generator(flat.device, rank)
        n_local = flat.shape[0]
        if world == 1:
            return _random_rows(flat, min(max_rows, n_local), gen), n_local
        # one all_reduce(MAX) gives both the total (sum of one-hot-by-rank sizes) and the smallest local size
        sizes = torch.zeros(world + 1, dtype=torch.long, device=flat.device)
        sizes[rank] = n_local
        sizes[world] = -n_local
        dist.all_reduce(sizes, op=dist.ReduceOp.MAX)
        total, smallest = sizes[:world].sum(), -sizes[world]
        per_rank = min(math.ceil(max_rows / world), int(smallest.item()))
        local = _random_rows(flat, per_rank, gen).contiguous()
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local)
        return torch.cat(parts), int(total.item())

    def _broadcast(self, *tensors: torch.Tensor) -> None:
        if self._sync_world() > 1:
            for t in tensors:
                dist.broadcast(t, src=0)

    @torch.no_grad()
    def _set_codebook(self, weight: torch.Tensor, cluster_size: torch.Tensor) -> None:
        """Set codes and EMA statistics consistently: ``embedding == ema_w / smoothed(ema_cluster_size)``."""
        n = cluster_size.sum()
        smoothed = (cluster_size + self.epsilon) / (n + self.num_embeddings * self.epsilon) * n
        self.ema_cluster_size.copy_(cluster_size)
        self.ema_w.copy_(weight * smoothed.unsqueeze(1))
        self.embedding.weight.copy_(weight)

    @torch.no_grad()
    def _data_init(self, flat: torch.Tensor) -> None:
        """Initialise the codebook from encoder outputs (k-means or random rows), identically on every rank."""
        samples, n_total = self._gather_rows(flat, self.init_max_samples)
        weight = torch.empty(self.num_embeddings, self.embedding_dim, device=flat.device)
        cluster_size = torch.empty(self.num_embeddings, device=flat.device)
        if rank_and_world()[0] == 0 or self._sync_world() == 1:
            gen = self._generator(flat.device, 0)
            if self.init == "kmeans":
                centroids, counts = _kmeans(samples, self.num_embeddings, self.kmeans_iters, gen)
            else:
                centroids = _random_rows(samples, self.num_embeddings, gen)
                if samples.shape[0] < self.num_embeddings:  # duplicates: spread them a little
                    centroids = centroids + self._noise(samples, centroids.shape, gen)
                counts = _code_counts(_nearest(samples, centroids), self.num_embeddings)
            weight.copy_(centroids)
            cluster_size.copy_(counts * (n_total / max(1, samples.shape[0])))
        self._broadcast(weight, cluster_size)
        self._set_codebook(weight.to(self.embedding.weight.dtype), cluster_size.to(self.ema_cluster_size.dtype))
        self.initialized.fill_(True)
        self._host = (True, self._host_state()[1])

    def _noise(self, samples: torch.Tensor, shape: Sequence[int], gen: torch.Generator) -> torch.Tensor:
        std = samples.std(dim=0) if samples.shape[0] > 1 else samples.new_ones(samples.shape[1])
        noise = torch.randn(tuple(shape), generator=gen, device=samples.device)
        return noise * (self.restart_noise * std.clamp_min(1e-6))

    @jit_unused
    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        encodings_sum = _code_counts(indices, self.num_embeddings)
        dw = torch.zeros(self.num_embeddings, self.embedding_dim, device=flat.device).index_add_(0, indices, flat)
        self.distributed_synchronization(encodings_sum, dw)
        self.recent_counts.add_(encodings_sum.to(self.recent_counts.dtype))
        decay = self.decay
        self.ema_cluster_size.mul_(decay).add_(encodings_sum.to(self.ema_cluster_size.dtype), alpha=1 - decay)
        self.ema_w.mul_(decay).add_(dw.to(self.ema_w.dtype), alpha=1 - decay)
        n = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + self.epsilon) / (n + self.num_embeddings * self.epsilon) * n
        self.embedding.weight.copy_(self.ema_w / smoothed.unsqueeze(1))
        self.initialized.fill_(True)
        self.num_updates.add_(1)
        num_updates = self._host_state()[1] + 1
        self._host = (True, num_updates)
        if self.restart_every > 0 and num_updates % self.restart_every == 0:
            self._restart_dead_codes(flat)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> None:
        """Re-seed codes assigned less than ``dead_code_threshold`` per update since the last check."""
        samples, _ = self._gather_rows(flat, self.num_embeddings)
        weight = self.embedding.weight.detach().float().clone()
        cluster_size = self.ema_cluster_size.float().clone()
        restarted = torch.zeros((), dtype=torch.long, device=flat.device)
        if (rank_and_world()[0] == 0 or self._sync_world() == 1) and samples.shape[0] > 0:
            dead = self.recent_counts.float() / self.restart_every < self.dead_code_threshold
            n_dead = int(dead.sum())
            if n_dead > 0:
                gen = self._generator(flat.device, 0)
                fresh = _random_rows(samples, n_dead, gen)
                fresh = fresh + self._noise(samples, fresh.shape, gen)
                weight[dead] = fresh
                cluster_size[dead] = max(self.dead_code_threshold, 1.0)
                restarted.fill_(n_dead)
        self._broadcast(weight, cluster_size, restarted)
        self.recent_counts.zero_()
        self.last_restarted = int(restarted)
        if self.last_restarted > 0:
            self._set_codebook(weight.to(self.embedding.weight.dtype), cluster_size.to(self.ema_cluster_size.dtype))

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        """Accept MONAI ``EMAQuantizer`` checkpoints: fill our extra buffers when they are absent.

        A codebook coming from a checkpoint without ``initialized`` is treated as trained (no data re-init);
        ``num_updates`` restarts from 0.
        """
        if prefix + "embedding.weight" in state_dict:
            if prefix + "initialized" not in state_dict:
                state_dict[prefix + "initialized"] = torch.ones((), dtype=torch.bool)
            if prefix + "num_updates" not in state_dict:
                state_dict[prefix + "num_updates"] = torch.zeros((), dtype=torch.long)
        self._host = None
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class RobustVectorQuantizer(VectorQuantizer):
    """MONAI's ``VectorQuantizer`` wrapper around a :class:`RobustEMAQuantizer`.

    ``forward -> (loss, quantized)`` as in MONAI; unlike MONAI, ``quantize`` only computes indices and never updates
    the codebook, even in training mode. ``perplexity`` holds the last batch's perplexity.

    Args:
        quantizer: the EMA quantizer.
    """

    def __init__(self, quantizer: RobustEMAQuantizer) -> None:
        super().__init__(quantizer=quantizer)
        self.quantizer: RobustEMAQuantizer = quantizer
        self.perplexity = torch.zeros(())

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        quantized, loss, _ = self.forward_with_indices(inputs)
        return loss, quantized

    def forward_with_indices(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize (updating the codebook in training mode) and also return the indices.

        Args:
            inputs: encoder outputs ``[B, C, *spatial]``.

        Returns:
            ``(quantized, loss, encoding_indices)``.
        """
        quantized, loss, encoding_indices = self.quantizer(inputs)
        self.perplexity = self.quantizer.last_perplexity
        return quantized, loss, encoding_indices

    def quantize(self, encodings: torch.Tensor) -> torch.Tensor:
        """Code indices ``[B, *spatial]`` of encoder outputs (no codebook update in any mode).

        Args:
            encodings: encoder outputs ``[B, C, *spatial]``.

        Returns:
            integer indices.
        """
        return self.quantizer._assign(encodings)[1]

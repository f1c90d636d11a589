"""A transformer prior over blocks of codes: long code maps at the cost of short ones.

A transformer over a code map costs O(N^2) in attention and O(N) in everything else for N positions: a 32 x 32 map
(a 64 x 64 slice encoded with one stride-2 level, sharp enough to keep grey/white-matter contrast) is 1,024 tokens,
about seven times the training cost of a 16 x 16 map, too slow for a CPU. :class:`BlockTransformerPrior` factorises
the same distribution over ``b^D``-code blocks (Lee et al., "Autoregressive Image Generation using Residual
Quantization", CVPR 2022, use the same split over code depth; here it is over space):

* a *spatial* :class:`CausalTransformer` runs over the ``N / b^D`` blocks in raster order; its input at block ``i`` is
  the sum of the embeddings of the codes of block ``i - 1`` (a class start token at ``i = 0``), its output ``h_i``
  summarises everything before block ``i``;
* a small *depth* :class:`CausalTransformer` runs inside each block over ``[h_i, e(c_i0), ..., e(c_i(m-2))]`` and
  predicts the block's ``m = b^D`` codes one after the other.

The result is an exact autoregressive model in the order "blocks in raster order, codes inside a block in raster
order" (:meth:`BlockTransformerPrior.generation_order`), so sampling, likelihoods, anomaly maps and healing work
through the common :class:`~brainvq_monai.networks.nets.prior.AutoregressivePrior` contract, and the incremental
decoder (a KV cache over the spatial transformer, the depth transformer re-run over at most ``m`` positions) gives
the same logits as the full forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from brainvq_monai.networks.nets.causal_transformer import CausalTransformer
from brainvq_monai.networks.nets.kv_cache import TransformerKVCacheDecoder
from brainvq_monai.networks.nets.prior import AutoregressivePrior, IncrementalDecoder
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["BlockTransformerPrior", "BlockKVCacheDecoder", "to_blocks", "from_blocks"]


def to_blocks(x: torch.Tensor, block_size: int, spatial_dims: int) -> torch.Tensor:
    """``(B, *S, ...)`` -> ``(B, prod(S / b), b^D, ...)``: blocks in raster order, each flattened in raster order.

    Args:
        x: a tensor whose dims ``1 .. spatial_dims`` are spatial, each divisible by ``block_size``.
        block_size: ``b``.
        spatial_dims: ``D``.

    Returns:
        the blocked tensor (trailing dims after the spatial ones are kept).
    """
    b, d = int(block_size), int(spatial_dims)
    rest = list(x.shape[1 + d :])
    split = [x.shape[0]]
    num_blocks, block_codes = 1, 1
    for i in range(d):
        grid = x.shape[1 + i] // b
        split += [grid, b]
        num_blocks, block_codes = num_blocks * grid, block_codes * b
    n = len(rest)
    perm = [0] + [1 + 2 * i for i in range(d)] + [2 + 2 * i for i in range(d)] + [1 + 2 * d + i for i in range(n)]
    return x.reshape(split + rest).permute(perm).reshape([x.shape[0], num_blocks, block_codes] + rest)


def from_blocks(x: torch.Tensor, block_size: int, spatial_shape: list[int]) -> torch.Tensor:
    """Inverse of :func:`to_blocks`: ``(B, n_blocks, b^D, ...)`` -> ``(B, *S, ...)``.

    Args:
        x: the blocked tensor.
        block_size: ``b``.
        spatial_shape: ``S`` (a list or tuple of ints; a list in TorchScript).

    Returns:
        the tensor in the spatial layout.
    """
    b, d = int(block_size), len(spatial_shape)
    shape = [int(s) for s in spatial_shape]
    rest = list(x.shape[3:])
    n = len(rest)
    perm = [0]
    for i in range(d):
        perm += [1 + i, 1 + d + i]
    perm += [1 + 2 * d + i for i in range(n)]
    split = [x.shape[0]] + [s // b for s in shape] + [b for _ in range(d)] + rest
    return x.reshape(split).permute(perm).reshape([x.shape[0]] + shape + rest)


class BlockTransformerPrior(AutoregressivePrior):
    """Autoregressive prior over ``block_size^D`` blocks of a code map: a spatial and a depth transformer.

    See the module docstring. ``forward`` returns logits over the ``K`` codes at every position, causal in
    :meth:`generation_order`; class conditioning uses a class start token of the spatial transformer.

    Args:
        spatial_dims: 2 or 3.
        num_embeddings: codebook size ``K``.
        spatial_shape: latent shape ``S``; every size must be divisible by ``block_size``.
        num_classes: number of classes, or ``None`` (unconditional).
        block_size: ``b``: blocks of ``b^D`` codes (2: 2 x 2 in 2D, 2 x 2 x 2 in 3D).
        attn_layers_dim: width of both transformers.
        attn_layers_depth: blocks of the spatial transformer.
        attn_layers_heads: attention heads of both transformers.
        depth_layers: blocks of the depth transformer.
        embedding_dropout_rate: dropout on the spatial transformer's input embeddings.
        dropout_rate: residual dropout in both transformers (see :class:`CausalTransformer`).
        use_checkpointing: activation checkpointing of the spatial transformer's blocks.
    """

    def __init__(
        self,
        spatial_dims: int,
        num_embeddings: int,
        spatial_shape: Sequence[int],
        num_classes: int | None = None,
        block_size: int = 2,
        attn_layers_dim: int = 64,
        attn_layers_depth: int = 4,
        attn_layers_heads: int = 4,
        depth_layers: int = 1,
        embedding_dropout_rate: float = 0.0,
        dropout_rate: float = 0.0,
        use_checkpointing: bool = False,
    ) -> None:
        super().__init__(spatial_dims, num_embeddings, num_classes)
        spatial_shape = tuple(int(s) for s in spatial_shape)
        if len(spatial_shape) != spatial_dims or min(spatial_shape) < 1:
            raise BrainVQInputError("spatial_shape", f"expected {spatial_dims} positive sizes, got {spatial_shape}")
        if block_size < 1 or any(s % block_size for s in spatial_shape):
            raise BrainVQInputError(
                "block_size", f"the latent shape {spatial_shape} must be divisible by block_size={block_size}"
            )
        if depth_layers < 1:
            raise BrainVQInputError("depth_layers", f"must be >= 1, got {depth_layers}")
        self.spatial_shape = spatial_shape
        self._spatial_size = list(spatial_shape)  # TorchScript-friendly copies for code_logits
        self._shape_text = ", ".join(str(s) for s in spatial_shape)
        self.block_size = int(block_size)
        self.block_codes = self.block_size**spatial_dims
        self.num_blocks = math.prod(s // self.block_size for s in spatial_shape)
        # the spatial vocabulary: K codes for each position inside a block, then BOS and one start token per class
        self.transformer = CausalTransformer(
            num_tokens=self.block_codes * num_embeddings + 1 + (num_classes or 0),
            max_seq_len=self.num_blocks,
            attn_layers_dim=attn_layers_dim,
            attn_layers_depth=attn_layers_depth,
            attn_layers_heads=attn_layers_heads,
            embedding_dropout_rate=embedding_dropout_rate,
            use_checkpointing=use_checkpointing,
            dropout_rate=dropout_rate,
            with_logits=False,
        )
        # the depth vocabulary: K codes for each of the first m - 1 positions inside a block
        self.depth = CausalTransformer(
            num_tokens=max(self.block_codes - 1, 1) * num_embeddings,
            max_seq_len=self.block_codes,
            attn_layers_dim=attn_layers_dim,
            attn_layers_depth=depth_layers,
            attn_layers_heads=attn_layers_heads,
            dropout_rate=dropout_rate,
            with_logits=False,
        )
        self.head = nn.Sequential(nn.LayerNorm(attn_layers_dim), nn.Linear(attn_layers_dim, num_embeddings))
        self.register_buffer("_offsets", torch.arange(self.block_codes) * num_embeddings, persistent=False)
        self._offsets: torch.Tensor

    @property
    def bos_token(self) -> int:
        """The unconditional start token of the spatial transformer."""
        return self.block_codes * self.num_embeddings

    def start_tokens(self, batch_size: int, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,)`` start tokens: BOS without labels, ``BOS + 1 + c`` for class ``c``."""
        labels = self.check_class_labels(class_labels, batch_size)
        device = self._offsets.device
        if labels is None:
            return torch.full((batch_size,), self.bos_token, dtype=torch.long, device=device)
        return labels.to(device) + self.bos_token + 1

    def generation_order(self, spatial_shape: Sequence[int]) -> torch.Tensor:
        """Blocks in raster order, the codes of a block in raster order: flat row-major indices ``(N,)``.

        Raises:
            BrainVQInputError: if ``spatial_shape`` differs from the latent shape the prior was built for.
        """
        spatial_shape = tuple(int(s) for s in spatial_shape)
        if spatial_shape != self.spatial_shape:
            raise BrainVQInputError(
                "spatial_shape",
                f"this block prior was built for latent shape {self.spatial_shape}, got {spatial_shape}",
            )
        index = torch.arange(math.prod(spatial_shape), device=self._offsets.device).view(1, *spatial_shape)
        return to_blocks(index, self.block_size, self.spatial_dims).reshape(-1)

    def block_embeddings(self, blocks: torch.Tensor) -> torch.Tensor:
        """Spatial-transformer input of whole blocks: the sum of their codes' embeddings.

        Args:
            blocks: ``(B, n, m)`` codes, ``m = block_size^D``.

        Returns:
            ``(B, n, D)``.
        """
        return self.transformer.token_embeddings(blocks + self._offsets).sum(-2)

    def depth_logits(self, hidden: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """Code logits inside blocks from the spatial state and the codes already drawn in each block.

        Args:
            hidden: ``(M, D)`` spatial-transformer outputs (one per block).
            previous: ``(M, j)`` the first ``j`` codes of each block (``0 <= j < m``).

        Returns:
            ``(M, j + 1, K)``: the logits of the block's codes ``0 .. j``.
        """
        j = previous.shape[1]
        tokens = self.depth.token_embeddings(previous + self._offsets[:j])
        seq = torch.cat([hidden[:, None], tokens], dim=1)
        return self.head(self.depth.hidden_states(seq))

    def code_logits(self, codes: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Causal code logits (``forward`` also takes ``(B, 1, *S)``, see :meth:`AutoregressivePrior.forward`).

        Args:
            codes: ``(B, *S)`` long code map, ``S == spatial_shape``.
            class_labels: optional ``(B,)`` class labels (``num_classes`` must be set).

        Returns:
            ``(B, K, *S)`` logits; those at a position depend only on the codes before it in
            :meth:`generation_order` and on the class label.
        """
        if codes.dim() != self.spatial_dims + 1 or list(codes.shape[1:]) != self._spatial_size:
            raise BrainVQInputError(
                "codes",
                f"expected shape (B, {self._shape_text}) or (B, 1, {self._shape_text}), got {list(codes.shape)}",
            )
        if codes.is_floating_point():
            raise BrainVQInputError("codes", f"expected an integer tensor of code indices, got {codes.dtype}")
        if not self.values_in_range(codes, self.num_embeddings):
            raise BrainVQInputError("codes", f"values must lie in [0, {self.num_embeddings - 1}]")
        batch = codes.shape[0]
        blocks = to_blocks(codes.long(), self.block_size, self.spatial_dims)  # (B, n, m)
        start = self.transformer.token_embeddings(self.start_tokens(batch, class_labels).to(codes.device))
        inputs = torch.cat([start[:, None], self.block_embeddings(blocks[:, :-1])], dim=1)
        hidden = self.transformer.hidden_states(inputs)  # (B, n, D): h_i sees blocks < i
        logits = self.depth_logits(hidden.reshape(-1, hidden.shape[-1]), blocks.reshape(-1, self.block_codes)[:, :-1])
        logits = logits.reshape(batch, self.num_blocks, self.block_codes, self.num_embeddings)
        out = from_blocks(logits, self.block_size, self._spatial_size)  # (B, *S, K)
        return out.movedim(-1, 1)

    def incremental_decoder(
        self, batch_size: int, spatial_shape: Sequence[int], class_labels: torch.Tensor | None = None
    ) -> BlockKVCacheDecoder:
        """A decoder with a KV cache over the spatial transformer (see :class:`BlockKVCacheDecoder`).

        Args:
            batch_size: number of maps decoded together.
            spatial_shape: latent shape; must equal the prior's.
            class_labels: optional ``(B,)`` labels (or one label for all).
        """
        return BlockKVCacheDecoder(self, batch_size, spatial_shape, class_labels)


class BlockKVCacheDecoder(IncrementalDecoder):
    """Incremental decoder of a :class:`BlockTransformerPrior`: one spatial step per block, then its codes.

    At the first code of block ``i`` the spatial transformer takes one step through its KV cache (input: the
    embedding of block ``i - 1``, or the start token); every code of the block then re-runs the depth transformer
    over the at most ``m`` positions drawn so far in the block (no cache needed at that length).

    Args:
        prior: the prior (use it in eval mode for sampling).
        batch_size: number of maps decoded together.
        spatial_shape: latent shape.
        class_labels: optional labels.
    """

    def __init__(
        self,
        prior: BlockTransformerPrior,
        batch_size: int,
        spatial_shape: Sequence[int],
        class_labels: torch.Tensor | None = None,
    ) -> None:
        self.prior = prior
        self.order = prior.generation_order(spatial_shape)
        self.batch_size = int(batch_size)
        start = prior.start_tokens(self.batch_size, class_labels)
        self.spatial = TransformerKVCacheDecoder(
            prior.transformer, torch.arange(prior.num_blocks), start_tokens=start, num_embeddings=None
        )
        self._hidden: torch.Tensor | None = None
        self._next_t = 0

    @torch.no_grad()
    def step(self, codes: torch.Tensor, t: int) -> torch.Tensor:
        """Logits ``(B, K)`` of the ``t``-th position in generation order.

        Args:
            codes: ``(B, N)`` flat row-major codes, valid at the first ``t`` generated positions.
            t: step index; ``0`` (re)starts, later steps follow without gaps.
        """
        t = int(t)
        p = self.prior
        if t != 0 and t != self._next_t:
            raise BrainVQInputError("t", f"steps must be consecutive, expected {self._next_t} (or 0), got {t}")
        if not 0 <= t < self.order.numel():
            raise BrainVQInputError("t", f"must lie in [0, {self.order.numel() - 1}], got {t}")
        if codes.shape[0] != self.batch_size:
            raise BrainVQInputError("codes", f"expected batch size {self.batch_size}, got {codes.shape[0]}")
        block, j = divmod(t, p.block_codes)
        codes = codes.to(self.spatial.device).long()
        if j == 0:
            if block == 0:
                x = p.transformer.token_embeddings(self.spatial.start_tokens)
            else:
                prev = codes[:, self.order[(block - 1) * p.block_codes : block * p.block_codes]]
                x = p.block_embeddings(prev[:, None])[:, 0]
            pos = p.transformer.position_embeddings.embedding.weight[block]
            self._hidden = self.spatial.hidden_step((x + pos)[:, None], block)
        assert self._hidden is not None
        drawn = codes[:, self.order[block * p.block_codes : block * p.block_codes + j]]
        logits = p.depth_logits(self._hidden, drawn)[:, -1]
        self._next_t = t + 1
        return logits

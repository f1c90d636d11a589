"""KV-cached incremental decoding over the weights of a MONAI ``DecoderOnlyTransformer``.

MONAI's ``VQVAETransformerInferer.sample`` re-runs the whole prefix for every generated token. This decoder reads the
very same modules of the transformer (no copies) and runs one token per step:

* ``x = token_embeddings(tok) + position_embeddings.embedding.weight[t]`` then ``embedding_dropout``;
* per ``TransformerBlock``: ``x = x + attn(norm1(x))`` with the block's ``SABlock`` projections (``qkv`` when
  ``use_combined_linear`` else ``to_q``/``to_k``/``to_v``, any qkv bias), its ``scale`` and ``num_heads``; the new
  key/value row is written into a preallocated cache ``(B, heads, max_len, head_dim)`` and the query attends to the
  cached prefix with :func:`torch.nn.functional.scaled_dot_product_attention` (the causal mask of the full forward is
  implicit: only positions ``<= t`` exist yet); then ``out_proj`` (when ``include_fc``) and ``drop_output``;
  then ``x = x + mlp(norm2(x))``;
* ``to_logits`` (MONAI's transformer has no final norm).

On CUDA, ``use_cuda_graph=True`` captures one decode step over the full-length cache, with an attention mask hiding
positions ``> t`` so that every step has the same shapes, and replays it per step from static token/position buffers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from monai.networks.nets import DecoderOnlyTransformer
from torch.nn import functional as F

from brainvq_monai.networks.nets.prior import IncrementalDecoder
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["TransformerKVCacheDecoder"]


class TransformerKVCacheDecoder(IncrementalDecoder):
    """Incremental decoder of a MONAI ``DecoderOnlyTransformer`` with a per-layer KV cache.

    Implements the :class:`IncrementalDecoder` contract: ``step(codes, t)`` feeds the start token at ``t == 0`` and
    ``codes[:, order[t - 1]]`` (the previously generated code) otherwise, and returns the logits that the full forward
    gives at sequence position ``t``, restricted to the first ``num_embeddings`` columns.

    Dropout inside the transformer is applied exactly as the modules' training flags say, so decode in ``eval()`` mode
    for sampling (MONAI's ``DecoderOnlyTransformer`` has no attention or MLP dropout; only ``embedding_dropout``).

    Args:
        transformer: the MONAI transformer whose weights are used (without cross-attention).
        sequence_ordering: ``(N,)`` flat row-major positions in generation order.
        start_tokens: ``(B,)`` start tokens (BOS or class start tokens); fixes the batch size.
        num_embeddings: number of leading logit columns to return (the codebook size ``K``); ``None``: all tokens.
        use_cuda_graph: capture and replay one decode step as a CUDA graph (CUDA only; ignored elsewhere, and
            falls back to eager decoding with a warning if the capture fails).
    """

    def __init__(
        self,
        transformer: DecoderOnlyTransformer,
        sequence_ordering: Sequence[int] | torch.Tensor,
        start_tokens: torch.Tensor,
        num_embeddings: int | None = None,
        use_cuda_graph: bool = False,
    ) -> None:
        if getattr(transformer, "with_cross_attention", False):
            raise BrainVQInputError("transformer", "cross-attention is not supported by the cached decoder")
        for i, block in enumerate(transformer.blocks):
            attn = block.attn
            if attn.rel_positional_embedding is not None or attn.attention_dtype is not None:
                raise BrainVQInputError(
                    f"transformer.blocks[{i}].attn", "relative positions / attention_dtype not supported"
                )
        self.transformer = transformer
        self.order = [int(i) for i in torch.as_tensor(sequence_ordering).reshape(-1).tolist()]
        self.max_len = len(self.order)
        if self.max_len > transformer.max_seq_len:
            raise BrainVQInputError(
                "sequence_ordering",
                f"{self.max_len} positions exceed transformer.max_seq_len={transformer.max_seq_len}",
            )
        weight = transformer.position_embeddings.embedding.weight
        self.device, self.dtype = weight.device, weight.dtype
        self.start_tokens = torch.as_tensor(start_tokens, device=self.device).long().reshape(-1)
        self.batch_size = self.start_tokens.shape[0]
        self.num_embeddings = transformer.num_tokens if num_embeddings is None else int(num_embeddings)
        self.caches: list[tuple[torch.Tensor, torch.Tensor]] = []
        for block in transformer.blocks:
            shape = (self.batch_size, block.attn.num_heads, self.max_len, block.attn.dim_head)
            # zeros, not empty: masked (future) entries must stay finite for the CUDA-graph path (0 * NaN = NaN)
            self.caches.append(
                (
                    torch.zeros(shape, device=self.device, dtype=self.dtype),
                    torch.zeros(shape, device=self.device, dtype=self.dtype),
                )
            )
        self.use_cuda_graph = bool(use_cuda_graph) and self.device.type == "cuda"
        self._graph: torch.cuda.CUDAGraph | None = None
        self._next_t = 0

    # ------------------------------------------------------------------ core math (one token, all layers)
    def _qkv(self, attn: torch.nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, 1, D)`` -> q, k, v each ``(B, heads, 1, head_dim)``, exactly as ``SABlock.input_rearrange``."""
        b, n = h.shape[0], h.shape[1]
        heads, dim_head = attn.num_heads, attn.dim_head
        if attn.use_combined_linear:  # "b h (qkv l d) -> qkv b l h d"
            qkv = attn.qkv(h).view(b, n, 3, heads, dim_head).permute(2, 0, 3, 1, 4)
            return qkv[0], qkv[1], qkv[2]
        q = attn.to_q(h).view(b, n, heads, dim_head).transpose(1, 2)  # "b h (l d) -> b l h d"
        k = attn.to_k(h).view(b, n, heads, dim_head).transpose(1, 2)
        v = attn.to_v(h).view(b, n, heads, dim_head).transpose(1, 2)
        return q, k, v

    def _decode(self, token: torch.Tensor, t: int | None, pos: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, num_tokens)`` for one token at sequence position ``t`` (eager) or ``pos`` (graph mode).

        Eager mode (``t`` given) attends to ``cache[:, :, : t + 1]``; graph mode (``pos`` a ``(1,)`` device tensor)
        attends to the full cache with a mask hiding positions ``> pos``, so all shapes are static.
        """
        tr = self.transformer
        pos_weight = tr.position_embeddings.embedding.weight
        pos_emb = pos_weight[t] if t is not None else pos_weight.index_select(0, pos)
        return tr.to_logits(self.hidden_step(tr.token_embeddings(token)[:, None, :] + pos_emb, t, pos))

    def hidden_step(self, x: torch.Tensor, t: int | None, pos: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden state ``(B, D)`` for one embedded input ``x`` ``(B, 1, D)`` at sequence position ``t``.

        ``x`` is the sum of the token and position embeddings (before ``embedding_dropout``); the key/value rows of
        every layer are written into the cache at ``t``. Priors whose inputs are not single tokens (e.g. a whole
        block of codes, :class:`~brainvq_monai.networks.nets.block_prior.BlockTransformerPrior`) embed their own
        inputs and use this for the transformer part.

        Args:
            x: embedded input ``(B, 1, D)``.
            t: sequence position (eager mode), or ``None`` with ``pos`` (graph mode, see :meth:`_decode`).
            pos: ``(1,)`` device tensor of the position in graph mode.

        Returns:
            the hidden state after the last block ``(B, D)`` (no ``to_logits``).
        """
        tr = self.transformer
        mask = None
        if t is None:
            mask = (torch.arange(self.max_len, device=self.device) <= pos).view(1, 1, 1, self.max_len)
        x = tr.embedding_dropout(x)
        for block, (k_cache, v_cache) in zip(tr.blocks, self.caches):
            attn = block.attn
            q, k, v = self._qkv(attn, block.norm1(x))
            if t is not None:
                k_cache[:, :, t] = k[:, :, 0]
                v_cache[:, :, t] = v[:, :, 0]
                keys, values = k_cache[:, :, : t + 1], v_cache[:, :, : t + 1]
            else:
                k_cache.index_copy_(2, pos, k)
                v_cache.index_copy_(2, pos, v)
                keys, values = k_cache, v_cache
            o = F.scaled_dot_product_attention(
                q,
                keys,
                values,
                attn_mask=mask,
                dropout_p=attn.dropout_rate if attn.training else 0.0,
                scale=attn.scale,
            )
            o = o.transpose(1, 2).reshape(x.shape[0], 1, attn.num_heads * attn.dim_head)  # "b l h d -> b h (l d)"
            if attn.include_fc:
                o = attn.out_proj(o)
            x = x + attn.drop_output(o)
            x = x + block.mlp(block.norm2(x))
        return x[:, 0]

    # ------------------------------------------------------------------ CUDA graph
    def _capture(self) -> None:
        self._static_token = self.start_tokens.clone()
        self._static_pos = torch.zeros(1, dtype=torch.long, device=self.device)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up (kernel selection, workspace allocation) outside the capture
                self._decode(self._static_token, None, self._static_pos)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._static_logits = self._decode(self._static_token, None, self._static_pos)
        self._graph = graph

    def _step_graph(self, token: torch.Tensor, t: int) -> torch.Tensor:
        if self._graph is None:
            try:
                self._capture()
            except RuntimeError as err:  # pragma: no cover - depends on the CUDA setup
                warnings.warn(f"CUDA graph capture failed ({err}); using eager cached decoding.", stacklevel=3)
                self.use_cuda_graph = False
                return self._decode(token, t)
        self._static_token.copy_(token)
        self._static_pos.fill_(t)
        self._graph.replay()  # type: ignore[union-attr]
        return self._static_logits.clone()

    # ------------------------------------------------------------------ IncrementalDecoder
    @property
    def cuda_graph_active(self) -> bool:
        """Whether steps are replayed from a captured CUDA graph."""
        return self.use_cuda_graph and self._graph is not None

    @torch.no_grad()
    def step(self, codes: torch.Tensor, t: int) -> torch.Tensor:
        """Logits ``(B, num_embeddings)`` for the ``t``-th position in generation order.

        Args:
            codes: ``(B, N)`` flat row-major codes; ``codes[:, order[t - 1]]`` is read as the previous token.
            t: step index; ``0`` (re)starts a sequence, later steps must follow without gaps.
        """
        t = int(t)
        if t != 0 and t != self._next_t:
            raise BrainVQInputError("t", f"steps must be consecutive, expected {self._next_t} (or 0), got {t}")
        if not 0 <= t < self.max_len:
            raise BrainVQInputError("t", f"must lie in [0, {self.max_len - 1}], got {t}")
        if codes.shape[0] != self.batch_size:
            raise BrainVQInputError("codes", f"expected batch size {self.batch_size}, got {codes.shape[0]}")
        token = self.start_tokens if t == 0 else codes[:, self.order[t - 1]].to(self.device).long()
        logits = self._step_graph(token, t) if self.use_cuda_graph else self._decode(token, t)
        self._next_t = t + 1
        return logits[:, : self.num_embeddings]

"""MONAI's ``DecoderOnlyTransformer`` without its ``n x n`` causal-mask buffers.

MONAI 1.6's :class:`monai.networks.nets.DecoderOnlyTransformer` builds every ``TransformerBlock`` with
``causal=True, sequence_length=max_seq_len``, and each block's ``SABlock`` registers a persistent float32
``causal_mask`` buffer of shape ``(1, 1, n, n)``: at 9,601 tokens and 24 blocks that is 8.8 GB in memory and in every
checkpoint, and without ``use_flash_attention`` the forward also materialises the ``n x n`` attention matrix of every
head. :class:`CausalTransformer` is the same network (same submodules, same state-dict keys and shapes, minus
``*.attn.causal_mask``) whose blocks run :func:`torch.nn.functional.scaled_dot_product_attention` with
``is_causal=True`` (flash / memory-efficient kernels on CUDA, no mask tensor anywhere), with optional activation
checkpointing per block. It is a subclass of ``DecoderOnlyTransformer``, so MONAI's ``VQVAETransformerInferer`` and
:class:`brainvq_monai.networks.nets.kv_cache.TransformerKVCacheDecoder` use it unchanged, and MONAI checkpoints (with
their mask keys) load with ``strict=True``.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.blocks import TransformerBlock
from monai.networks.nets import DecoderOnlyTransformer
from monai.networks.nets.transformer import AbsolutePositionalEmbedding
from torch import nn
from torch.utils.checkpoint import checkpoint

from brainvq_monai.networks._jit import jit_unused
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["CausalTransformer"]

_MASK_SUFFIX = ".attn.causal_mask"


def _drop_causal_masks(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
    """``load_state_dict`` pre-hook: removes MONAI's ``blocks.<i>.attn.causal_mask`` entries under ``prefix``."""
    for key in [k for k in state_dict if k.startswith(prefix + "blocks.") and k.endswith(_MASK_SUFFIX)]:
        del state_dict[key]


class CausalTransformer(DecoderOnlyTransformer):
    """Decoder-only transformer with MONAI's weights layout and mask-free causal attention.

    Identical maths to :class:`monai.networks.nets.DecoderOnlyTransformer` (token + absolute position embeddings,
    embedding dropout, pre-norm ``TransformerBlock`` s with MONAI's ``SABlock`` / ``MLPBlock``, a final linear layer
    to logits, no final norm); ``DecoderOnlyTransformer.__init__`` is not called, so no mask is ever allocated. The
    blocks are MONAI ``TransformerBlock`` s built non-causal with ``use_flash_attention=True``, then switched to
    ``attn.causal = True``: MONAI's ``SABlock`` then calls ``F.scaled_dot_product_attention(..., is_causal=True)``
    (its attention dropout is 0, as in MONAI's transformer).

    Args:
        num_tokens: vocabulary size.
        max_seq_len: maximum sequence length (size of the position embedding; no ``n x n`` buffer depends on it).
        attn_layers_dim: width.
        attn_layers_depth: number of blocks.
        attn_layers_heads: number of attention heads.
        with_cross_attention: must be ``False`` (cross-attention conditioning is not supported).
        embedding_dropout_rate: dropout on the summed token and position embeddings.
        include_fc: whether the attention has an output projection (MONAI's ``include_fc``).
        use_combined_linear: one ``qkv`` projection instead of ``to_q``/``to_k``/``to_v`` (MONAI's default: ``False``).
        use_checkpointing: activation checkpointing of every block in training with gradients enabled
            (``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``): activations of a block are recomputed
            in the backward pass instead of being kept, for roughly one extra forward of compute.
        dropout_rate: residual dropout on each block's attention output and inside its MLP (training only; no
            parameters, so checkpoints are unchanged). MONAI's transformer has no such dropout; ``to_monai`` drops it.
        with_logits: whether ``to_logits`` projects to the vocabulary; ``False`` makes ``forward`` return hidden
            states (for a transformer inside a prior with its own output head; not convertible to MONAI).

    Raises:
        BrainVQInputError: if ``with_cross_attention`` is set, or if the sizes are invalid.
    """

    def __init__(
        self,
        num_tokens: int,
        max_seq_len: int,
        attn_layers_dim: int,
        attn_layers_depth: int,
        attn_layers_heads: int,
        with_cross_attention: bool = False,
        embedding_dropout_rate: float = 0.0,
        include_fc: bool = True,
        use_combined_linear: bool = False,
        use_checkpointing: bool = False,
        dropout_rate: float = 0.0,
        with_logits: bool = True,
    ) -> None:
        if with_cross_attention:
            raise BrainVQInputError(
                "with_cross_attention", "cross-attention is not supported by CausalTransformer; use start tokens"
            )
        if attn_layers_heads < 1 or attn_layers_dim % attn_layers_heads != 0:
            raise BrainVQInputError(
                "attn_layers_heads", f"attn_layers_dim={attn_layers_dim} must be divisible by {attn_layers_heads}"
            )
        if not 0.0 <= dropout_rate < 1.0 or not 0.0 <= embedding_dropout_rate < 1.0:
            raise BrainVQInputError(
                "dropout_rate", f"dropout rates must be in [0, 1), got {dropout_rate}, {embedding_dropout_rate}"
            )
        if min(num_tokens, max_seq_len) < 1 or attn_layers_depth < 0:
            raise BrainVQInputError(
                "CausalTransformer",
                f"num_tokens, max_seq_len must be positive and depth >= 0, got {num_tokens}, {max_seq_len}, "
                f"{attn_layers_depth}",
            )
        nn.Module.__init__(self)  # not DecoderOnlyTransformer.__init__: it would allocate the masks
        self.num_tokens = num_tokens
        self.max_seq_len = max_seq_len
        self.attn_layers_dim = attn_layers_dim
        self.attn_layers_depth = attn_layers_depth
        self.attn_layers_heads = attn_layers_heads
        self.with_cross_attention = False
        self.embedding_dropout_rate = embedding_dropout_rate
        self.include_fc = include_fc
        self.use_combined_linear = use_combined_linear
        self.use_checkpointing = use_checkpointing
        self.dropout_rate = dropout_rate

        # same modules, same creation order (hence the same initial weights for the same seed) as MONAI's
        self.token_embeddings = nn.Embedding(num_tokens, attn_layers_dim)
        self.position_embeddings = AbsolutePositionalEmbedding(max_seq_len=max_seq_len, embedding_dim=attn_layers_dim)
        self.embedding_dropout = nn.Dropout(embedding_dropout_rate)
        self.blocks = nn.ModuleList([self._block() for _ in range(attn_layers_depth)])
        # without logits (a transformer inside another prior, which has its own head): no unused parameters
        self.to_logits = nn.Linear(attn_layers_dim, num_tokens) if with_logits else nn.Identity()
        self.with_logits = with_logits
        self.register_load_state_dict_pre_hook(_drop_causal_masks)

    def _block(self) -> TransformerBlock:
        block = TransformerBlock(
            hidden_size=self.attn_layers_dim,
            mlp_dim=self.attn_layers_dim * 4,
            num_heads=self.attn_layers_heads,
            dropout_rate=0.0,
            qkv_bias=False,
            causal=False,  # no sequence_length, no mask buffer
            with_cross_attention=False,
            include_fc=self.include_fc,
            use_combined_linear=self.use_combined_linear,
            use_flash_attention=True,
        )
        # SABlock's SDPA branch passes ``is_causal=self.causal``; the mask branch (never taken) would need the buffer
        block.attn.causal = True
        # kept for MONAI's state-dict layout but never used without cross-attention: frozen, so that
        # DistributedDataParallel does not wait for their gradients (MONAI's transformer fails under DDP there)
        block.norm_cross_attn.requires_grad_(False)
        block.attn.sequence_length = self.max_seq_len
        if self.dropout_rate > 0:
            # residual dropout (GPT-2 style) on the attention output and in the MLP; parameter-free, so the state dict
            # keeps MONAI's layout. Not MONAI's ``dropout_rate``: its SABlock would also pass it to SDPA, which drops
            # attention weights even in eval mode (MONAI 1.6.1).
            block.attn.drop_output = nn.Dropout(self.dropout_rate)
            block.mlp.drop1 = nn.Dropout(self.dropout_rate)
            block.mlp.drop2 = nn.Dropout(self.dropout_rate)
        return block

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, L, num_tokens)`` for tokens ``x`` ``(B, L)``, ``L <= max_seq_len``; ``context`` is ignored
        (as in MONAI's transformer without cross-attention). Without logits (``with_logits=False``): the hidden
        states ``(B, L, attn_layers_dim)``."""
        logits: torch.Tensor = self.to_logits(self.hidden_states(self.token_embeddings(x)))
        return logits

    def hidden_states(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The last block's output ``(B, L, D)`` for input embeddings ``(B, L, D)`` (position embeddings are added).

        ``forward`` is ``to_logits(hidden_states(token_embeddings(x)))``; priors whose inputs are sums of several
        token embeddings (a block of codes) call this directly.

        Args:
            embeddings: ``(B, L, attn_layers_dim)``, ``L <= max_seq_len``.

        Returns:
            hidden states, before ``to_logits``.
        """
        pos_emb = self.position_embeddings.embedding.weight[: embeddings.shape[1]]
        h = self.embedding_dropout(embeddings + pos_emb)
        if not torch.jit.is_scripting() and self.use_checkpointing and self.training and torch.is_grad_enabled():
            return self._checkpointed_blocks(h)
        for block in self.blocks:
            h = block(h)
        return h

    @jit_unused
    def _checkpointed_blocks(self, h: torch.Tensor) -> torch.Tensor:
        """The blocks with activation checkpointing (training only; TorchScript has no ``torch.utils.checkpoint``)."""
        for block in self.blocks:
            h = checkpoint(block, h, use_reentrant=False)
        return h

    @classmethod
    def from_monai(cls, transformer: DecoderOnlyTransformer, use_checkpointing: bool = False) -> CausalTransformer:
        """A :class:`CausalTransformer` with a copy of the weights of a MONAI ``DecoderOnlyTransformer``.

        The MONAI module is not modified; the new module is on its device and dtype, in its training mode.

        Args:
            transformer: a MONAI transformer without cross-attention (or a :class:`CausalTransformer`, copied).
            use_checkpointing: activation checkpointing of the new module.

        Returns:
            the new transformer.
        """
        if not isinstance(transformer, DecoderOnlyTransformer):
            raise TypeError(f"transformer: expected a monai DecoderOnlyTransformer, got {type(transformer).__name__}")
        if transformer.with_cross_attention:
            raise BrainVQInputError("transformer", "cross-attention conditioning is not supported")
        include_fc, use_combined_linear = True, False
        if len(transformer.blocks):
            attn = transformer.blocks[0].attn
            include_fc, use_combined_linear = bool(attn.include_fc), bool(attn.use_combined_linear)
            if attn.dropout_rate or attn.rel_positional_embedding is not None or attn.attention_dtype is not None:
                raise BrainVQInputError("transformer", "attention dropout / relative positions are not supported")
        param = transformer.to_logits.weight
        out = cls(
            num_tokens=transformer.num_tokens,
            max_seq_len=transformer.max_seq_len,
            attn_layers_dim=transformer.attn_layers_dim,
            attn_layers_depth=len(transformer.blocks),
            attn_layers_heads=transformer.attn_layers_heads,
            embedding_dropout_rate=float(transformer.embedding_dropout.p),
            include_fc=include_fc,
            use_combined_linear=use_combined_linear,
            use_checkpointing=use_checkpointing,
        ).to(device=param.device, dtype=param.dtype)
        out.load_state_dict(transformer.state_dict())
        return out.train(transformer.training)

    def to_monai(self, use_flash_attention: bool = False) -> DecoderOnlyTransformer:
        """A MONAI ``DecoderOnlyTransformer`` with a copy of these weights (and MONAI's ``n x n`` mask buffers).

        The MONAI module is built directly on this module's device (its masks take ``4 * depth * max_seq_len**2``
        bytes there) and cast to this module's dtype; it is in this module's training mode.

        Args:
            use_flash_attention: MONAI's ``use_flash_attention`` of the new module.

        Returns:
            the MONAI transformer.
        """
        if not self.with_logits:
            raise BrainVQInputError("to_monai", "a CausalTransformer without logits has no MONAI equivalent")
        param = self.to_logits.weight
        with torch.device(param.device):
            out = DecoderOnlyTransformer(
                num_tokens=self.num_tokens,
                max_seq_len=self.max_seq_len,
                attn_layers_dim=self.attn_layers_dim,
                attn_layers_depth=self.attn_layers_depth,
                attn_layers_heads=self.attn_layers_heads,
                with_cross_attention=False,
                embedding_dropout_rate=self.embedding_dropout_rate,
                include_fc=self.include_fc,
                use_combined_linear=self.use_combined_linear,
                use_flash_attention=use_flash_attention,
            )
        missing, unexpected = out.load_state_dict(self.state_dict(), strict=False)
        if unexpected or any(not k.endswith(_MASK_SUFFIX) for k in missing):
            raise RuntimeError(f"to_monai: state dict mismatch, missing {missing}, unexpected {unexpected}")
        return out.to(dtype=param.dtype).train(self.training)

    def extra_repr(self) -> str:
        return f"max_seq_len={self.max_seq_len}, use_checkpointing={self.use_checkpointing}, dropout_rate={self.dropout_rate}"

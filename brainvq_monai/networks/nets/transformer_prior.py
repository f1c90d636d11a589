"""Decoder-only transformer prior over VQ-VAE code maps, on MONAI's ``DecoderOnlyTransformer`` weights layout.

The weights live in a :class:`~brainvq_monai.networks.nets.causal_transformer.CausalTransformer`
(``self.transformer``): a subclass of :class:`monai.networks.nets.DecoderOnlyTransformer` with MONAI's modules and
state-dict keys but without MONAI's ``n x n`` float32 causal-mask buffers (causal attention by
``F.scaled_dot_product_attention(is_causal=True)``; optional activation checkpointing per block). A MONAI
``DecoderOnlyTransformer`` checkpoint (mask keys included) loads with ``transformer.load_state_dict`` (strict), an old
``TransformerPrior`` checkpoint with ``transformer.blocks.<i>.attn.causal_mask`` entries loads as is, the prior can
be handed to :class:`monai.inferers.VQVAETransformerInferer`, and ``transformer.to_monai()`` gives MONAI's class back.
Token convention (MONAI's, extended for classes):

* codes ``0 .. K-1`` are the VQ-VAE codebook indices (``K = num_embeddings``);
* ``K`` is the begin-of-sequence (BOS) token of an unconditional sequence (MONAI's starting token);
* ``K + 1 + c`` is the start token of a sequence of class ``c`` (class conditioning by a class-specific start token),
  so ``num_tokens = K + 1 + num_classes``.

The code map ``(B, *S)`` is flattened row-major, permuted by a :class:`monai.utils.Ordering` (raster scan, S-curve
or random; the permutation is a persistent buffer, so a reloaded model keeps a random order), prefixed with the start
token and shifted right by one: the logits at sequence position ``i`` predict the ``i``-th code in generation order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.networks.nets import DecoderOnlyTransformer
from monai.utils import Ordering, OrderingType

from brainvq_monai.networks.nets.causal_transformer import CausalTransformer
from brainvq_monai.networks.nets.kv_cache import TransformerKVCacheDecoder
from brainvq_monai.networks.nets.prior import AutoregressivePrior
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["TransformerPrior", "make_sequence_ordering"]


def make_sequence_ordering(
    ordering_type: str, spatial_shape: Sequence[int], ordering_seed: int | None = None
) -> torch.Tensor:
    """Flat row-major indices of ``spatial_shape`` in generation order, from :class:`monai.utils.Ordering`.

    Args:
        ordering_type: ``"raster_scan"``, ``"s_curve"`` or ``"random"``.
        spatial_shape: latent spatial shape (2 or 3 entries).
        ordering_seed: seed of the ``"random"`` permutation; ``None`` draws from NumPy's global generator. The global
            NumPy state is left untouched when a seed is given.

    Returns:
        ``(N,)`` long tensor, a permutation of ``0 .. N-1``.
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    if ordering_type not in [o.value for o in OrderingType]:
        raise BrainVQInputError(
            "ordering_type", f"must be one of {[o.value for o in OrderingType]}, got {ordering_type!r}"
        )
    dims = (1, *spatial_shape)
    if ordering_type == OrderingType.RANDOM.value and ordering_seed is not None:
        state = np.random.get_state()
        try:
            np.random.seed(int(ordering_seed))
            ordering = Ordering(ordering_type, spatial_dims=len(spatial_shape), dimensions=dims)  # type: ignore
        finally:
            np.random.set_state(state)
    else:
        ordering = Ordering(ordering_type, spatial_dims=len(spatial_shape), dimensions=dims)  # type: ignore
    return torch.as_tensor(np.asarray(ordering.get_sequence_ordering()), dtype=torch.long)


class TransformerPrior(AutoregressivePrior):
    """Autoregressive transformer prior (Tudosiu et al. 2022) over code maps, with a :class:`CausalTransformer`.

    ``forward`` returns logits over the ``K`` codes only: the columns of the transformer's output for the BOS and
    class tokens (indices ``>= K``) are dropped, which is the same distribution MONAI's sampler draws from after
    zeroing the BOS probability (softmax over the first ``K`` logits).

    Args:
        spatial_dims: number of spatial dimensions of the latent (2 or 3).
        num_embeddings: codebook size ``K``.
        spatial_shape: latent spatial shape ``S``; the transformer gets ``max_seq_len = prod(S) + 1``.
        num_classes: number of conditioning classes (class-specific start tokens), or ``None``.
        attn_layers_dim: transformer width.
        attn_layers_depth: number of transformer blocks.
        attn_layers_heads: number of attention heads.
        embedding_dropout_rate: dropout on the summed token and position embeddings.
        ordering_type: ``"raster_scan"``, ``"s_curve"`` or ``"random"`` (see :class:`monai.utils.Ordering`).
        ordering_seed: seed of the ``"random"`` permutation (saved in the state dict as ``sequence_ordering``).
        use_checkpointing: activation checkpointing of every transformer block in training (recomputes a block's
            activations in the backward pass; for long 3D sequences).
        use_cuda_graph: default of :meth:`incremental_decoder`'s ``use_cuda_graph`` (a plain attribute, not saved;
            it is what :func:`brainvq_monai.inferers.sampling.sample_codes` gets on CUDA).
        dropout_rate: residual dropout in every transformer block (see :class:`CausalTransformer`); a regulariser
            for small cohorts, where the prior otherwise memorises the training code maps.
    """

    def __init__(
        self,
        spatial_dims: int,
        num_embeddings: int,
        spatial_shape: Sequence[int],
        num_classes: int | None = None,
        attn_layers_dim: int = 96,
        attn_layers_depth: int = 12,
        attn_layers_heads: int = 8,
        embedding_dropout_rate: float = 0.0,
        ordering_type: str = "raster_scan",
        ordering_seed: int | None = None,
        use_checkpointing: bool = False,
        use_cuda_graph: bool = False,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__(spatial_dims, num_embeddings, num_classes)
        self.use_cuda_graph = use_cuda_graph
        spatial_shape = tuple(int(s) for s in spatial_shape)
        if len(spatial_shape) != spatial_dims or min(spatial_shape) < 1:
            raise BrainVQInputError("spatial_shape", f"expected {spatial_dims} positive sizes, got {spatial_shape}")
        self.spatial_shape = spatial_shape
        self._spatial_size = list(spatial_shape)  # TorchScript-friendly copies for code_logits
        self._shape_text = ", ".join(str(s) for s in spatial_shape)
        self.num_positions = int(np.prod(spatial_shape))
        self.ordering_type = ordering_type
        self.ordering_seed = ordering_seed
        self.register_buffer("sequence_ordering", make_sequence_ordering(ordering_type, spatial_shape, ordering_seed))
        self.sequence_ordering: torch.Tensor
        self.transformer = CausalTransformer(
            num_tokens=self.num_tokens,
            max_seq_len=self.num_positions + 1,
            attn_layers_dim=attn_layers_dim,
            attn_layers_depth=attn_layers_depth,
            attn_layers_heads=attn_layers_heads,
            with_cross_attention=False,
            embedding_dropout_rate=embedding_dropout_rate,
            use_checkpointing=use_checkpointing,
            dropout_rate=dropout_rate,
        )

    #: what ``torch.compile`` compiles (:func:`brainvq_monai.engines.utils.compile_network`): the transformer, not the
    #: input checks and reorderings around it
    compile_submodules: tuple[str, ...] = ("transformer",)

    @property
    def num_tokens(self) -> int:
        """Vocabulary size of the transformer: ``K`` codes, the BOS token and one start token per class."""
        num_classes = self.num_classes
        return self.num_embeddings + 1 + (0 if num_classes is None else num_classes)

    @property
    def bos_token(self) -> int:
        """The unconditional start token ``K`` (MONAI's ``starting_tokens`` value)."""
        return self.num_embeddings

    @classmethod
    def from_monai(
        cls,
        transformer: DecoderOnlyTransformer,
        spatial_shape: Sequence[int],
        ordering_type: str = "raster_scan",
        ordering_seed: int | None = None,
        num_classes: int | None = None,
        sequence_ordering: Ordering | np.ndarray | torch.Tensor | None = None,
    ) -> TransformerPrior:
        """A prior over the weights of an existing transformer.

        A MONAI ``DecoderOnlyTransformer`` is converted with :meth:`CausalTransformer.from_monai` (its weights are
        copied, the MONAI module is left unchanged and no longer needed; its masks are not copied); a
        :class:`CausalTransformer` is used as is (the same module, weights shared).

        Args:
            transformer: a MONAI transformer trained with ``VQVAETransformerInferer`` (``num_tokens = K + 1``) or with
                class start tokens (``num_tokens = K + 1 + num_classes``), or a :class:`CausalTransformer`;
                cross-attention is not supported.
            spatial_shape: latent spatial shape; ``transformer.max_seq_len`` must be at least ``prod(spatial_shape)``.
            ordering_type: ordering type, as in the constructor.
            ordering_seed: seed of a ``"random"`` ordering, as in the constructor.
            num_classes: number of class start tokens in the vocabulary, or ``None``.
            sequence_ordering: the exact :class:`monai.utils.Ordering` (or its ``get_sequence_ordering()`` array)
                used in training; overrides ``ordering_type``/``ordering_seed`` (needed for MONAI random orderings).

        Returns:
            a :class:`TransformerPrior` whose ``transformer`` is ``transformer`` (a :class:`CausalTransformer`) or its
            converted copy (a MONAI ``DecoderOnlyTransformer``), on the transformer's device.
        """
        if not isinstance(transformer, DecoderOnlyTransformer):
            raise TypeError(f"transformer: expected a monai DecoderOnlyTransformer, got {type(transformer).__name__}")
        if transformer.with_cross_attention:
            raise BrainVQInputError(
                "transformer", "cross-attention conditioning is not supported; use class start tokens"
            )
        spatial_shape = tuple(int(s) for s in spatial_shape)
        num_positions = int(np.prod(spatial_shape))
        if transformer.max_seq_len < num_positions:
            raise BrainVQInputError(
                "transformer",
                f"max_seq_len={transformer.max_seq_len} is shorter than the {num_positions} latent "
                f"positions of {spatial_shape}",
            )
        num_embeddings = transformer.num_tokens - 1 - (num_classes or 0)
        prior = cls(
            spatial_dims=len(spatial_shape),
            num_embeddings=num_embeddings,
            spatial_shape=spatial_shape,
            num_classes=num_classes,
            attn_layers_dim=transformer.attn_layers_dim,
            attn_layers_depth=1,  # placeholder, replaced by ``transformer`` below
            attn_layers_heads=transformer.attn_layers_heads,
            ordering_type=ordering_type,
            ordering_seed=ordering_seed,
        )
        if not isinstance(transformer, CausalTransformer):
            transformer = CausalTransformer.from_monai(transformer)
        prior.transformer = transformer
        if sequence_ordering is not None:
            if isinstance(sequence_ordering, Ordering):
                sequence_ordering = sequence_ordering.get_sequence_ordering()
            order = torch.as_tensor(np.asarray(sequence_ordering), dtype=torch.long).reshape(-1)
            prior._check_permutation(order, "sequence_ordering")
            prior.sequence_ordering = order
        param = next(transformer.parameters())
        return prior.to(param.device)

    def _check_permutation(self, order: torch.Tensor, where: str) -> None:
        if order.numel() != self.num_positions or not torch.equal(
            torch.sort(order.cpu()).values, torch.arange(self.num_positions)
        ):
            raise BrainVQInputError(
                f"{where}", f"not a permutation of the {self.num_positions} positions of {self.spatial_shape}"
            )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        key = prefix + "sequence_ordering"
        if key in state_dict:
            self._check_permutation(torch.as_tensor(state_dict[key]).long(), key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def generation_order(self, spatial_shape: Sequence[int]) -> torch.Tensor:
        """The ordering's sequence (flat row-major indices in generation order) for ``spatial_shape``.

        Raises:
            BrainVQInputError: (a ``ValueError``) if ``spatial_shape`` differs from the latent shape the prior was built for.
        """
        spatial_shape = tuple(int(s) for s in spatial_shape)
        if spatial_shape != self.spatial_shape:
            raise BrainVQInputError(
                "spatial_shape",
                f"this transformer prior was built for latent shape {self.spatial_shape}, got {spatial_shape}",
            )
        return self.sequence_ordering

    def start_tokens(self, batch_size: int, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,)`` start tokens: ``K`` without labels, ``K + 1 + c`` for class ``c``.

        With ``num_classes`` set and ``class_labels=None`` the unconditional BOS token ``K`` is used.
        """
        labels = self.check_class_labels(class_labels, batch_size)
        device = self.sequence_ordering.device
        if labels is None:
            return torch.full((batch_size,), self.bos_token, dtype=torch.long, device=device)
        return labels.to(device) + self.num_embeddings + 1

    def sequence_logits(self, codes: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Raw transformer logits ``(B, N, num_tokens)`` in generation order for a code map ``(B, *S)``."""
        if codes.dim() != self.spatial_dims + 1 or list(codes.shape[1:]) != self._spatial_size:
            raise BrainVQInputError(
                "codes",
                f"expected shape (B, {self._shape_text}) or (B, 1, {self._shape_text}), got {list(codes.shape)}",
            )
        if codes.is_floating_point():
            raise BrainVQInputError("codes", f"expected an integer tensor of code indices, got {codes.dtype}")
        batch = codes.shape[0]
        seq = codes.reshape(batch, -1).long()[:, self.sequence_ordering]
        if not self.values_in_range(seq, self.num_embeddings):
            raise BrainVQInputError("codes", f"values must lie in [0, {self.num_embeddings - 1}]")
        start = self.start_tokens(batch, class_labels).to(codes.device)
        tokens = torch.cat([start[:, None], seq[:, :-1]], dim=1)
        return self.transformer(tokens)

    def code_logits(self, codes: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Causal code logits (``forward`` also takes ``(B, 1, *S)``, see :meth:`AutoregressivePrior.forward`).

        Args:
            codes: ``(B, *S)`` long code map, ``S == spatial_shape``.
            class_labels: optional ``(B,)`` class labels (``num_classes`` must be set).

        Returns:
            ``(B, K, *S)`` logits over the codes (BOS/class columns ``>= K`` dropped); the logits at a position depend
            only on the codes that precede it in :meth:`generation_order` and on the class label.
        """
        logits = self.sequence_logits(codes, class_labels)[..., : self.num_embeddings]
        revert = torch.argsort(self.sequence_ordering)
        logits = logits[:, revert]  # back to row-major positions
        return logits.transpose(1, 2).reshape([codes.shape[0], self.num_embeddings] + self._spatial_size)

    def incremental_decoder(
        self,
        batch_size: int,
        spatial_shape: Sequence[int],
        class_labels: torch.Tensor | None = None,
        use_cuda_graph: bool | None = None,
    ) -> TransformerKVCacheDecoder:
        """A KV-cached decoder over ``self.transformer``'s weights (see :class:`TransformerKVCacheDecoder`).

        Args:
            batch_size: number of sequences decoded together.
            spatial_shape: latent shape; must equal ``spatial_shape`` of the prior.
            class_labels: optional ``(B,)`` labels (or one label for all).
            use_cuda_graph: on CUDA, capture one decode step as a CUDA graph and replay it (ignored on CPU);
                ``None`` uses ``self.use_cuda_graph``.
        """
        order = self.generation_order(spatial_shape)
        return TransformerKVCacheDecoder(
            self.transformer,
            sequence_ordering=order,
            start_tokens=self.start_tokens(batch_size, class_labels),
            num_embeddings=self.num_embeddings,
            use_cuda_graph=self.use_cuda_graph if use_cuda_graph is None else use_cuda_graph,
        )

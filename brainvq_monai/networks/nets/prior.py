"""Common interface of the priors over VQ-VAE code maps.

:class:`CodeMapPrior` is what every prior shares (sizes, class conditioning, :meth:`CodeMapPrior.sample_codes`);
:class:`AutoregressivePrior` adds the likelihood contract of the autoregressive priors, and
:class:`~brainvq_monai.networks.nets.dcgan_prior.DCGANPrior` (an adversarial prior) has no likelihood.

Both autoregressive priors (:class:`GatedPixelCNN` and :class:`TransformerPrior`) present the same contract, so one
inferer (:class:`brainvq_monai.inferers.AutoregressivePriorInferer`) samples and scores either:

* ``forward(codes, class_labels)`` maps an integer code map ``(B, *S)`` to causal logits ``(B, K, *S)``:
  the logits at spatial position ``p`` depend only on codes generated before ``p`` in
  :meth:`generation_order` (plus the optional class label). It also takes a channel-first code map ``(B, 1, *S)`` of
  any numeric dtype (the MONAI model zoo's ``verify_net_in_out`` and ``ckpt_export`` feed ``torch.rand(1, 1, *S)``),
  and it scripts with ``torch.jit.script``. Each prior implements :meth:`code_logits` for ``(B, *S)`` codes.
* :meth:`generation_order` gives the flat (row-major) indices of the positions in generation order.
* :meth:`incremental_decoder` returns an :class:`IncrementalDecoder` whose ``step`` yields exactly the same
  logits as ``forward`` would at the ``t``-th generated position, but reuses work across steps (KV cache,
  receptive-field crops, ...). Fast samplers built on it are exact: same seed, same codes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn

from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.state import unwrap_module

__all__ = ["AutoregressivePrior", "CodeMapPrior", "IncrementalDecoder", "require_likelihood"]


class IncrementalDecoder(ABC):
    """Stateful helper that produces next-position logits one generation step at a time."""

    @abstractmethod
    def step(self, codes: torch.Tensor, t: int) -> torch.Tensor:
        """Logits for the ``t``-th position in generation order.

        Args:
            codes: ``(B, N)`` long tensor of flat (row-major) codes; entries at the first ``t`` generated
                positions are valid, the rest are ignored.
            t: the step index, ``0 <= t < N``; steps are called in increasing order without gaps.

        Returns:
            ``(B, K)`` float logits for position ``generation_order()[t]``.
        """


class CodeMapPrior(nn.Module):
    """Base class of every prior over code maps of shape ``(B, *spatial)`` with ``num_embeddings`` symbols.

    Args:
        spatial_dims: number of spatial dimensions of the code map (2 or 3).
        num_embeddings: codebook size ``K`` of the VQ-VAE whose codes are modelled.
        num_classes: number of class labels for conditioning (e.g. 2 for NC/AD), or ``None``.
    """

    #: plain-Python attributes TorchScript does not compile (``build_prior`` records how a prior was built)
    __jit_ignored_attributes__ = ["build_args"]
    #: whether the prior defines a likelihood ``p(codes)`` (NLL, bits/dim, anomaly maps, healing)
    has_likelihood: bool = True

    def __init__(self, spatial_dims: int, num_embeddings: int, num_classes: int | None = None) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims: must be 2 or 3, got {spatial_dims}")
        if num_embeddings < 2:
            raise ValueError(f"num_embeddings: must be >= 2, got {num_embeddings}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes: must be >= 1 or None, got {num_classes}")
        self.spatial_dims = spatial_dims
        self.num_embeddings = num_embeddings
        self.num_classes = num_classes

    def check_class_labels(self, class_labels: torch.Tensor | None, batch_size: int) -> torch.Tensor | None:
        """Validates optional class labels against ``num_classes`` and returns them as a ``(B,)`` long tensor."""
        if class_labels is None:
            return None
        num_classes = self.num_classes
        if num_classes is None:
            raise ValueError("class_labels: given, but this prior was built with num_classes=None")
        labels = torch.as_tensor(class_labels).long().reshape(-1)
        if labels.numel() == 1 and batch_size > 1:
            labels = labels.expand([batch_size])
        if labels.numel() != batch_size:
            raise ValueError(f"class_labels: expected {batch_size} labels, got {labels.numel()}")
        if not self.values_in_range(labels, num_classes):
            raise ValueError(f"class_labels: values must lie in [0, {num_classes - 1}]")
        return labels

    def values_in_range(self, values: torch.Tensor, high: int) -> bool:
        """Whether integer ``values`` lie in ``[0, high)``; ``True`` without looking for CUDA tensors in training mode.

        Reading a CUDA tensor's minimum makes the host wait for the GPU queue, once per training step: in training
        mode on CUDA the check is left to :class:`~brainvq_monai.engines.PriorTrainer`, which checks its whole code
        dataset once when the run starts. Sampling, likelihoods and every CPU call are checked here.

        Args:
            values: integer tensor (codes or class labels).
            high: exclusive upper bound.

        Returns:
            whether every value lies in range (or the check was skipped).
        """
        if values.numel() == 0 or (self.training and values.is_cuda):
            return True
        return bool(values.min() >= 0) and bool(values.max() < high)


class AutoregressivePrior(CodeMapPrior, ABC):
    """Base class of the autoregressive priors: causal logits, a generation order and an exact incremental decoder.

    Args:
        spatial_dims: number of spatial dimensions of the code map (2 or 3).
        num_embeddings: codebook size ``K`` of the VQ-VAE whose codes are modelled.
        num_classes: number of class labels for conditioning (e.g. 2 for NC/AD), or ``None``.
    """

    def forward(self, codes: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Causal logits ``(B, K, *S)`` for a code map: :meth:`code_logits` of :meth:`as_code_map` ``(codes)``.

        Args:
            codes: ``(B, *S)`` integer code indices in ``[0, K)``, or a channel-first ``(B, 1, *S)`` code map of any
                numeric dtype (float values are rounded and clamped to ``[0, K)``), e.g. the ``torch.rand(1, 1, *S)``
                of the MONAI model zoo's ``verify_net_in_out`` and ``ckpt_export``.
            class_labels: optional ``(B,)`` class labels in ``[0, num_classes)`` (``num_classes`` must be set).

        Returns:
            ``(B, K, *S)`` float logits, causal in :meth:`generation_order`.

        Raises:
            BrainVQInputError: (a ``ValueError``) for a code map of the wrong shape or dtype, or codes out of range.
        """
        return self.code_logits(self.as_code_map(codes), class_labels)

    def as_code_map(self, codes: torch.Tensor) -> torch.Tensor:
        """The ``(B, *S)`` code map of :meth:`forward`'s input; the one place where input layouts are normalised.

        A ``(B, *S)`` tensor is returned as it is (the prior checks its shape, dtype and values); a channel-first
        ``(B, 1, *S)`` one loses its channel dimension, float values are rounded and clamped to ``[0, K)``, and the
        result is a long tensor.

        Args:
            codes: ``(B, *S)`` or ``(B, 1, *S)`` tensor (``spatial_dims + 1`` or ``+ 2`` dimensions).

        Returns:
            the ``(B, *S)`` code map.

        Raises:
            BrainVQInputError: for a ``spatial_dims + 2``-dimensional tensor with more than one channel.
        """
        if codes.dim() != self.spatial_dims + 2:
            return codes
        if codes.shape[1] != 1:
            raise BrainVQInputError(
                "codes", f"expected a (B, *S) code map or a (B, 1, *S) one, got shape {list(codes.shape)}"
            )
        codes = codes[:, 0]
        if codes.is_floating_point():
            codes = codes.round().clamp(0, self.num_embeddings - 1)
        return codes.long()

    @abstractmethod
    def code_logits(self, codes: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Causal logits ``(B, K, *S)`` for a ``(B, *S)`` code map (what :meth:`forward` computes).

        Args:
            codes: ``(B, *S)`` integer code indices in ``[0, K)``.
            class_labels: optional ``(B,)`` class labels.

        Returns:
            ``(B, K, *S)`` float logits.
        """

    @abstractmethod
    def generation_order(self, spatial_shape: Sequence[int]) -> torch.Tensor:
        """Flat row-major indices ``(N,)`` of the positions of ``spatial_shape`` in generation order."""

    @abstractmethod
    def incremental_decoder(
        self, batch_size: int, spatial_shape: Sequence[int], class_labels: torch.Tensor | None = None
    ) -> IncrementalDecoder:
        """A fresh :class:`IncrementalDecoder` for sampling ``batch_size`` maps of ``spatial_shape``."""


def require_likelihood(prior: nn.Module, what: str) -> None:
    """Raises a one-line error when ``prior`` (possibly wrapped) has no likelihood, e.g. the DCGAN prior.

    Args:
        prior: a prior (DDP wrappers are looked through).
        what: what needed the likelihood, for the message (e.g. ``"anomaly maps"``).

    Raises:
        BrainVQInputError: the prior defines no likelihood.
    """
    net = unwrap_module(prior)
    if not getattr(net, "has_likelihood", True):
        raise BrainVQInputError(
            "prior",
            f"{what} need a likelihood, and the {type(net).__name__} (an adversarial prior) has none: "
            "use the transformer or pixelcnn prior",
        )

"""Common interface of the autoregressive priors over VQ-VAE code maps.

Both priors (:class:`GatedPixelCNN` and :class:`TransformerPrior`) present the same contract, so one
inferer (:class:`brainvq_monai.inferers.AutoregressivePriorInferer`) samples and scores either:

* ``forward(codes, class_labels)`` maps an integer code map ``(B, *S)`` to causal logits ``(B, K, *S)``:
  the logits at spatial position ``p`` depend only on codes generated before ``p`` in
  :meth:`generation_order` (plus the optional class label).
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

__all__ = ["AutoregressivePrior", "IncrementalDecoder"]


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


class AutoregressivePrior(nn.Module, ABC):
    """Base class of priors over code maps of shape ``(B, *spatial)`` with ``num_embeddings`` symbols.

    Args:
        spatial_dims: number of spatial dimensions of the code map (2 or 3).
        num_embeddings: codebook size ``K`` of the VQ-VAE whose codes are modelled.
        num_classes: number of class labels for conditioning (e.g. 2 for NC/AD), or ``None``.
    """

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
        if self.num_classes is None:
            raise ValueError("class_labels: given, but this prior was built with num_classes=None")
        labels = torch.as_tensor(class_labels).long().reshape(-1)
        if labels.numel() == 1 and batch_size > 1:
            labels = labels.expand(batch_size)
        if labels.numel() != batch_size:
            raise ValueError(f"class_labels: expected {batch_size} labels, got {labels.numel()}")
        if not self.values_in_range(labels, self.num_classes):
            raise ValueError(f"class_labels: values must lie in [0, {self.num_classes - 1}]")
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

    @abstractmethod
    def forward(self, codes: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Causal logits ``(B, K, *S)`` for a code map ``(B, *S)``."""

    @abstractmethod
    def generation_order(self, spatial_shape: Sequence[int]) -> torch.Tensor:
        """Flat row-major indices ``(N,)`` of the positions of ``spatial_shape`` in generation order."""

    @abstractmethod
    def incremental_decoder(
        self, batch_size: int, spatial_shape: Sequence[int], class_labels: torch.Tensor | None = None
    ) -> IncrementalDecoder:
        """A fresh :class:`IncrementalDecoder` for sampling ``batch_size`` maps of ``spatial_shape``."""

"""The VQ-VAE inferer: one forward pass giving what the VQ-VAE engines need.

:class:`VQVAEInferer` is what :class:`~brainvq_monai.engines.VQVAETrainer` and
:class:`~brainvq_monai.engines.VQVAEEvaluator` call for every forward pass (``engine.inferer(images,
engine.network)``, as MONAI's ``SupervisedTrainer`` does): it returns the reconstruction, the quantization loss and
the code indices of one encoder pass with one quantization, so an EMA codebook is updated once per training step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from monai.inferers import Inferer

from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.state import unwrap_module

__all__ = ["VQVAEInferer", "VQVAEOutput"]


class VQVAEOutput(NamedTuple):
    """One VQ-VAE forward pass; unpacks as ``recon, quant_loss, indices = inferer(images, network)``.

    Attributes:
        reconstruction: ``(B, C, *spatial)`` reconstruction.
        quantization_loss: the scalar quantization (commitment) loss.
        indices: ``(B, *latent)`` code indices.
    """

    reconstruction: torch.Tensor
    quantization_loss: torch.Tensor
    indices: torch.Tensor


class VQVAEInferer(Inferer):
    """Runs a VQ-VAE once: ``(reconstruction, quantization_loss, code_indices)``.

    For a :class:`~brainvq_monai.networks.nets.BrainVQVAE` (possibly ``DistributedDataParallel``-wrapped) it calls
    ``network(inputs, return_indices=True)``, through the wrapper's ``forward`` so DDP's gradient hooks see the pass.
    For MONAI's ``VQVAE`` it calls the encoder, the EMA quantizer once and the decoder: MONAI's
    ``VectorQuantizer.forward`` drops the indices and its ``quantize()`` runs the EMA forward again, a second codebook
    update in train mode.

    The inferer neither changes the network's mode nor gradients, precision or memory format: the engines put the
    network in train or eval mode, wrap the call in bf16 autocast (and ``torch.no_grad`` when evaluating) and give it
    channels-last inputs when configured, as MONAI's engines do around ``engine.inferer``::

        inferer = VQVAEInferer()
        recon, quant_loss, indices = inferer(images, vqvae)
        loss = F.l1_loss(recon, images) + quant_loss
    """

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module) -> VQVAEOutput:  # type: ignore[override]
        """One forward pass of ``network`` on ``inputs``.

        Args:
            inputs: ``(B, C, *spatial)`` images.
            network: the VQ-VAE (a ``BrainVQVAE`` or MONAI ``VQVAE``, possibly DDP/``DataParallel``-wrapped).

        Returns:
            a :class:`VQVAEOutput`: the reconstruction, the scalar quantization loss and the ``(B, *latent)`` code
            indices.

        Raises:
            BrainVQInputError: ``network`` is not a VQ-VAE this inferer knows.
        """
        inner = unwrap_module(network)
        if hasattr(inner, "forward_with_indices"):
            return VQVAEOutput(*network(inputs, return_indices=True))
        if not all(hasattr(inner, name) for name in ("encode", "quantizer", "decode")):
            raise BrainVQInputError(
                "network",
                f"VQVAEInferer needs a BrainVQVAE or MONAI VQVAE (encode, quantizer, decode), got {type(inner).__name__}",
            )
        # one call of MONAI's EMA quantizer, which returns all three (one codebook update per step)
        quantized, quant_loss, indices = inner.quantizer.quantizer(inner.encode(inputs))
        return VQVAEOutput(inner.decode(quantized), quant_loss, indices)

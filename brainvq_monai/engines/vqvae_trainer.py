"""Ignite trainer of a VQ-VAE: reconstruction + quantization loss, optional patch-adversarial term."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from torch.optim import Optimizer

from brainvq_monai.engines.trainer import BrainVQTrainer
from brainvq_monai.engines.utils import autocast, prepare_images, to_channels_last
from brainvq_monai.inferers import VQVAEInferer
from brainvq_monai.utils.settings import as_bool

__all__ = ["VQVAETrainer"]


class VQVAETrainer(BrainVQTrainer):
    """Trains a VQ-VAE (e.g. :class:`~brainvq_monai.networks.nets.BrainVQVAE`) with an Ignite engine.

    The forward pass is ``engine.inferer(images, engine.network)``, a
    :class:`~brainvq_monai.inferers.VQVAEInferer` (by default, or a subclass) returning the reconstruction, the
    quantization loss and the code indices; it runs under bf16 autocast when ``amp`` is set, on channels-last inputs
    when ``channels_last`` is. Per iteration: ``loss = reconstruction_loss(recon, image) + quantization_weight * quantization_loss``
    (+ ``adversarial_weight`` times the generator term of a patch discriminator, from ``adversarial_start``), then a
    discriminator step when one is given. Mixed precision is bf16 autocast (no gradient scaler); the codebook itself
    is kept in float32 by the quantizer. ``engine.state.output`` holds ``image``, ``label`` (the input, as target),
    ``pred`` (reconstruction), ``indices`` (code map), ``loss`` and each loss term, for metrics and handlers.

    Args:
        device: device to train on.
        max_epochs: number of epochs.
        train_data_loader: loader of dicts with ``"image"`` (and optionally ``"label"``, ignored here).
        network: the VQ-VAE.
        optimizer: optimizer of the VQ-VAE.
        loss_function: reconstruction loss ``f(recon, image)`` (e.g. ``torch.nn.L1Loss()``).
        quantization_weight: weight of the quantization (commitment) loss.
        grad_clip_norm: clip the gradient norm of the VQ-VAE (and discriminator) to this value; ``None``: no clipping.
        amp: bf16 autocast on the engine's device.
        channels_last: channels-last memory format for the network and inputs (faster convolutions on GPUs).
        discriminator: optional patch discriminator (e.g. ``monai.networks.nets.PatchDiscriminator``).
        discriminator_optimizer: its optimizer (required with a discriminator).
        adversarial_loss: e.g. ``monai.losses.PatchAdversarialLoss(criterion="least_squares")``.
        adversarial_weight: weight of the generator's adversarial term.
        adversarial_start: first iteration at which the adversarial terms are used (warm-up without them).
        prepare_batch: batch parser returning ``(images, labels)``.
        kwargs: further arguments of :class:`~brainvq_monai.engines.trainer.BrainVQTrainer` and MONAI's
            ``SupervisedTrainer`` (``inferer``: a :class:`~brainvq_monai.inferers.VQVAEInferer`, built when not
            given; ``train_handlers``, ``key_train_metric``, ``epoch_length``, ...).

    Raises:
        ValueError: a discriminator without its optimizer or adversarial loss.
        BrainVQInputError: an ``inferer`` that is not a :class:`~brainvq_monai.inferers.VQVAEInferer`.
    """

    inferer_class = VQVAEInferer

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: Optimizer,
        loss_function: Callable | None = None,
        quantization_weight: float = 1.0,
        grad_clip_norm: float | None = None,
        amp: bool = False,
        channels_last: bool = False,
        discriminator: torch.nn.Module | None = None,
        discriminator_optimizer: Optimizer | None = None,
        adversarial_loss: Callable | None = None,
        adversarial_weight: float = 0.0,
        adversarial_start: int = 0,
        prepare_batch: Callable = prepare_images,
        **kwargs: Any,
    ) -> None:
        channels_last = as_bool(channels_last, "channels_last")
        if discriminator is not None and (discriminator_optimizer is None or adversarial_loss is None):
            raise ValueError("discriminator: needs discriminator_optimizer and adversarial_loss as well")
        super().__init__(
            device,
            max_epochs,
            train_data_loader,
            to_channels_last(network, channels_last),
            optimizer,
            loss_function=loss_function if loss_function is not None else torch.nn.L1Loss(),
            grad_clip_norm=grad_clip_norm,
            amp=amp,
            prepare_batch=prepare_batch,
            **kwargs,
        )
        self.channels_last = channels_last
        self.quantization_weight = quantization_weight
        self.discriminator = to_channels_last(discriminator, channels_last) if discriminator is not None else None
        self.discriminator_optimizer = discriminator_optimizer
        self.adversarial_loss = adversarial_loss
        self.adversarial_weight = adversarial_weight
        self.adversarial_start = adversarial_start

    def _iteration(self, engine: VQVAETrainer, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images, _ = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        images = to_channels_last(torch.as_tensor(images), engine.channels_last)
        use_adv = engine.discriminator is not None and engine.state.iteration > engine.adversarial_start
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with autocast(engine.state.device, engine.use_amp):
            recon, quant_loss, indices = engine.inferer(images, engine.network)
            engine.state.output = {Keys.IMAGE: images, Keys.LABEL: images, Keys.PRED: recon, "indices": indices}
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            recon_loss = engine.loss_function(recon.float(), images.float()).mean()
            loss = recon_loss + engine.quantization_weight * quant_loss.float()
            out = {"recon_loss": recon_loss.detach(), "quant_loss": quant_loss.detach().float()}
            if use_adv:
                logits_fake = engine.discriminator(recon.contiguous())[-1]
                gen_loss = engine.adversarial_loss(logits_fake, target_is_real=True, for_discriminator=False)
                loss = loss + engine.adversarial_weight * gen_loss.float()
                out["generator_loss"] = gen_loss.detach().float()
        engine.state.output[Keys.LOSS] = loss
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.backward_and_step(loss, engine.network, engine.optimizer)
        if use_adv:
            out["discriminator_loss"] = engine._discriminator_step(images, recon.detach())
        engine.state.output.update(out)
        engine.state.output[Keys.LOSS] = loss.detach()
        engine.state.output[Keys.PRED] = recon.detach()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def _discriminator_step(self, images: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        assert self.discriminator is not None and self.discriminator_optimizer is not None
        self.discriminator.train()
        self.discriminator_optimizer.zero_grad(set_to_none=self.optim_set_to_none)
        with autocast(self.state.device, self.use_amp):
            fake = self.adversarial_loss(self.discriminator(recon)[-1], target_is_real=False, for_discriminator=True)
            real = self.adversarial_loss(self.discriminator(images)[-1], target_is_real=True, for_discriminator=True)
            d_loss = self.adversarial_weight * 0.5 * (fake.float() + real.float())
        self.backward_and_step(d_loss, self.discriminator, self.discriminator_optimizer)
        return d_loss.detach()

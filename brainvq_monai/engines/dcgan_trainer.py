"""Ignite trainer of the DCGAN prior on cached VQ-VAE code maps: alternating discriminator and generator steps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from torch.optim import Optimizer

from brainvq_monai.engines.prior_trainer import check_code_dataset
from brainvq_monai.engines.trainer import BrainVQTrainer
from brainvq_monai.engines.utils import autocast, prepare_codes, unwrap
from brainvq_monai.inferers import AutoregressivePriorInferer
from brainvq_monai.losses import LogisticAdversarialLoss
from brainvq_monai.networks.nets import DCGANPrior, codebook_embeddings
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["DCGANTrainer"]


class DCGANTrainer(BrainVQTrainer):
    """Trains a :class:`~brainvq_monai.networks.nets.DCGANPrior` adversarially on real (encoded) code maps.

    Each iteration, on a batch of cached code maps ``{"codes", "label"}``:

    1. ``d_steps`` discriminator steps: real maps are embedded with the VQ-VAE's codebook, fake maps are the
       generator's logits (``engine.inferer(noise, engine.network, labels)``, without gradients) through
       straight-through Gumbel-softmax into the same codebook; ``loss_function(real, True) + loss_function(fake,
       False)``, halved, updates the discriminator only.
    2. one generator step on fresh noise: ``loss_function(D(fake), True)`` (non-saturating), with the
       discriminator's parameters frozen, plus the mode-seeking term (``diversity_weight``), updates the generator
       only; then the generator's weight average moves.

    Both networks live in the one prior module and share one optimizer (two steps per iteration: each step sees only
    the gradients of its own network, the other's are ``None`` and skipped), so checkpointing, resuming, learning-rate
    schedules and export work as for the other priors. ``engine.state.output`` holds ``loss`` (the generator's loss:
    ``g_loss`` + ``mode_seeking_loss``), ``g_loss`` (adversarial), ``mode_seeking_loss``, ``d_loss``, and ``d_real`` / ``d_fake``: the discriminator's mean probability that
    real and generated maps are real (logged to TensorBoard with the losses).

    Args:
        device: device to train on.
        max_epochs: number of epochs.
        train_data_loader: loader of cached code maps (:func:`brainvq_monai.data.codes_dataloader`).
        network: the :class:`~brainvq_monai.networks.nets.DCGANPrior`.
        optimizer: one optimizer over the prior's parameters (DCGAN: Adam with ``betas=(0.5, 0.999)``).
        autoencoder: the VQ-VAE whose codes are modelled; its codebook is copied into the prior when training starts
            (``None``: the prior's codebook must already be set, e.g. restored from a checkpoint).
        loss_function: adversarial loss, called ``(logits, target_is_real, for_discriminator)``; default
            :class:`~brainvq_monai.losses.LogisticAdversarialLoss` (the DCGAN loss, stable on raw logits; MONAI's
            ``PatchAdversarialLoss`` has the same signature).
        d_steps: discriminator steps per generator step.
        diversity_weight: weight of the mode-seeking term (Mao et al. 2019, MSGAN) added to the generator's loss:
            ``weight / (mean |e(z1) - e(z2)| / mean |z1 - z2| + 1e-5)`` over pairs of maps of the same class from
            different noise (``e``: the expected code embeddings), which penalises a generator that ignores its noise
            (mode collapse, the failure of a GAN on a small cohort); ``0``: off. On the demo cohort's codes 0 gave one
            brain per class, 1.0 (the paper's) diverse non-brain shapes after 1,500 steps, 0.2 diverse brains.
        grad_clip_norm: clip each network's gradient norm to this value; ``None``: no clipping.
        amp: bf16 autocast on the engine's device (losses in float32).
        prepare_batch: batch parser returning ``(codes, labels)``.
        kwargs: further arguments of :class:`~brainvq_monai.engines.trainer.BrainVQTrainer` (``inferer``: an
            :class:`~brainvq_monai.inferers.AutoregressivePriorInferer`, built when not given).

    Raises:
        BrainVQInputError: a network that is not a DCGAN prior (or is wrapped for multi-GPU training, not supported),
            a wrong inferer, ``d_steps < 1``, no codebook, or cached codes or labels out of the prior's range.
    """

    inferer_class = AutoregressivePriorInferer
    #: scalar outputs besides the ``*loss`` entries that :class:`~brainvq_monai.handlers.LossTensorBoardHandler` logs
    logged_scalars = ("d_real", "d_fake")

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: Optimizer,
        autoencoder: torch.nn.Module | None = None,
        loss_function: Callable | None = None,
        d_steps: int = 1,
        diversity_weight: float = 0.2,
        grad_clip_norm: float | None = None,
        amp: bool = False,
        prepare_batch: Callable = prepare_codes,
        **kwargs: Any,
    ) -> None:
        if unwrap(network) is not network:
            raise BrainVQInputError("network", "multi-GPU (DDP) training of the DCGAN prior is not supported")
        if not isinstance(network, DCGANPrior):
            raise BrainVQInputError("network", f"DCGANTrainer trains a DCGANPrior, got {type(network).__name__}")
        if int(d_steps) < 1:
            raise BrainVQInputError("d_steps", f"must be >= 1, got {d_steps}")
        if float(diversity_weight) < 0:
            raise BrainVQInputError("diversity_weight", f"must be >= 0, got {diversity_weight}")
        super().__init__(
            device,
            max_epochs,
            train_data_loader,
            network,
            optimizer,
            loss_function=loss_function or LogisticAdversarialLoss(),
            grad_clip_norm=grad_clip_norm,
            amp=amp,
            prepare_batch=prepare_batch,
            **kwargs,
        )
        self.d_steps = int(d_steps)
        self.diversity_weight = float(diversity_weight)
        if autoencoder is not None:
            network.set_codebook(codebook_embeddings(autoencoder))
        elif not bool(network.codebook.abs().sum() > 0):
            raise BrainVQInputError("autoencoder", "the DCGAN prior needs the VQ-VAE's codebook: pass the autoencoder")
        check_code_dataset(getattr(train_data_loader, "dataset", None), network)

    def _adversarial(self, logits: torch.Tensor, real: bool, for_discriminator: bool) -> torch.Tensor:
        return self.loss_function(logits.float(), target_is_real=real, for_discriminator=for_discriminator)

    def _discriminator_step(self, real: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        prior: DCGANPrior = self.network
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.state.device, self.use_amp):
            with torch.no_grad():
                fake_logits = self.inferer(prior.noise(real.shape[0]), prior, labels)
            d_real = prior.discriminate(real, labels)
            d_fake = prior.discriminate(prior.embed_logits(fake_logits), labels)
        d_loss = (self._adversarial(d_real, True, True) + self._adversarial(d_fake, False, True)) / 2
        self.backward_and_step(d_loss, prior.discriminator, self.optimizer)
        return (
            d_loss.detach(),
            torch.sigmoid(d_real.detach().float()).mean(),
            torch.sigmoid(d_fake.detach().float()).mean(),
        )

    def _mode_seeking(self, logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``diversity_weight / (output distance / noise distance)`` between the two halves of the batch."""
        half = noise.shape[0] // 2
        expected = torch.einsum("bk...,kd->bd...", torch.softmax(logits.float(), 1), self.network.codebook)
        out_dist = (expected[:half] - expected[half : 2 * half]).abs().mean()
        noise_dist = (noise[:half] - noise[half : 2 * half]).abs().mean()
        return self.diversity_weight / (out_dist / noise_dist + 1e-5)

    def _generator_step(self, batch_size: int, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        prior: DCGANPrior = self.network
        self.optimizer.zero_grad(set_to_none=True)
        prior.discriminator.requires_grad_(False)
        seek = self.diversity_weight > 0 and batch_size > 1
        if seek and labels is not None:  # pairs of the same class: the second half repeats the first half's labels
            half = batch_size // 2
            labels = torch.cat([labels[:half], labels[:half], labels[2 * half :]])
        try:
            noise = prior.noise(batch_size)
            with autocast(self.state.device, self.use_amp):
                logits = self.inferer(noise, prior, labels)
                score = prior.discriminate(prior.embed_logits(logits), labels)
            g_loss = self._adversarial(score, True, False)
            diversity = self._mode_seeking(logits, noise) if seek else g_loss.new_zeros(())
            self.state.output[Keys.LOSS] = g_loss + diversity
            self.fire_event(IterationEvents.LOSS_COMPLETED)
            self.backward_and_step(g_loss + diversity, prior.generator, self.optimizer)
        finally:
            prior.discriminator.requires_grad_(True)
        prior.update_ema()
        return g_loss.detach(), diversity.detach()

    def _iteration(self, engine: DCGANTrainer, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        codes, labels = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        prior: DCGANPrior = engine.network
        labels = labels if prior.num_classes else None
        prior.train()
        real = prior.embed_codes(codes)
        for _ in range(engine.d_steps):
            d_loss, d_real, d_fake = engine._discriminator_step(real, labels)
        engine.state.output = {Keys.IMAGE: codes, Keys.LABEL: labels}
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        g_loss, diversity = engine._generator_step(codes.shape[0], labels)
        engine.state.output.update(
            {
                Keys.LOSS: g_loss + diversity,
                "g_loss": g_loss,
                "mode_seeking_loss": diversity,
                "d_loss": d_loss,
                "d_real": d_real,
                "d_fake": d_fake,
            }
        )
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

"""DCGAN prior over VQ-VAE code maps: a generator of whole code maps in one forward pass, and its discriminator.

The VQ-VAE + DCGAN approach of one of the reports this project grew from, made trainable end to end on discrete codes:

* :class:`CodeMapGenerator` maps noise (and a class label) to per-position logits over the ``K`` codes,
  ``(B, K, *latent)``: a linear projection to a small grid, then ``len(channels) - 1`` blocks of nearest upsampling,
  convolution, batch norm and ReLU, cropped to the latent shape (any size, not only powers of two).
* In training the logits become code maps by straight-through Gumbel-softmax (hard one-hot forward, soft gradients)
  and then code *embeddings* through the VQ-VAE's own codebook (:attr:`DCGANPrior.codebook`), so the discriminator
  compares generated and encoded maps in the space the decoder reads, and the generator gets gradients through the
  discrete choice.
* :class:`CodeMapDiscriminator` scores code-embedding maps: spectrally normalised strided convolutions with leaky
  ReLU, a minibatch standard-deviation channel (a cheap guard against mode collapse on small cohorts), global sum
  pooling and, when conditional, a projection term ``<embed(y), h>`` (Miyato & Koyama 2018).
* An exponential moving average of the generator's weights (:attr:`DCGANPrior.generator_ema`) is what samples,
  once it has been updated (it smooths the oscillation of adversarial training).

Sampling draws every position independently from ``softmax(logits / temperature)`` given one noise draw: one
forward pass per batch of maps, where the autoregressive priors need one step per code. The prior has no
likelihood (:attr:`DCGANPrior.has_likelihood` is ``False``): NLL, bits/dim, anomaly maps and healing need the
transformer or the PixelCNN.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from monai.networks.layers import Conv
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from brainvq_monai.networks.nets.prior import CodeMapPrior
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["CodeMapDiscriminator", "CodeMapGenerator", "DCGANPrior"]


def _check_channels(channels: Sequence[int], name: str) -> tuple[int, ...]:
    channels = tuple(int(c) for c in channels)
    if not channels or min(channels) < 1:
        raise BrainVQInputError(name, f"must be a non-empty list of positive channel counts, got {list(channels)}")
    return channels


class CodeMapGenerator(nn.Module):
    """Noise (and class label) -> per-position code logits ``(B, K, *latent_shape)``.

    Args:
        spatial_dims: 2 or 3.
        num_embeddings: codebook size ``K``.
        latent_shape: spatial shape of the generated code maps.
        num_classes: number of classes, or ``None`` (unconditional).
        noise_dim: size of the noise vector.
        channels: feature channels from the coarsest grid to the finest; ``len(channels) - 1`` upsampling steps
            (the first grid is ``ceil(latent / 2^(len(channels) - 1))``).
    """

    def __init__(
        self,
        spatial_dims: int,
        num_embeddings: int,
        latent_shape: Sequence[int],
        num_classes: int | None = None,
        noise_dim: int = 64,
        channels: Sequence[int] = (128, 64, 32),
    ) -> None:
        super().__init__()
        channels = _check_channels(channels, "dcgan#generator_channels")
        if int(noise_dim) < 1:
            raise BrainVQInputError("dcgan#noise_dim", f"must be >= 1, got {noise_dim}")
        self.latent_shape: list[int] = [int(s) for s in latent_shape]
        steps = len(channels) - 1
        self.base_shape: list[int] = [math.ceil(s / 2**steps) for s in self.latent_shape]
        self.noise_dim = int(noise_dim)
        conv = Conv[Conv.CONV, spatial_dims]
        norm = nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d
        self.class_embedding = nn.Embedding(num_classes, self.noise_dim) if num_classes else None
        in_features = self.noise_dim * (2 if num_classes else 1)
        self.project = nn.Linear(in_features, channels[0] * math.prod(self.base_shape))
        self.project_norm = norm(channels[0])
        blocks = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                conv(c_in, c_out, 3, padding=1, bias=False),
                norm(c_out),
                nn.ReLU(inplace=True),
            ]
        self.blocks = nn.Sequential(*blocks)
        self.head = conv(channels[-1], num_embeddings, 3, padding=1)

    def forward(self, noise: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Code logits for a batch of noise vectors.

        Args:
            noise: ``(B, noise_dim)`` noise.
            class_labels: ``(B,)`` class labels (conditional generators; ``None`` uses the mean class embedding).

        Returns:
            ``(B, K, *latent_shape)`` logits.
        """
        x = noise
        if self.class_embedding is not None:
            if class_labels is None:  # no class given: the mean class embedding (the MONAI zoo's tools pass no labels)
                embedding = self.class_embedding.weight.mean(0, keepdim=True).expand(x.shape[0], -1)
            else:
                embedding = self.class_embedding(class_labels)
            x = torch.cat([x, embedding], dim=1)
        x = self.project(x).reshape([x.shape[0], -1] + self.base_shape)
        x = self.blocks(F.relu(self.project_norm(x)))
        for dim, size in enumerate(self.latent_shape):  # crop the upsampled grid to the code map
            x = x.narrow(2 + dim, 0, size)
        return self.head(x)


class _MinibatchStd(nn.Module):
    """Appends one channel: the mean over features of the standard deviation across the batch (Karras et al.)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = x.float().std(dim=0, unbiased=False).mean() if x.shape[0] > 1 else x.new_zeros(())
        return torch.cat([x, std.to(x.dtype).expand(x.shape[0], 1, *x.shape[2:])], dim=1)


class CodeMapDiscriminator(nn.Module):
    """Scores code-embedding maps ``(B, D, *latent)``: real (encoded) vs generated, one logit per map.

    Args:
        spatial_dims: 2 or 3.
        embedding_dim: channels ``D`` of the code embeddings (the VQ-VAE's ``embedding_dim``).
        num_classes: number of classes for the projection term, or ``None``.
        channels: feature channels; the first convolution keeps the size, each further one (3-wide, stride 2) halves
            it, rounding up, so any code map size works.
        minibatch_std: append the minibatch standard-deviation channel before the last convolution.
    """

    def __init__(
        self,
        spatial_dims: int,
        embedding_dim: int,
        num_classes: int | None = None,
        channels: Sequence[int] = (32, 64, 128),
        minibatch_std: bool = True,
    ) -> None:
        super().__init__()
        channels = _check_channels(channels, "dcgan#discriminator_channels")
        conv = Conv[Conv.CONV, spatial_dims]
        layers: list[nn.Module] = [spectral_norm(conv(int(embedding_dim), channels[0], 3, padding=1))]
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [spectral_norm(conv(c_in, c_out, 3, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
        if minibatch_std:
            layers.append(_MinibatchStd())
        last = channels[-1] + (1 if minibatch_std else 0)
        layers += [spectral_norm(conv(last, channels[-1], 3, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
        self.features = nn.Sequential(*layers)
        self.out = spectral_norm(nn.Linear(channels[-1], 1))
        self.class_projection = spectral_norm(nn.Embedding(num_classes, channels[-1])) if num_classes else None

    def forward(self, embeddings: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """One logit per map (higher: more real).

        Args:
            embeddings: ``(B, D, *latent)`` code embeddings.
            class_labels: ``(B,)`` labels (conditional discriminators only).

        Returns:
            ``(B,)`` logits.
        """
        h = self.features(embeddings).flatten(2).sum(-1)
        logit = self.out(h).squeeze(1)
        if self.class_projection is not None and class_labels is not None:
            logit = logit + (self.class_projection(class_labels) * h).sum(1)
        return logit


class DCGANPrior(CodeMapPrior):
    """A DCGAN over code maps: generator, discriminator, the VQ-VAE's codebook and an EMA generator in one module.

    One module (one state dict, one checkpoint, one optimizer with both networks' parameters) so the bundle's
    checkpointing, resuming and export treat it like the other priors; :class:`~brainvq_monai.engines.DCGANTrainer`
    alternates the discriminator and generator steps. Calling the module runs the generator (what
    :class:`~brainvq_monai.inferers.AutoregressivePriorInferer` calls): noise ``(B, noise_dim)`` -> logits.

    Args:
        spatial_dims: 2 or 3.
        num_embeddings: codebook size ``K``.
        latent_shape: spatial shape of the code maps.
        num_classes: number of classes (AD/NC: 2), or ``None``.
        embedding_dim: channels ``D`` of the VQ-VAE's codebook (the discriminator's input).
        noise_dim: size of the generator's noise vector.
        generator_channels: generator channels, coarsest to finest (see :class:`CodeMapGenerator`).
        discriminator_channels: discriminator channels (see :class:`CodeMapDiscriminator`).
        minibatch_std: the discriminator's minibatch standard-deviation channel.
        gumbel_tau: temperature of the straight-through Gumbel-softmax in training.
        ema_decay: decay of the generator's weight average (warmed up as ``min(decay, (1 + n) / (10 + n))`` over
            its ``n`` updates); ``None`` or ``0``: no average, the generator samples.
    """

    has_likelihood = False

    def __init__(
        self,
        spatial_dims: int,
        num_embeddings: int,
        latent_shape: Sequence[int],
        num_classes: int | None = None,
        embedding_dim: int = 64,
        noise_dim: int = 64,
        generator_channels: Sequence[int] = (128, 64, 32),
        discriminator_channels: Sequence[int] = (32, 64, 128),
        minibatch_std: bool = True,
        gumbel_tau: float = 1.0,
        ema_decay: float | None = 0.999,
    ) -> None:
        super().__init__(spatial_dims, num_embeddings, num_classes)
        if len(latent_shape) != spatial_dims:
            raise BrainVQInputError("latent_shape", f"expected {spatial_dims} sizes, got {list(latent_shape)}")
        if float(gumbel_tau) <= 0:
            raise BrainVQInputError("dcgan#gumbel_tau", f"must be > 0, got {gumbel_tau}")
        if ema_decay is not None and not 0 <= float(ema_decay) < 1:
            raise BrainVQInputError("dcgan#ema_decay", f"must be in [0, 1) or null, got {ema_decay}")
        self.spatial_shape = tuple(int(s) for s in latent_shape)
        self.embedding_dim = int(embedding_dim)
        self.noise_dim = int(noise_dim)
        self.gumbel_tau = float(gumbel_tau)
        self.ema_decay = float(ema_decay or 0.0)
        self.generator = CodeMapGenerator(
            spatial_dims, num_embeddings, self.spatial_shape, num_classes, noise_dim, generator_channels
        )
        self.discriminator = CodeMapDiscriminator(
            spatial_dims, embedding_dim, num_classes, discriminator_channels, minibatch_std
        )
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if self.ema_decay else None
        self.register_buffer("codebook", torch.zeros(num_embeddings, self.embedding_dim))
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ generator
    def forward(self, noise: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Code logits ``(B, K, *latent)`` of the (trained, not averaged) generator.

        Args:
            noise: ``(B, noise_dim)`` noise.
            class_labels: ``(B,)`` labels (conditional priors).

        Returns:
            ``(B, K, *latent)`` logits.
        """
        labels = self.check_class_labels(class_labels, noise.shape[0])
        return self.generator(noise, labels)

    def sampling_generator(self) -> nn.Module:
        """The generator that samples: the weight average once it has been updated, else the generator itself."""
        if self.generator_ema is not None and int(self.ema_updates) > 0:
            return self.generator_ema
        return self.generator

    def noise(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal noise ``(B, noise_dim)`` on the prior's device.

        Args:
            batch_size: number of noise vectors.
            generator: random generator on the prior's device (reproducible draws).

        Returns:
            the noise.
        """
        device = self.codebook.device
        return torch.randn(batch_size, self.noise_dim, device=device, generator=generator)

    @torch.no_grad()
    def sample_logits(
        self,
        num_samples: int,
        class_labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Logits of ``num_samples`` code maps from fresh noise, by the sampling generator (see
        :meth:`sampling_generator`), in eval mode.

        Args:
            num_samples: number of maps.
            class_labels: ``(num_samples,)`` labels or one label for all (conditional priors).
            generator: random generator on the prior's device.

        Returns:
            ``(num_samples, K, *latent)`` float logits.
        """
        labels = self.check_class_labels(class_labels, num_samples)
        net = self.sampling_generator()
        was_training = net.training
        net.eval()
        try:
            return net(self.noise(num_samples, generator), labels).float()
        finally:
            net.train(was_training)

    # ------------------------------------------------------------------ training pieces
    def set_codebook(self, codebook: torch.Tensor) -> None:
        """Copies the VQ-VAE's ``(K, D)`` codebook, standardised, into :attr:`codebook` (the discriminator's table).

        Each of the ``D`` channels is centred and scaled to unit standard deviation over the ``K`` codes, so the
        discriminator's inputs have the same scale whatever the VQ-VAE's codebook norms (large inputs make its logits
        saturate at once). The map is the same for real and generated maps, so nothing is lost.

        Args:
            codebook: the VQ-VAE's codebook embeddings (e.g. :func:`~brainvq_monai.networks.nets.codebook_embeddings`).

        Raises:
            BrainVQInputError: the codebook's shape is not ``(num_embeddings, embedding_dim)``.
        """
        if tuple(codebook.shape) != tuple(self.codebook.shape):
            raise BrainVQInputError(
                "autoencoder",
                f"its codebook has shape {list(codebook.shape)}, the DCGAN prior expects "
                f"[{self.num_embeddings}, {self.embedding_dim}] (num_embeddings, embedding_dim)",
            )
        table = codebook.detach().float()
        table = (table - table.mean(0)) / table.std(0).clamp_min(1e-6)
        self.codebook.copy_(table.to(self.codebook))

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Code embeddings ``(B, D, *latent)`` of integer code maps ``(B, *latent)`` (real maps for the discriminator).

        Args:
            codes: ``(B, *latent)`` long codes.

        Returns:
            ``(B, D, *latent)`` embeddings.
        """
        return F.embedding(codes, self.codebook).movedim(-1, 1)

    def embed_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Straight-through Gumbel-softmax code embeddings of generated logits (hard forward, soft gradient).

        Args:
            logits: ``(B, K, *latent)`` generator logits.

        Returns:
            ``(B, D, *latent)`` embeddings, exactly codebook vectors in the forward pass.
        """
        one_hot = F.gumbel_softmax(logits.float(), tau=self.gumbel_tau, hard=True, dim=1)
        return torch.einsum("bk...,kd->bd...", one_hot, self.codebook)

    def discriminate(self, embeddings: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Discriminator logits ``(B,)`` of code-embedding maps.

        Args:
            embeddings: ``(B, D, *latent)``.
            class_labels: ``(B,)`` labels (conditional priors).

        Returns:
            ``(B,)`` logits (higher: more real).
        """
        return self.discriminator(embeddings, class_labels if self.num_classes else None)

    @torch.no_grad()
    def update_ema(self) -> None:
        """One step of the generator's weight average (buffers such as batch-norm statistics are copied)."""
        if self.generator_ema is None:
            return
        n = int(self.ema_updates)
        decay = min(self.ema_decay, (1 + n) / (10 + n))
        for avg, new in zip(self.generator_ema.parameters(), self.generator.parameters()):
            avg.lerp_(new.detach(), 1 - decay)
        for avg, new in zip(self.generator_ema.buffers(), self.generator.buffers()):
            avg.copy_(new)
        self.ema_updates += 1

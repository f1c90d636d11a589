"""One inferer for every prior over VQ-VAE codes (Gated PixelCNN, transformer, DCGAN).

:class:`AutoregressivePriorInferer` samples images, scores images or code maps (per-token negative log-likelihood,
the basis of anomaly maps) and encodes a dataset once into cached code maps, so prior training does not re-run the
VQ-VAE. The DCGAN prior (no likelihood) is sampled and decoded the same way; its likelihood methods raise a one-line
error. The VQ-VAE only needs MONAI's ``VQVAE`` interface (``index_quantize``, ``decode_samples``); it is always
switched to ``eval()`` while used (MONAI's EMA quantizer updates its codebook in train mode, even under ``no_grad``)
and its previous mode is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.inferers import Inferer
from monai.networks import eval_mode
from torch import nn

from brainvq_monai.data.codes import load_codes, save_codes
from brainvq_monai.inferers.anomaly import HealResult, anomaly_map, heal
from brainvq_monai.inferers.sampling import sample_codes
from brainvq_monai.networks.nets.prior import AutoregressivePrior, CodeMapPrior
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.state import unwrap_module
from brainvq_monai.utils.tensors import as_generator, autocast, device_of, to_channels_last

__all__ = ["AutoregressivePriorInferer"]


class AutoregressivePriorInferer(Inferer):
    """Sampling, likelihood and dataset encoding for VQ-VAE + autoregressive prior models.

    Works with any :class:`~brainvq_monai.networks.nets.prior.AutoregressivePrior` (Gated PixelCNN, transformer) and,
    for sampling and decoding, with the :class:`~brainvq_monai.networks.nets.DCGANPrior`.
    Calling the inferer returns the prior's logits ``(B, K, *latent)`` (of noise, for the DCGAN's generator), so that with MONAI engines
    ``loss_function=torch.nn.CrossEntropyLoss()`` and targets = code maps trains the prior::

        inferer = AutoregressivePriorInferer()
        logits = inferer(codes, prior, class_labels=labels)  # (B, K, *latent)
        loss = F.cross_entropy(logits, codes)
        images = inferer.sample(vqvae, prior, num_samples=8, generator=0)
        nll_map = inferer.get_likelihood(images, vqvae, prior)  # (B, *latent), nats per token
    """

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: AutoregressivePrior,
        class_labels: torch.Tensor | None = None,
        vqvae: nn.Module | None = None,
    ) -> torch.Tensor:
        """Causal logits of the prior (the training forward pass), or the DCGAN generator's logits of noise.

        Args:
            inputs: ``(B, *latent)`` integer code maps, or ``(B, C, *image)`` images when ``vqvae`` is given; for a
                prior that generates whole maps (:class:`~brainvq_monai.networks.nets.DCGANPrior`), ``(B, noise_dim)``
                noise.
            network: the prior.
            class_labels: optional ``(B,)`` class labels.
            vqvae: VQ-VAE used to quantize image ``inputs`` (in eval mode, without gradients).

        Returns:
            ``(B, K, *latent)`` logits; ``F.cross_entropy(logits, codes, reduction="none")`` is the per-token NLL
            (autoregressive priors).
        """
        if not isinstance(unwrap_module(network), AutoregressivePrior):
            return network(inputs.to(device_of(network)), class_labels)
        codes = self._to_codes(inputs, vqvae, "inputs")
        return network(codes.to(device_of(network)), class_labels)

    # ------------------------------------------------------------------ sampling
    @staticmethod
    def _latent_shape(prior: CodeMapPrior, latent_shape: Sequence[int] | None) -> tuple[int, ...]:
        if latent_shape is None:
            latent_shape = getattr(prior, "spatial_shape", None)
            if latent_shape is None:
                raise BrainVQInputError("latent_shape", "required for a prior without a fixed spatial_shape")
        latent_shape = tuple(int(s) for s in latent_shape)
        if len(latent_shape) != prior.spatial_dims:
            raise BrainVQInputError("latent_shape", f"expected {prior.spatial_dims} sizes, got {latent_shape}")
        return latent_shape

    def sample_codes(
        self,
        prior: CodeMapPrior,
        num_samples: int,
        latent_shape: Sequence[int] | None = None,
        class_labels: torch.Tensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | int | None = None,
        use_cache: bool = True,
        verbose: bool = False,
        top_p: float | None = None,
    ) -> torch.Tensor:
        """Samples code maps (thin wrapper of :func:`brainvq_monai.inferers.sampling.sample_codes`, prior in eval).

        Args:
            prior: the prior.
            num_samples: number of code maps.
            latent_shape: latent spatial shape; ``None`` uses ``prior.spatial_shape`` (transformer priors).
            class_labels: optional ``(num_samples,)`` labels or one label for all.
            temperature: softmax temperature (``0``: greedy).
            top_k: optional top-k truncation.
            generator: a ``torch.Generator`` on the prior's device, or an int seed.
            use_cache: fast exact sampling with the prior's incremental decoder; ``False``: naive full passes.
            verbose: progress bar.
            top_p: optional nucleus truncation.

        Returns:
            ``(num_samples, *latent_shape)`` long codes on the prior's device.
        """
        shape = self._latent_shape(prior, latent_shape)
        gen = as_generator(generator, device_of(prior))
        with eval_mode(prior):
            return sample_codes(
                prior, num_samples, shape, class_labels, temperature, top_k, gen, use_cache, verbose, top_p
            )

    @torch.no_grad()
    def sample(
        self,
        vqvae: nn.Module,
        prior: CodeMapPrior,
        num_samples: int,
        latent_shape: Sequence[int] | None = None,
        class_labels: torch.Tensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | int | None = None,
        use_cache: bool = True,
        verbose: bool = False,
        top_p: float | None = None,
    ) -> torch.Tensor:
        """Samples images: :meth:`sample_codes` then ``vqvae.decode_samples``.

        Args: as :meth:`sample_codes`, plus ``vqvae``, the first-stage model whose codes the prior models.

        Returns:
            ``(num_samples, C, *image)`` decoded images on the VQ-VAE's device.
        """
        codes = self.sample_codes(
            prior, num_samples, latent_shape, class_labels, temperature, top_k, generator, use_cache, verbose, top_p
        )
        with eval_mode(vqvae):
            return vqvae.decode_samples(codes.to(device_of(vqvae)))

    # ------------------------------------------------------------------ likelihood
    @staticmethod
    @torch.no_grad()
    def _to_codes(inputs: torch.Tensor, vqvae: nn.Module | None, where: str) -> torch.Tensor:
        if not inputs.is_floating_point():
            return inputs.long()
        if vqvae is None:
            raise BrainVQInputError(where, "float images need a vqvae to be quantized (or pass integer code maps)")
        with eval_mode(vqvae):
            return vqvae.index_quantize(inputs.to(device_of(vqvae))).long()

    @torch.no_grad()
    def get_likelihood(
        self,
        inputs: torch.Tensor,
        vqvae: nn.Module | None,
        prior: AutoregressivePrior,
        class_labels: torch.Tensor | None = None,
        resample_latent_likelihoods: bool = False,
        resample_interpolation_mode: str = "nearest",
    ) -> torch.Tensor:
        """Per-token negative log-likelihood (nats) of images or code maps under the prior.

        Unlike MONAI's ``VQVAETransformerInferer.get_likelihood`` (log-probabilities, softmax over all tokens
        including BOS) this returns ``-log p(code | earlier codes)`` with the softmax over the ``K`` codes only, the
        distribution the samplers draw from; large values flag unlikely (anomalous) regions.
        The map is computed by :func:`brainvq_monai.inferers.anomaly.anomaly_map` (the one implementation of NLL
        maps); this method only checks its own arguments.

        Args:
            inputs: ``(B, C, *image)`` float images (quantized by ``vqvae``) or ``(B, *latent)`` integer code maps.
            vqvae: the VQ-VAE (may be ``None`` for code-map inputs).
            prior: the prior.
            class_labels: optional ``(B,)`` class labels.
            resample_latent_likelihoods: upsample the latent NLL map to the image size (image inputs only).
            resample_interpolation_mode: ``"nearest"``, ``"bilinear"`` or ``"trilinear"``.

        Returns:
            ``(B, *latent)`` NLL map, or ``(B, 1, *image)`` when ``resample_latent_likelihoods``.
        """
        if resample_latent_likelihoods:
            if resample_interpolation_mode not in ("nearest", "bilinear", "trilinear"):
                raise BrainVQInputError(
                    "resample_interpolation_mode",
                    f"must be 'nearest', 'bilinear' or 'trilinear', got {resample_interpolation_mode!r}",
                )
            if not inputs.is_floating_point():
                raise BrainVQInputError("resample_latent_likelihoods", "needs image inputs, not code maps")
        return anomaly_map(
            inputs, vqvae, prior, class_labels, resample_interpolation_mode, upsample=resample_latent_likelihoods
        )

    # ------------------------------------------------------------------ anomaly maps
    def get_anomaly_map(
        self,
        inputs: torch.Tensor,
        vqvae: nn.Module,
        prior: AutoregressivePrior,
        class_labels: torch.Tensor | None = None,
        interpolation_mode: str = "nearest",
    ) -> torch.Tensor:
        """Per-token NLL map upsampled to the image (see :func:`brainvq_monai.inferers.anomaly.anomaly_map`).

        Args:
            inputs: ``(B, C, *image)`` float images.
            vqvae: the VQ-VAE.
            prior: the prior.
            class_labels: optional labels, e.g. the normal class of a conditional prior.
            interpolation_mode: ``"nearest"`` or ``"linear"`` (bi-/trilinear).

        Returns:
            ``(B, 1, *image)`` NLL map (nats).
        """
        return anomaly_map(inputs, vqvae, prior, class_labels, interpolation_mode)

    def heal(
        self,
        inputs: torch.Tensor,
        vqvae: nn.Module,
        prior: AutoregressivePrior,
        threshold: float,
        class_labels: torch.Tensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | int | None = None,
        use_cache: bool = True,
    ) -> HealResult:
        """Healed reconstruction: codes with probability ``<= threshold`` given the healed prefix are resampled.

        See :func:`brainvq_monai.inferers.anomaly.heal`; ``threshold=1`` is exactly :meth:`sample_codes` with the
        same generator, ``threshold=0`` decodes the input's own codes.

        Returns:
            a :class:`~brainvq_monai.inferers.anomaly.HealResult` (``image``, ``codes``, ``resampled``,
            ``original_codes``).
        """
        return heal(inputs, vqvae, prior, threshold, class_labels, temperature, top_k, generator, use_cache)

    # ------------------------------------------------------------------ dataset encoding
    @torch.no_grad()
    def encode_dataset(
        self,
        vqvae: nn.Module,
        data: Iterable,
        image_key: str = "image",
        label_key: str | None = "label",
        subject_key: str = "subject",
        device: str | torch.device | None = None,
        verbose: bool = True,
        amp: bool = False,
        channels_last: bool = False,
    ) -> dict[str, Any]:
        """Encodes a dataset once into code maps (VQ-VAE in eval mode, no gradients).

        The codes stay on ``device`` until the end (one host copy, no per-batch synchronisation), and host batches
        are copied with ``non_blocking`` (asynchronous from pinned memory).

        Args:
            vqvae: the VQ-VAE.
            data: a ``DataLoader`` or any iterable of batches: dicts (``image_key`` holding ``(B, C, *image)`` or an
                unbatched ``(C, *image)``), ``(image, label)`` tuples, or image tensors.
            image_key: dict key of the images.
            label_key: dict key of integer class labels (``None``: ignore labels).
            subject_key: dict key of subject identifiers; without it the image's ``filename_or_obj`` meta data is
                used (MONAI ``MetaTensor``), else the running index.
            device: where to run the VQ-VAE (it is moved there); ``None``: its current device.
            verbose: progress bar.
            amp: bf16 autocast for the encoder (as the trainers use it on GPUs, so the codes are those the codebook
                was trained on); the nearest-code search itself always runs in float32.
            channels_last: channels-last input (faster convolutions on GPUs).

        Returns:
            dict with ``codes`` (long ``(N, *latent)``, CPU), ``labels`` (long ``(N,)`` or ``None`` when any batch has
            no labels) and ``subjects`` (list of ``N`` strings).
        """
        device = torch.device(device) if device is not None else device_of(vqvae)
        spatial_dims = getattr(vqvae, "spatial_dims", None)
        codes_list: list[torch.Tensor] = []
        labels_list: list[torch.Tensor] | None = []
        subjects: list[str] = []
        batches: Iterable = data
        if verbose:
            from monai.utils import optional_import

            tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
            batches = tqdm(data, desc="encoding", leave=False) if has_tqdm else data
        with eval_mode(vqvae):
            vqvae.to(device)
            for i, batch in enumerate(batches):
                image, label, subject = self._split_batch(batch, image_key, label_key, subject_key, i)
                if not isinstance(image, torch.Tensor) or not image.is_floating_point():
                    raise BrainVQInputError(f"data[{i}]", f"'{image_key}' must be a float image tensor")
                if spatial_dims is not None and image.dim() == spatial_dims + 1:
                    image = image[None]  # unbatched item
                meta_names = self._meta_names(image)
                image = to_channels_last(torch.as_tensor(image).to(device, non_blocking=True), channels_last)
                with autocast(device, amp):
                    codes = vqvae.index_quantize(image)
                n = codes.shape[0]
                codes_list.append(codes)
                if labels_list is not None and label is not None:
                    labels = torch.as_tensor(label).long().reshape(-1).cpu()
                    if labels.numel() != n:
                        raise BrainVQInputError(
                            f"data[{i}]", f"'{label_key}' has {labels.numel()} labels for {n} images"
                        )
                    labels_list.append(labels)
                else:
                    labels_list = None
                names = subject if subject is not None else meta_names
                if names is None:
                    names = [str(len(subjects) + j) for j in range(n)]
                names = [str(s) for s in ([names] if isinstance(names, (str, int)) else list(names))]
                if len(names) != n:
                    raise BrainVQInputError(f"data[{i}]", f"'{subject_key}' has {len(names)} names for {n} images")
                subjects.extend(names)
        if not codes_list:
            raise BrainVQInputError("data", "no batches to encode")
        return {
            "codes": torch.cat(codes_list).long().cpu(),
            "labels": torch.cat(labels_list) if labels_list else None,
            "subjects": subjects,
        }

    @staticmethod
    def _split_batch(batch: Any, image_key: str, label_key: str | None, subject_key: str, index: int) -> tuple:
        if isinstance(batch, Mapping):
            if image_key not in batch:
                raise BrainVQInputError(f"data[{index}]", f"missing key '{image_key}'")
            label = batch.get(label_key) if label_key is not None else None
            return batch[image_key], label, batch.get(subject_key)
        if isinstance(batch, (list, tuple)):
            if len(batch) == 0:
                raise BrainVQInputError(f"data[{index}]", "empty batch")
            return batch[0], (batch[1] if len(batch) > 1 and label_key is not None else None), None
        return batch, None, None

    @staticmethod
    def _meta_names(image: torch.Tensor) -> list[str] | None:
        meta = getattr(image, "meta", None)
        names = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
        if names is None or (isinstance(names, (list, tuple)) and len(names) != image.shape[0]):
            return None
        return [str(n) for n in ([names] if isinstance(names, str) else names)]

    save_codes = staticmethod(save_codes)
    load_codes = staticmethod(load_codes)

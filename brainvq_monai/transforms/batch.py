"""Batched, device-side training augmentation: the augmentation of :func:`brain_transforms` for a whole batch at once.

Per-sample MONAI transforms on the CPU cost about 1 ms per 128x128 slice and about 30 ms per 80x96x80 volume per
worker, while a GPU trainer consumes thousands of slices per second: with few CPU cores the loader starves the GPU.
:class:`RandBrainAugment` draws the same random parameters per sample (same probabilities and ranges, read from
:data:`~brainvq_monai.transforms.pipeline.BRAIN_AUGMENT`) and applies them to a ``(B, C, *spatial)`` tensor with a
handful of batched kernels on the tensor's own device. :class:`AugmentedPrepareBatch` plugs it into a MONAI engine:
the loader then only serves the cached deterministic part (``brain_transforms(..., augment=False)``).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.nn import functional as F

from brainvq_monai.data.batch import prepare_images
from brainvq_monai.transforms.pipeline import BRAIN_AUGMENT, BrainAugmentParams
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.tensors import plain_tensor

__all__ = ["AugmentedPrepareBatch", "RandBrainAugment", "legendre_basis", "rotation_matrices"]

_EPS = 1e-7  # MONAI AdjustContrast's epsilon


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices in array-axis order, composed as MONAI's ``create_rotate`` (intrinsic x, then y, then z).

    Args:
        angles: ``(B, 1)`` angles in radians for 2D, ``(B, 3)`` for 3D (about the first, second and third axis).

    Returns:
        ``(B, d, d)`` rotation matrices with ``d = 2`` or ``3``.

    Raises:
        BrainVQInputError: neither 1 nor 3 angles per sample.
    """
    n = angles.shape[-1]
    if n not in (1, 3):
        raise BrainVQInputError("angles", f"need 1 (2D) or 3 (3D) rotation angles per sample, got {n}")
    d = 2 if n == 1 else 3
    about = (2,) if d == 2 else (0, 1, 2)  # the 2D rotation is MONAI's rotation about the third axis
    eye = torch.eye(d, dtype=angles.dtype, device=angles.device)
    out = eye.expand(angles.shape[0], d, d)
    cos, sin = torch.cos(angles), torch.sin(angles)
    for k, axis in enumerate(about):
        p, q = (axis + 1) % 3, (axis + 2) % 3  # rotation in the (p, q) plane
        rot = eye.repeat(angles.shape[0], 1, 1)
        rot[:, p, p] = cos[:, k]
        rot[:, p, q] = -sin[:, k]
        rot[:, q, p] = sin[:, k]
        rot[:, q, q] = cos[:, k]
        out = out @ rot
    return out


def legendre_basis(size: int, degree: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Legendre polynomials ``P_0 .. P_degree`` on ``linspace(-1, 1, size)`` (MONAI ``RandBiasField``'s grid).

    Args:
        size: number of points.
        degree: highest degree.
        device: output device.

    Returns:
        ``(degree + 1, size)`` float32.
    """
    x = torch.linspace(-1.0, 1.0, size, device=device, dtype=torch.float32)
    polys = [torch.ones_like(x), x]
    for n in range(1, degree):
        polys.append(((2 * n + 1) * x * polys[n] - n * polys[n - 1]) / (n + 1))
    return torch.stack(polys[: degree + 1])


def _multi_indices(spatial_dims: int, degree: int) -> list[tuple[int, ...]]:
    """Exponent tuples of total degree <= ``degree`` (MONAI's 3D bias field terms; 10 in 2D, 20 in 3D at degree 3)."""
    return [m for m in itertools.product(range(degree + 1), repeat=spatial_dims) if sum(m) <= degree]


def _flat_terms_cpu(spatial_dims: int, degree: int) -> torch.Tensor:
    """Flat positions of :func:`_multi_indices` in a C-ordered ``(degree + 1,) * spatial_dims`` grid."""
    n = degree + 1
    return torch.tensor(
        [sum(e * n ** (spatial_dims - 1 - a) for a, e in enumerate(m)) for m in _multi_indices(spatial_dims, degree)]
    )


def _size_ratio_cpu(spatial: tuple[int, ...]) -> torch.Tensor:
    """``ratio[i, j] = N_j / N_i``: turns a voxel-unit matrix into ``F.affine_grid``'s normalised units."""
    size = torch.tensor([float(s) for s in spatial])
    return size.view(1, -1) / size.view(-1, 1)


class RandBrainAugment:
    """The training augmentation of :func:`~brainvq_monai.transforms.pipeline.brain_transforms`, batched on any device.

    For each sample independently, with the probabilities and ranges of ``params``:

    1. random affine: rotation (1 angle in 2D, 3 in 3D, ``U(-rotate_range, rotate_range)`` rad) and per-axis scaling
       (``1 + U(-scale_range, scale_range)``) about the image centre in voxel units, as MONAI's ``RandAffine``
       (output-to-input mapping, bilinear, zero padding), with ``F.affine_grid`` / ``F.grid_sample``;
    2. gamma contrast, MONAI ``RandAdjustContrast``: ``((x - min) / (max - min)) ** gamma * (max - min) + min``
       with the sample's min and max;
    3. multiplicative bias field, MONAI ``RandBiasField``: ``x * exp(sum_k c_k P_k)`` with Legendre products
       ``P_k`` of total degree <= ``bias_degree`` on ``[-1, 1]`` coordinates and ``c_k ~ U(bias_coeff_range)``
       (MONAI's 2D transform uses a triangular set of 10 terms instead; the field is equally smooth);
    4. Gaussian noise with std ``U(0, noise_std)`` (or ``noise_std``; MONAI ``RandGaussianNoise``);
    5. clip to ``clip_range``.

    One code path serves 2D ``(B, C, H, W)`` and 3D ``(B, C, D, H, W)`` batches; all channels of a sample share its
    parameters. Steps are computed for the whole batch and selected per sample with ``torch.where``, so a call never
    synchronises with the device. The input is never modified; the output keeps its dtype and memory format
    (half-precision input is augmented in float32 and cast back).

    Args:
        params: the augmentation; ``None`` means :data:`~brainvq_monai.transforms.pipeline.BRAIN_AUGMENT`.
        overrides: fields of :class:`~brainvq_monai.transforms.pipeline.BrainAugmentParams` to replace
            (e.g. ``noise_prob=1.0``).

    Example::

        augment = RandBrainAugment().set_random_state(0)
        images = augment(images.cuda(non_blocking=True))
    """

    def __init__(self, params: BrainAugmentParams | None = None, **overrides: Any) -> None:
        params = BRAIN_AUGMENT if params is None else params
        if overrides:
            unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(BrainAugmentParams)})
            if unknown:
                raise BrainVQInputError("RandBrainAugment", f"unknown augmentation setting(s): {', '.join(unknown)}")
            params = dataclasses.replace(params, **overrides)
        self.params = params
        self._seed: int | None = None
        self._generator: torch.Generator | None = None
        self._generators: dict[torch.device, torch.Generator] = {}
        self._constants: dict[tuple, torch.Tensor] = {}

    def _constant(self, key: tuple, device: torch.device, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A small constant tensor copied to ``device`` once (a host-to-device copy would block the host)."""
        full_key = (device, *key)
        if full_key not in self._constants:
            self._constants[full_key] = make().to(device)
        return self._constants[full_key]

    def _size_ratio(self, spatial: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return self._constant(("ratio", spatial), device, lambda: _size_ratio_cpu(spatial))

    def _flat_terms(self, spatial_dims: int, degree: int, device: torch.device) -> torch.Tensor:
        return self._constant(("terms", spatial_dims, degree), device, lambda: _flat_terms_cpu(spatial_dims, degree))

    def set_random_state(self, seed: int | None = None, generator: torch.Generator | None = None) -> RandBrainAugment:
        """Makes the draws reproducible: a seed (one generator per device, made on first use) or a generator.

        Args:
            seed: seed of the per-device generators; ``None`` (and no ``generator``) returns to torch's global RNG.
            generator: a ``torch.Generator`` on the device of the batches to come (overrides ``seed``).

        Returns:
            this transform.
        """
        self._generator = generator
        self._seed = None if seed is None else int(seed)
        self._generators = {}
        return self

    def state_dict(self) -> dict[str, Any]:
        """The state of the random draws (seed and generator states), for exact resumption of a training run.

        Returns:
            ``{"seed": ..., "generators": {device: state}, "generator": state or None}`` (tensors and plain data).
        """
        return {
            "seed": self._seed,
            "generators": {str(dev): gen.get_state() for dev, gen in self._generators.items()},
            "generator": None if self._generator is None else self._generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`: later draws continue exactly where the saved ones stopped.

        Args:
            state: from :meth:`state_dict`.
        """
        self._seed = None if state.get("seed") is None else int(state["seed"])
        self._generators = {}
        for dev, gen_state in dict(state.get("generators") or {}).items():
            device = torch.device(dev)
            gen = torch.Generator(device=device)
            gen.set_state(gen_state)
            self._generators[device] = gen
        if state.get("generator") is not None and self._generator is not None:
            self._generator.set_state(state["generator"])

    def _get_generator(self, device: torch.device) -> torch.Generator | None:
        if self._generator is not None:
            if self._generator.device.type != device.type:
                raise BrainVQInputError(
                    "RandBrainAugment", f"generator on {self._generator.device} but the batch is on {device}"
                )
            return self._generator
        if self._seed is None:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self._seed)
        return self._generators[device]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """
        Args:
            images: ``(B, C, *spatial)`` floating-point batch (2 or 3 spatial dims) on any device.

        Returns:
            the augmented batch: a new tensor of the same shape, dtype, device and memory format.

        Raises:
            BrainVQInputError: not a floating-point batch with 2 or 3 spatial dims.
        """
        images = plain_tensor(images)
        if images.ndim not in (4, 5):
            raise BrainVQInputError(
                "images", f"need (B, C, *spatial) with 2 or 3 spatial dims, got {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise BrainVQInputError("images", f"need a floating-point batch, got {images.dtype}")
        p = self.params
        device, batch, spatial = images.device, images.shape[0], tuple(images.shape[2:])
        d = len(spatial)
        gen = self._get_generator(device)
        work_dtype = torch.float32 if images.dtype in (torch.float16, torch.bfloat16) else images.dtype
        x = images.to(work_dtype)
        view = (batch,) + (1,) * (d + 1)

        def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
            return low + (high - low) * torch.rand(*shape, generator=gen, device=device, dtype=work_dtype)

        # every draw happens in a fixed order whatever the outcome, so a seed fixes the whole batch
        draws = torch.rand(4, batch, generator=gen, device=device, dtype=work_dtype)
        chosen = [draws[i] < prob for i, prob in enumerate((p.affine_prob, p.contrast_prob, p.bias_prob, p.noise_prob))]
        if p.affine_prob > 0:
            angles = uniform(-p.rotate_range, p.rotate_range, batch, 1 if d == 2 else 3)
            scales = uniform(1.0 - p.scale_range, 1.0 + p.scale_range, batch, d)
            warped = self.warp(x, angles, scales, self._size_ratio(spatial, device))
            x = torch.where(chosen[0].view(view), warped, x)
        if p.contrast_prob > 0:
            gamma = uniform(*p.gamma_range, batch).view(view)
            low = x.amin(dim=tuple(range(1, d + 2)), keepdim=True)
            span = x.amax(dim=tuple(range(1, d + 2)), keepdim=True) - low
            adjusted = ((x - low) / (span + _EPS)).clamp_min(0) ** gamma * span + low
            x = torch.where(chosen[1].view(view), adjusted, x)
        if p.bias_prob > 0:
            terms = _multi_indices(d, p.bias_degree)
            coeffs = uniform(*p.bias_coeff_range, batch, len(terms))
            field = self.bias_field(coeffs, spatial, p.bias_degree, self._flat_terms(d, p.bias_degree, device))
            field = field.to(work_dtype)
            x = torch.where(chosen[2].view(view), x * field.unsqueeze(1), x)
        if p.noise_prob > 0:
            std = (
                uniform(0.0, p.noise_std, batch)
                if p.noise_sample_std
                else torch.full((batch,), p.noise_std, device=device, dtype=work_dtype)
            )
            noise = torch.randn(x.shape, generator=gen, device=device, dtype=work_dtype)
            x = x + noise * (std * chosen[3]).view(view)
        x = x.clamp(*p.clip_range)
        out = torch.empty_like(images)  # same dtype, device and strides (channels-last stays channels-last)
        out.copy_(x)
        return out

    @staticmethod
    def warp(
        x: torch.Tensor, angles: torch.Tensor, scales: torch.Tensor, size_ratio: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rotates and scales each sample about its centre (MONAI ``Affine`` semantics), bilinear, zero padding.

        The matrix ``R @ S`` (in voxel units, array-axis order) maps output coordinates to input coordinates, as
        MONAI's affine grid does; it is converted to the normalised, reversed-axis convention of ``F.affine_grid``.

        Args:
            x: ``(B, C, *spatial)`` batch.
            angles: ``(B, 1)`` (2D) or ``(B, 3)`` (3D) radians.
            scales: ``(B, d)`` scale factors.
            size_ratio: ``(d, d)`` matrix ``N_j / N_i`` of the spatial sizes on the batch's device (made here when
                not given; a cached one spares a host-to-device copy).

        Returns:
            the warped batch (a new tensor).
        """
        if size_ratio is None:
            size_ratio = _size_ratio_cpu(tuple(x.shape[2:])).to(x.device)
        matrix = rotation_matrices(angles.to(torch.float32)) @ torch.diag_embed(scales.to(torch.float32))
        # normalised u = 2 c / N (align_corners=False) for centred voxel coordinates c: theta = D^-1 A D
        theta = matrix * size_ratio
        theta = theta.flip(-1).flip(-2)  # F.affine_grid orders coordinates (W, H[, D]): the last axis first
        theta = torch.cat([theta, theta.new_zeros(theta.shape[0], theta.shape[1], 1)], dim=2)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    @staticmethod
    def bias_field(
        coeffs: torch.Tensor, spatial: tuple[int, ...] | torch.Size, degree: int, flat_terms: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``exp`` of a Legendre polynomial field per sample, evaluated separably (never a ``(K, *spatial)`` basis).

        Args:
            coeffs: ``(B, K)`` coefficients of the terms of total degree <= ``degree`` (in ``itertools.product``
                order).
            spatial: spatial shape (2 or 3 sizes).
            degree: highest total degree.
            flat_terms: the terms' flat positions in the ``(degree + 1) ** d`` coefficient grid, on the device of
                ``coeffs`` (made here when not given).

        Returns:
            ``(B, *spatial)`` float32 multiplicative field.
        """
        d = len(spatial)
        if flat_terms is None:
            flat_terms = _flat_terms_cpu(d, degree).to(coeffs.device)
        if coeffs.shape[-1] != flat_terms.numel():
            raise BrainVQInputError(
                "coeffs", f"need {flat_terms.numel()} coefficients for degree {degree}, got {tuple(coeffs.shape)}"
            )
        full = coeffs.new_zeros(coeffs.shape[0], (degree + 1) ** d, dtype=torch.float32)
        full[:, flat_terms] = coeffs.to(torch.float32)
        full = full.view(coeffs.shape[0], *([degree + 1] * d))
        basis = [legendre_basis(int(n), degree, coeffs.device) for n in spatial]
        co, sp = "pqr"[:d], "xyz"[:d]
        spec = f"b{co}," + ",".join(f"{c}{s}" for c, s in zip(co, sp)) + f"->b{sp}"
        return torch.exp(torch.einsum(spec, full, *basis))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"


class AugmentedPrepareBatch:
    """``prepare_batch`` for MONAI engines that moves the batch to the device, then augments it there.

    Use it with a loader built from ``brain_transforms(..., augment=False)`` (cached by ``CacheDataset``): the CPU
    workers then only copy cached tensors, and the random augmentation runs batched on the training device.

    Args:
        augment: the batched augmentation; ``None`` means ``RandBrainAugment()``.
        prepare_batch: the wrapped ``prepare_batch`` returning ``(images, labels)``; ``None`` means
            :func:`brainvq_monai.data.batch.prepare_images`.
    """

    def __init__(
        self,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        prepare_batch: Callable[..., tuple[torch.Tensor, Any]] | None = None,
    ) -> None:
        if prepare_batch is None:
            prepare_batch = prepare_images
        self.augment = RandBrainAugment() if augment is None else augment
        self.prepare_batch = prepare_batch

    def state_dict(self) -> dict[str, Any]:
        """The augmentation's random state (see :meth:`RandBrainAugment.state_dict`), or ``{}``.

        Returns:
            ``{"augment": ...}`` when the augmentation has a state.
        """
        return {"augment": self.augment.state_dict()} if hasattr(self.augment, "state_dict") else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`.

        Args:
            state: from :meth:`state_dict`.
        """
        if "augment" in state and hasattr(self.augment, "load_state_dict"):
            self.augment.load_state_dict(state["augment"])

    def __call__(
        self, batchdata: Mapping, device: torch.device | str | None = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, Any]:
        """
        Args:
            batchdata: a collated batch dict.
            device: target device.
            non_blocking: asynchronous host-to-device copy.
            kwargs: passed on to the wrapped ``prepare_batch``.

        Returns:
            ``(augmented images, labels)`` on ``device``.
        """
        images, labels = self.prepare_batch(batchdata, device, non_blocking, **kwargs)
        return self.augment(images), labels

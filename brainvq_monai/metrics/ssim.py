"""SSIM settings that stay valid on small images."""

from __future__ import annotations

from collections.abc import Sequence

from monai.metrics import MultiScaleSSIMMetric

__all__ = ["MS_SSIM_WEIGHTS", "multiscale_ssim_metric"]

# Wang et al. 2003 five-scale weights; fewer scales use the first ones, renormalised.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def multiscale_ssim_metric(
    spatial_dims: int, image_size: int | Sequence[int], data_range: float = 1.0, kernel_size: int = 7
) -> MultiScaleSSIMMetric:
    """MS-SSIM with as many scales (at most 5) as the image size allows for ``kernel_size``.

    MONAI's default (window 11, 5 scales) needs images larger than 160 px; MS-SSIM needs
    ``min(image_size) / 2**(scales - 1) > kernel_size - 1`` at the coarsest scale. With window 7 this gives 4 scales
    at 64 px and 5 at 128 px.

    Args:
        spatial_dims: 2 or 3.
        image_size: the (smallest) spatial size of the images.
        data_range: intensity range of the images.
        kernel_size: Gaussian window size.

    Returns:
        a configured :class:`monai.metrics.MultiScaleSSIMMetric`.
    """
    size = min(image_size) if isinstance(image_size, Sequence) else int(image_size)
    scales = 0
    while scales < len(MS_SSIM_WEIGHTS) and size // (2**scales) > kernel_size - 1:
        scales += 1
    if scales < 2:
        raise ValueError(f"image_size: {size} px is too small for multi-scale SSIM with window {kernel_size}")
    weights = MS_SSIM_WEIGHTS[:scales]
    total = sum(weights)
    return MultiScaleSSIMMetric(
        spatial_dims=spatial_dims,
        data_range=data_range,
        kernel_size=kernel_size,
        weights=[w / total for w in weights],
    )

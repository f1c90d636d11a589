"""brainvq_monai: discrete generative modelling of brain MRI on MONAI.

VQ-VAE compression of brain MRI into codebook indices, autoregressive priors (Gated PixelCNN,
decoder-only transformer) over those codes, MONAI bundles with Ignite workflows, and offline evaluation.
"""

__version__ = "0.3.0"

__all__ = ["__version__"]

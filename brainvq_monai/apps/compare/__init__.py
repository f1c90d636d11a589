"""Head-to-head comparisons on the synthetic demo cohort, with identical data, seeds and optimisation steps.

(a) **VQ-VAE**: :class:`~brainvq_monai.networks.nets.vqvae.BrainVQVAE` (k-means codebook init, dead-code restarts,
    EMA decay 0.99) against MONAI's ``monai.networks.nets.VQVAE`` configured as in MONAI's 2D VQ-VAE tutorial
    (``channels=(256, 256)``, ``num_res_channels=256``, ``num_res_layers=2``, two ``(2, 4, 1, 1)`` downsamplings,
    ``num_embeddings=256``, ``embedding_dim=32``, MONAI defaults otherwise, i.e. EMA decay 0.5; Adam lr 1e-4, L1
    loss + quantization loss). Same architecture on both sides (the encoder/decoder start from the same weights),
    only the quantizer differs. Both train with :class:`~brainvq_monai.engines.VQVAETrainer` on the same batches,
    one quantization (one EMA codebook update) per step. ``quick`` shrinks the channels equally on both sides so that
    it runs on a CPU. Reported over the test split: SSIM, PSNR (whole image and inside a brain mask), codes used and
    perplexity.
(b) **Priors**: class-conditional (AD/NC) :class:`GatedPixelCNN` against :class:`TransformerPrior`, trained with
    :class:`~brainvq_monai.engines.PriorTrainer` on the same cached codes of the VQ-VAE from (a) for the same number
    of steps with matched parameter counts (the PixelCNN width is chosen to match the transformer's count).
    Reported: test NLL (nats/token, :class:`~brainvq_monai.engines.PriorEvaluator`), time to sample ``N`` images
    with the fast exact samplers, and the generation metrics of
    :func:`brainvq_monai.metrics.generation.evaluate_generation` (FID/KID/PRDC on an in-house feature network trained
    on the training split only, diversity, memorisation), each next to its real-vs-real (train vs test) floor.

Everything is measured in the run; nothing is hard-coded. Command line::

    brainvq compare --quick --device cpu --out compare_run --json compare.json   # a few minutes on a CPU
    brainvq compare --device cuda --out compare_gpu --json compare_gpu.json      # 128x128, tutorial sizes
"""

from .run import run_compare
from .settings import MODES, TUTORIAL_LR, TUTORIAL_VQVAE
from .table import format_table
from .training import TensorBatches, batch_plan

__all__ = ["MODES", "TUTORIAL_LR", "TUTORIAL_VQVAE", "TensorBatches", "batch_plan", "format_table", "run_compare"]

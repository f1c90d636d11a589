"""Training and evaluation of the compared networks, on in-memory tensors, through brainvq's engines.

Both sides of a head-to-head consume the same :func:`batch_plan` (the same images in the same order for the same
number of steps). The training loops are the engines' (:class:`~brainvq_monai.engines.VQVAETrainer`,
:class:`~brainvq_monai.engines.PriorTrainer`); the test figures come from
:class:`~brainvq_monai.engines.VQVAEEvaluator` and :class:`~brainvq_monai.engines.PriorEvaluator` with the metrics the
bundles' ``evaluate`` workflow uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events

from brainvq_monai.engines import (
    DCGANTrainer,
    PriorEvaluator,
    PriorTrainer,
    VQVAEEvaluator,
    VQVAETrainer,
    has_likelihood,
)

__all__ = ["TensorBatches", "batch_plan", "evaluate_vqvae", "prior_test_nll", "train_prior", "train_vqvae"]


def batch_plan(n: int, batch_size: int, steps: int, seed: int) -> list[torch.Tensor]:
    """The index batches of ``steps`` optimisation steps: reshuffled epochs, incomplete last batches dropped.

    Both sides of a head-to-head consume the same plan, so they see the same images in the same order.

    Args:
        n: number of training items.
        batch_size: items per step (at most ``n``).
        steps: number of steps.
        seed: seed of the shuffles.

    Returns:
        ``steps`` index tensors of ``min(batch_size, n)`` items each.
    """
    batch_size = max(1, min(batch_size, n))
    gen = torch.Generator().manual_seed(seed)
    plan: list[torch.Tensor] = []
    while len(plan) < steps:
        perm = torch.randperm(n, generator=gen)
        plan += [perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
    return plan[:steps]


class TensorBatches:
    """A re-iterable loader of dict batches drawn from in-memory tensors in the order of an index plan.

    Args:
        plan: one index tensor per batch (e.g. from :func:`batch_plan`).
        tensors: ``{key: tensor}`` indexed along the first axis (e.g. ``image=...``, ``label=...``).
    """

    def __init__(self, plan: Sequence[torch.Tensor], **tensors: torch.Tensor) -> None:
        self.plan = list(plan)
        self.tensors = tensors

    @classmethod
    def in_order(cls, batch_size: int, **tensors: torch.Tensor) -> TensorBatches:
        """Consecutive batches of ``batch_size`` over all items (the last may be smaller), for evaluation.

        Args:
            batch_size: items per batch.
            tensors: see the class.

        Returns:
            the loader.
        """
        n = next(iter(tensors.values())).shape[0]
        return cls([torch.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)], **tensors)

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for idx in self.plan:
            yield {key: value[idx] for key, value in self.tensors.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_trainer(make: Callable[[TensorBatches], Engine], batches: TensorBatches, device: torch.device) -> dict:
    """Runs one epoch of ``len(batches)`` iterations; the time and the mean loss of the last tenth of the steps."""
    trainer = make(batches)
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"])))
    _sync(device)
    start = time.perf_counter()
    trainer.run()
    _sync(device)
    tail = losses[-max(1, len(losses) // 10) :]
    return {"train_seconds": time.perf_counter() - start, "final_loss": sum(tail) / len(tail)}


def train_vqvae(
    net: torch.nn.Module, images: torch.Tensor, plan: Sequence[torch.Tensor], lr: float, device: torch.device
) -> dict[str, Any]:
    """MONAI's tutorial recipe with :class:`~brainvq_monai.engines.VQVAETrainer`: Adam, L1 + quantization loss.

    One quantization per step (one EMA codebook update), for MONAI's ``VQVAE`` as for ours
    (:class:`~brainvq_monai.inferers.VQVAEInferer`).

    Args:
        net: the VQ-VAE (trained in place, moved to ``device``).
        images: ``(N, 1, H, W)`` training images.
        plan: the batches (:func:`batch_plan`).
        lr: Adam learning rate.
        device: the device.

    Returns:
        ``train_seconds`` and ``final_train_loss`` (mean over the last tenth of the steps).
    """
    net.to(device)

    def make(batches: TensorBatches) -> Engine:
        return VQVAETrainer(
            device, 1, batches, net, torch.optim.Adam(net.parameters(), lr=lr),
            loss_function=torch.nn.L1Loss(), quantization_weight=1.0, epoch_length=len(batches),
        )  # fmt: skip

    out = _run_trainer(make, TensorBatches(plan, image=images), device)
    return {"train_seconds": out["train_seconds"], "final_train_loss": out["final_loss"]}


def train_prior(
    prior: torch.nn.Module,
    codes: torch.Tensor,
    labels: torch.Tensor,
    plan: Sequence[torch.Tensor],
    lr: float,
    seed: int,
    device: torch.device,
    vqvae: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Trains a prior class-conditionally on the batches of ``plan``, no gradient clipping.

    Autoregressive priors: next-token cross-entropy with :class:`~brainvq_monai.engines.PriorTrainer` (Adam). The
    DCGAN prior: one discriminator and one generator step per batch with :class:`~brainvq_monai.engines.DCGANTrainer`
    (Adam, betas 0.5/0.999, the DCGAN setting), on ``vqvae``'s codebook.

    Args:
        prior: the prior (trained in place, moved to ``device``).
        codes: ``(N, *latent)`` long code maps.
        labels: ``(N,)`` class labels.
        plan: the batches (:func:`batch_plan`).
        lr: Adam learning rate.
        seed: seed of the dropout (and noise) draws (set when training starts).
        device: the device.
        vqvae: the VQ-VAE whose codes these are (the DCGAN's discriminator reads its codebook).

    Returns:
        ``train_seconds`` and ``final_train_nll`` (autoregressive) or ``final_generator_loss`` (DCGAN), means over
        the last tenth of the steps.
    """
    prior.to(device)
    likelihood = has_likelihood(prior)

    def make(batches: TensorBatches) -> Engine:
        if likelihood:
            optimizer = torch.optim.Adam(prior.parameters(), lr=lr)
            trainer = PriorTrainer(device, 1, batches, prior, optimizer, grad_clip_norm=None, epoch_length=len(batches))
        else:
            optimizer = torch.optim.Adam(prior.parameters(), lr=lr, betas=(0.5, 0.999))
            trainer = DCGANTrainer(device, 1, batches, prior, optimizer, autoencoder=vqvae, epoch_length=len(batches))
        trainer.add_event_handler(Events.STARTED, lambda _: torch.manual_seed(seed))
        return trainer

    out = _run_trainer(make, TensorBatches(plan, codes=codes, label=labels), device)
    key = "final_train_nll" if likelihood else "final_generator_loss"
    return {"train_seconds": out["train_seconds"], key: out["final_loss"]}


def evaluate_vqvae(
    net: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 32
) -> tuple[dict[str, Any], torch.Tensor]:
    """Test SSIM, PSNR, codes used and perplexity of ``net`` with :class:`~brainvq_monai.engines.VQVAEEvaluator`.

    Eval mode: the codebook is frozen. Reconstructions are clipped to [0, 1] before the metrics.

    Args:
        net: the VQ-VAE.
        images: ``(N, 1, H, W)`` test images in [0, 1].
        device: the device.
        batch_size: images per batch.

    Returns:
        ``(metrics, reconstructions (N, 1, H, W) on the CPU)``.
    """
    from monai.handlers import PeakSignalToNoiseRatio, from_engine

    from brainvq_monai.handlers import SSIMHandler
    from brainvq_monai.metrics import CodebookPerplexity, CodesUsed

    k = int(net.num_embeddings)
    batches = TensorBatches.in_order(batch_size, image=images)
    evaluator = VQVAEEvaluator(
        device, batches, net.to(device), epoch_length=len(batches),
        key_val_metric={"test_ssim": SSIMHandler(spatial_dims=images.dim() - 2, save_details=False)},
        additional_metrics={
            "test_psnr": PeakSignalToNoiseRatio(max_val=1.0, output_transform=from_engine(["pred", "label"])),
            "codes_used": CodesUsed(k),
            "perplexity": CodebookPerplexity(k),
        },
    )  # fmt: skip
    recons: list[torch.Tensor] = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: recons.append(e.state.output["pred"].cpu()))
    evaluator.run()
    m = evaluator.state.metrics
    metrics = {
        "test_ssim": float(m["test_ssim"]),
        "test_psnr": float(m["test_psnr"]),
        "codes_used": int(m["codes_used"]),
        "num_embeddings": k,
        "perplexity": float(m["perplexity"]),
        "num_test_images": int(images.shape[0]),
    }
    return metrics, torch.cat(recons)


def prior_test_nll(
    prior: torch.nn.Module, codes: torch.Tensor, labels: torch.Tensor, device: torch.device, batch_size: int = 64
) -> float | None:
    """Mean test NLL (nats per token) of the codes with :class:`~brainvq_monai.engines.PriorEvaluator`; ``None`` for
    a prior without a likelihood (the DCGAN).

    Args:
        prior: the prior.
        codes: ``(N, *latent)`` long code maps.
        labels: ``(N,)`` class labels.
        device: the device.
        batch_size: code maps per batch.

    Returns:
        the NLL over every token of every code map, or ``None``.
    """
    from brainvq_monai.metrics import PriorNLL

    if not has_likelihood(prior):
        return None
    batches = TensorBatches.in_order(batch_size, codes=codes, label=labels)
    evaluator = PriorEvaluator(
        device, batches, prior.to(device), epoch_length=len(batches), key_val_metric={"test_nll": PriorNLL()}
    )
    evaluator.run()
    return float(evaluator.state.metrics["test_nll"])

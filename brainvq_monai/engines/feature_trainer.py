"""Training the in-house feature network of the generation metrics with an Ignite engine (``monai.engines``)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.inferers import SimpleInferer
from torch.nn import functional as F

from brainvq_monai.networks.nets.feature_net import BrainFeatureNet, augment_batch, flip_task
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["FeatureNetTrainer", "train_feature_net"]


class _EpochBatches:
    """Index batches of a random permutation per epoch, drawn from ``generator`` when each epoch starts."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.generator = n, batch_size, generator

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        perm = torch.randperm(self.n, generator=self.generator)
        return iter([perm[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)])


class FeatureNetTrainer(SupervisedTrainer):
    """Trains a :class:`~brainvq_monai.networks.nets.feature_net.BrainFeatureNet`: per batch of indices, augments the
    images (``generator``), forwards them through ``engine.inferer``, and steps on cross-entropy of the classes (or of
    the self-supervised flip task without labels) + ``position_weight`` x MSE of the slice positions +
    ``reconstruction_weight`` x L1 of the reconstruction from the features; the LR scheduler steps every iteration.

    Args:
        network: the feature network.
        optimizer: its optimizer.
        lr_scheduler: stepped after every optimizer step.
        images: ``(N, C, *spatial)`` training images in [0, 1].
        labels: ``(N,)`` class labels, or ``None`` for the flip task.
        positions: ``(N,)`` slice positions in [0, 1], or ``None``.
        batch_size: batch size.
        epochs: passes over the data.
        generator: the random stream of the batches and the augmentation.
        position_weight: weight of the position loss.
        reconstruction_weight: weight of the reconstruction loss (0: none).
    """

    def __init__(
        self,
        network: BrainFeatureNet,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        positions: torch.Tensor | None,
        batch_size: int,
        epochs: int,
        generator: torch.Generator,
        position_weight: float = 1.0,
        reconstruction_weight: float = 5.0,
    ) -> None:
        batches = _EpochBatches(images.shape[0], batch_size, generator)
        super().__init__(
            device=torch.device("cpu"), max_epochs=epochs, train_data_loader=batches, network=network,
            optimizer=optimizer, loss_function=F.cross_entropy, epoch_length=len(batches), inferer=SimpleInferer(),
        )  # fmt: skip
        self.images, self.labels, self.positions = images, labels, positions
        self.generator, self.lr_scheduler = generator, lr_scheduler
        self.position_weight, self.reconstruction_weight = position_weight, reconstruction_weight
        self.history: dict[str, list[float]] = {"loss": [], "accuracy": []}
        self._sums = [0.0, 0, 0]
        self.add_event_handler(Events.EPOCH_STARTED, self._reset_sums)
        self.add_event_handler(Events.EPOCH_COMPLETED, self._record_epoch)

    def _reset_sums(self, engine: FeatureNetTrainer) -> None:
        self._sums = [0.0, 0, 0]

    def _record_epoch(self, engine: FeatureNetTrainer) -> None:
        total, correct, seen = self._sums
        self.history["loss"].append(total / seen)
        self.history["accuracy"].append(correct / seen)

    def _iteration(self, engine: FeatureNetTrainer, idx: torch.Tensor) -> dict:  # type: ignore[override]
        x = augment_batch(engine.images[idx], engine.generator)
        if engine.labels is None:
            x, y = flip_task(x, engine.generator)
        else:
            y = engine.labels[idx].long()
        logits, pos = engine.inferer(x, engine.network)
        loss = F.cross_entropy(logits, y)
        if engine.positions is not None:
            loss = loss + engine.position_weight * F.mse_loss(pos, engine.positions[idx].float())
        if engine.reconstruction_weight > 0:
            loss = loss + engine.reconstruction_weight * F.l1_loss(engine.network.reconstruct(x), x)
        engine.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        engine.optimizer.step()
        engine.lr_scheduler.step()
        engine._sums[0] += loss.item() * len(idx)
        engine._sums[1] += int((logits.argmax(1) == y).sum())
        engine._sums[2] += len(idx)
        return {"loss": loss.detach()}


def train_feature_net(
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    num_classes: int | None = None,
    epochs: int = 60,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    feature_dim: int = 128,
    channels: Sequence[int] = (16, 32, 64, 128),
    position_weight: float = 1.0,
    reconstruction_weight: float = 5.0,
) -> tuple[BrainFeatureNet, dict[str, Any]]:
    """Trains a :class:`BrainFeatureNet` with :class:`FeatureNetTrainer` (CPU-friendly); returns it frozen, in eval.

    Loss: cross-entropy on ``labels`` (or on the self-supervised flip task without labels) plus
    ``position_weight`` x MSE on ``positions`` (normalised slice positions in [0, 1]) when given, plus
    ``reconstruction_weight`` x L1 between the (augmented) input and its reconstruction from the feature vector.
    AdamW with a one-cycle schedule.

    Args:
        images: ``(N, C, *spatial)`` training images in [0, 1].
        labels: ``(N,)`` class labels or ``None``.
        positions: ``(N,)`` positions in [0, 1] or ``None``.
        num_classes: number of classes (default: ``labels.max() + 1``; 4 for the flip task).
        epochs: passes over the data.
        batch_size: batch size.
        lr: AdamW learning rate (one-cycle schedule).
        seed: seed of initialisation, batches and augmentation.
        feature_dim: feature size.
        channels: encoder channels.
        position_weight: weight of the position loss.
        reconstruction_weight: weight of the reconstruction loss (0: no decoder is built).

    Returns:
        ``(network, history)``; history has per-epoch ``loss``, ``accuracy`` (training) and ``seconds``.
    """
    if images.dim() < 4:
        raise BrainVQInputError("images", f"expected (N, C, *spatial), got shape {tuple(images.shape)}")
    n = images.shape[0]
    if n < 2:
        raise BrainVQInputError("images", "need at least 2 training images for the feature network")
    if labels is not None and labels.shape != (n,):
        raise BrainVQInputError("labels", f"expected shape ({n},), got {tuple(labels.shape)}")
    if positions is not None and positions.shape != (n,):
        raise BrainVQInputError("positions", f"expected shape ({n},), got {tuple(positions.shape)}")
    if num_classes is None:
        num_classes = 4 if labels is None else int(labels.max()) + 1
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    image_size = tuple(images.shape[2:]) if reconstruction_weight > 0 else None
    net = BrainFeatureNet(images.dim() - 2, images.shape[1], num_classes, feature_dim, channels, image_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((n + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15)
    start = time.time()
    net.train()
    trainer = FeatureNetTrainer(
        net, opt, sched, images.float(), labels, positions, batch_size, epochs, gen, position_weight,
        reconstruction_weight,
    )  # fmt: skip
    trainer.run()
    history: dict[str, Any] = dict(trainer.history)
    history["seconds"] = round(time.time() - start, 2)
    history["task"] = "flip (self-supervised)" if labels is None else "class"
    history["position"] = positions is not None
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, history

"""TensorBoard handlers: reconstruction grids, prior sample grids, codebook usage and projector, learning rate.

Each takes a shared ``torch.utils.tensorboard.SummaryWriter`` (as MONAI's TensorBoard handlers do), so a bundle
writes one run under ``output_dir``. ``step_transform`` maps the attached engine to the global step, e.g. the
trainer's epoch for handlers attached to the evaluator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.networks import eval_mode
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from brainvq_monai.inferers.sampling import sample_codes
from brainvq_monai.networks.nets.vqvae import codebook_embeddings
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.visualize.grids import tile_grid

__all__ = [
    "LossTensorBoardHandler",
    "ReconstructionGridHandler",
    "PriorSampleGridHandler",
    "CodebookTensorBoardHandler",
    "LearningRateTensorBoardHandler",
]


def _epoch(engine: Engine) -> int:
    return int(engine.state.epoch)


class _TensorBoardHandler:
    """Common attach/step logic: runs ``_write`` at ``event`` of the engine it is attached to."""

    event = Events.EPOCH_COMPLETED

    def __init__(
        self, summary_writer: SummaryWriter, step_transform: Callable[[Engine], int] = _epoch, interval: int = 1
    ) -> None:
        if int(interval) < 1:
            raise ValueError(f"interval: must be >= 1, got {interval}")
        self.writer = summary_writer
        self.step_transform = step_transform
        self.interval = int(interval)
        self._calls = 0

    def attach(self, engine: Engine) -> None:
        """Attaches the handler to ``engine``.

        Args:
            engine: an Ignite engine.
        """
        engine.add_event_handler(self.event, self)

    def __call__(self, engine: Engine) -> None:
        self._calls += 1
        if (self._calls - 1) % self.interval:  # the first event, then every ``interval``-th
            return
        self._write(engine, int(self.step_transform(engine)))
        self.writer.flush()

    def _write(self, engine: Engine, step: int) -> None:
        raise NotImplementedError


class ReconstructionGridHandler(_TensorBoardHandler):
    """Writes an ``input | reconstruction | |error|`` grid of the first images of each evaluation epoch.

    Args:
        summary_writer: shared TensorBoard writer.
        max_images: number of images (grid rows).
        tag: TensorBoard image tag.
        step_transform: engine -> global step (default: its epoch).
    """

    def __init__(
        self,
        summary_writer: SummaryWriter,
        max_images: int = 8,
        tag: str = "reconstruction",
        step_transform: Callable[[Engine], int] = _epoch,
    ) -> None:
        super().__init__(summary_writer, step_transform)
        self.max_images = max_images
        self.tag = tag
        self._rows: list[list[torch.Tensor]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self._rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        super().attach(engine)

    def _collect(self, engine: Engine) -> None:
        if len(self._rows) >= self.max_images:
            return
        images, recon = engine.state.output["image"], engine.state.output["pred"]
        for x, y in zip(images[: self.max_images - len(self._rows)], recon):
            x, y = x.detach().float().cpu(), y.detach().float().cpu()
            self._rows.append([x, y, (x - y).abs()])

    def _write(self, engine: Engine, step: int) -> None:
        if self._rows:
            self.writer.add_image(self.tag, tile_grid(self._rows), step, dataformats="HW")


class PriorSampleGridHandler(_TensorBoardHandler):
    """Samples the prior, decodes with the VQ-VAE and writes a grid: one row per class when conditional.

    Args:
        summary_writer: shared TensorBoard writer.
        vqvae: the (trained, frozen) VQ-VAE used to decode codes.
        prior: the prior being trained.
        latent_shape: spatial shape of the code maps.
        samples_per_row: samples per class (per row).
        temperature: sampling temperature.
        seed: seed of the sampler (the same each epoch, so grids are comparable across epochs).
        class_names: names of the classes (rows, in label order), written once as a text note.
        tag: TensorBoard image tag.
        step_transform: engine -> global step.
        interval: write at the first and then every ``interval``-th event (sampling a long code map takes
            seconds on a CPU: with validation every epoch, a grid every epoch would cost more than the validation).
    """

    def __init__(
        self,
        summary_writer: SummaryWriter,
        vqvae: torch.nn.Module,
        prior: torch.nn.Module,
        latent_shape: Sequence[int],
        samples_per_row: int = 6,
        temperature: float = 1.0,
        seed: int = 0,
        class_names: Sequence[str] | None = None,
        tag: str = "prior_samples",
        step_transform: Callable[[Engine], int] = _epoch,
        interval: int = 1,
    ) -> None:
        super().__init__(summary_writer, step_transform, interval)
        self.vqvae, self.prior = vqvae, prior
        self.latent_shape = tuple(latent_shape)
        self.samples_per_row = samples_per_row
        self.temperature = temperature
        self.seed = seed
        self.class_names = list(class_names) if class_names is not None else None
        self.tag = tag
        self._described = False

    @torch.no_grad()
    def _write(self, engine: Engine, step: int) -> None:
        device = next(self.prior.parameters()).device
        num_classes = getattr(self.prior, "num_classes", None)
        classes: list[int | None] = list(range(num_classes)) if num_classes else [None]
        rows = []
        with eval_mode(self.prior, self.vqvae):  # both networks get back the mode they were in
            for c in classes:
                gen = torch.Generator(device=device).manual_seed(self.seed)
                labels = None if c is None else torch.full((self.samples_per_row,), c, dtype=torch.long)
                codes = sample_codes(
                    self.prior, self.samples_per_row, self.latent_shape, labels, self.temperature, generator=gen
                )
                images = self.vqvae.decode_samples(codes.to(device)).float().clamp(0, 1).cpu()
                rows.append(list(images))
        if self.class_names and not self._described:
            self.writer.add_text(self.tag, "rows: " + ", ".join(self.class_names), step)
            self._described = True
        self.writer.add_image(self.tag, tile_grid(rows), step, dataformats="HW")


class CodebookTensorBoardHandler(_TensorBoardHandler):
    """Codebook usage histogram (code index distribution over the epoch) and codebook embeddings in the projector.

    Args:
        summary_writer: shared TensorBoard writer.
        network: the VQ-VAE (``BrainVQVAE``, MONAI ``VQVAE``, or either wrapped in DDP) whose codebook is shown; or
        codebook: a callable returning the ``(K, D)`` codebook (exactly one of ``network`` and ``codebook``).
        output_transform: engine output -> code indices.
        projector_interval: write the projector embedding at step 1 and every this many steps (0: never).
        tag: tag prefix.
        step_transform: engine -> global step.
    """

    def __init__(
        self,
        summary_writer: SummaryWriter,
        network: nn.Module | None = None,
        codebook: Callable[[], torch.Tensor] | None = None,
        output_transform: Callable = lambda out: out["indices"],
        projector_interval: int = 1,
        tag: str = "codebook",
        step_transform: Callable[[Engine], int] = _epoch,
    ) -> None:
        super().__init__(summary_writer, step_transform)
        if (network is None) == (codebook is None):
            raise BrainVQInputError("CodebookTensorBoardHandler", "give exactly one of 'network' and 'codebook'")
        self.codebook = codebook if codebook is not None else (lambda: codebook_embeddings(network))
        self.output_transform = output_transform
        self.projector_interval = projector_interval
        self.tag = tag
        self._counts: torch.Tensor | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        super().attach(engine)

    def _reset(self, engine: Engine) -> None:
        self._counts = None

    def _collect(self, engine: Engine) -> None:
        idx = torch.as_tensor(self.output_transform(engine.state.output)).detach().reshape(-1).long().cpu()
        num = int(self.codebook().shape[0])
        counts = torch.bincount(idx, minlength=num)
        self._counts = counts if self._counts is None else self._counts + counts

    def _write(self, engine: Engine, step: int) -> None:
        if self._counts is None:
            return
        counts = self._counts.double()
        num = counts.numel()
        edges = np.arange(num + 1, dtype=np.float64) - 0.5
        idx = np.arange(num, dtype=np.float64)
        self.writer.add_histogram_raw(
            f"{self.tag}/usage",
            min=0.0,
            max=float(num - 1),
            num=float(counts.sum()),
            sum=float((counts.numpy() * idx).sum()),
            sum_squares=float((counts.numpy() * idx**2).sum()),
            bucket_limits=edges[1:].tolist(),
            bucket_counts=counts.tolist(),
            global_step=step,
        )
        self.writer.add_scalar(f"{self.tag}/dead_codes", float((counts == 0).sum()), step)
        if self.projector_interval and (step == 1 or step % self.projector_interval == 0):
            weights = self.codebook().detach().float().cpu()
            meta = [f"code {i} (n={int(c)})" for i, c in enumerate(counts.tolist())]
            self.writer.add_embedding(weights, metadata=meta, global_step=step, tag=self.tag)


class LearningRateTensorBoardHandler(_TensorBoardHandler):
    """Writes the learning rate of each parameter group at every epoch end.

    Args:
        summary_writer: shared TensorBoard writer.
        optimizer: the optimizer whose learning rate is logged.
        tag: scalar tag (``"lr"``; ``"lr/group{i}"`` for further groups).
        step_transform: engine -> global step.
    """

    def __init__(
        self,
        summary_writer: SummaryWriter,
        optimizer: torch.optim.Optimizer,
        tag: str = "lr",
        step_transform: Callable[[Engine], int] = _epoch,
    ) -> None:
        super().__init__(summary_writer, step_transform)
        self.optimizer = optimizer
        self.tag = tag

    def _write(self, engine: Engine, step: int) -> None:
        for i, group in enumerate(self.optimizer.param_groups):
            self.writer.add_scalar(self.tag if i == 0 else f"{self.tag}/group{i}", float(group["lr"]), step)


class LossTensorBoardHandler:
    """Per-iteration losses to TensorBoard without a device synchronisation at every iteration.

    MONAI's ``TensorBoardStatsHandler`` turns each iteration's loss into a Python float when it writes it, which makes
    the host wait for the GPU at every step. This handler keeps the detached loss tensors of each iteration on their
    device and fetches them in one copy every ``flush_every`` iterations and at the end of every epoch, then writes
    every iteration's value at its own global step: the same curve, one synchronisation per ``flush_every`` steps.
    Tags are the output's keys (``loss``, ``recon_loss``, ...), as ``TensorBoardStatsHandler`` writes a dict, plus the
    output entries an engine names in its ``logged_scalars`` attribute (the DCGAN trainer's ``d_real``/``d_fake``).

    Args:
        summary_writer: shared TensorBoard writer.
        output_transform: ``engine.state.output`` -> ``{tag: scalar tensor}`` (default: every scalar ``*loss``
            entry; floats are accepted too).
        flush_every: iterations between fetches (>= 1).
    """

    def __init__(
        self,
        summary_writer: SummaryWriter,
        output_transform: Callable[[dict], dict[str, torch.Tensor | float]] | None = None,
        flush_every: int = 10,
    ) -> None:
        if int(flush_every) < 1:
            raise ValueError(f"flush_every: must be >= 1, got {flush_every}")
        self.writer = summary_writer
        self.output_transform = output_transform or _loss_tensors
        self.flush_every = int(flush_every)
        self._pending: list[tuple[int, dict[str, torch.Tensor]]] = []

    def attach(self, engine: Engine) -> None:
        """Attaches the handler to ``engine`` (iteration, epoch and run completion).

        Args:
            engine: an Ignite engine.
        """
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.record)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.flush)
        engine.add_event_handler(Events.COMPLETED, self.flush)

    def record(self, engine: Engine) -> None:
        """Keeps this iteration's losses (detached, on their device); flushes every ``flush_every`` iterations.

        Args:
            engine: the engine.
        """
        output = engine.state.output
        scalars = dict(self.output_transform(output))
        scalars.update({k: output[k] for k in getattr(engine, "logged_scalars", ()) if k in output})
        values = {str(k): torch.as_tensor(v).detach().reshape(()) for k, v in scalars.items()}
        if values:
            self._pending.append((int(engine.state.iteration), values))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self, engine: Engine | None = None) -> None:
        """Fetches the pending losses in one copy and writes them at their iterations.

        Args:
            engine: unused (Ignite passes it).
        """
        if not self._pending:
            return
        entries = [(tag, step, value) for step, values in self._pending for tag, value in sorted(values.items())]
        device = entries[0][2].device
        fetched = torch.stack([value.float().to(device) for _, _, value in entries]).cpu().tolist()  # one copy
        for (tag, step, _), value in zip(entries, fetched):
            self.writer.add_scalar(tag, value, step)
        self._pending.clear()
        self.writer.flush()


def _loss_tensors(output: dict) -> dict[str, torch.Tensor]:
    return {
        k: v
        for k, v in output.items()
        if str(k).endswith("loss") and isinstance(v, (torch.Tensor, float, int)) and torch.as_tensor(v).numel() == 1
    }

"""VQ-VAE with a collapse-resistant codebook, built on :class:`monai.networks.nets.VQVAE`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.utils.checkpoint
from monai.networks.layers import Act
from monai.networks.nets import VQVAE
from torch import nn

from brainvq_monai.networks._jit import jit_unused
from brainvq_monai.networks.layers.quantizer import RobustEMAQuantizer, RobustVectorQuantizer
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.settings import as_bool, json_ready
from brainvq_monai.utils.state import unwrap_module

__all__ = ["BrainVQVAE", "ReconstructionWrapper", "codebook_embeddings"]


class BrainVQVAE(VQVAE):
    """MONAI's ``VQVAE`` (Tudosiu et al. 2022) with :class:`RobustEMAQuantizer` as its codebook.

    Same constructor as :class:`monai.networks.nets.VQVAE` (``decay`` defaults to 0.99 instead of 0.5) plus the
    quantizer options below; same parameter and buffer names, so MONAI ``VQVAE`` state dicts load with
    ``strict=True`` (the extra ``initialized`` / ``num_updates`` buffers are filled, and the loaded codebook is not
    re-initialised from data). ``forward -> (reconstruction, quantization_loss)``, ``encode``, ``quantize``,
    ``decode``, ``index_quantize``, ``decode_samples``, ``encode_stage_2_inputs`` and ``decode_stage_2_outputs`` keep
    MONAI's behaviour, except that ``index_quantize`` never updates the codebook (MONAI's does in training mode).
    In eval mode it scripts with ``torch.jit.script`` (``monai.bundle ckpt_export``'s default), giving the same
    outputs; the codebook updates and ``use_checkpointing`` are training-only and not compiled.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: number of input channels.
        out_channels: number of output channels.
        channels: channels at each level.
        num_res_layers: residual layers at each level.
        num_res_channels: channels of the residual layers at each level.
        downsample_parameters: per level ``(stride, kernel_size, dilation, padding)``, or one tuple for all levels.
        upsample_parameters: per level ``(stride, kernel_size, dilation, padding, output_padding)``, or one tuple.
        num_embeddings: codebook size ``K``.
        embedding_dim: latent channels.
        embedding_init: random codebook init, ``"normal"`` or ``"kaiming_uniform"``.
        commitment_cost: commitment loss weight.
        decay: EMA decay. Defaults to 0.99.
        epsilon: Laplace smoothing of the EMA cluster sizes.
        dropout: dropout ratio.
        act: activation type and arguments.
        output_act: activation type and arguments of the output.
        ddp_sync: synchronise the codebook across processes.
        use_checkpointing: activation checkpointing of every encoder and decoder block (MONAI's ``VQVAE``
            checkpoints the encoder and the decoder as two whole units, which still holds all activations of one of
            them during its backward; per block, only block outputs are kept). Only when gradients are enabled.
        init: data-based codebook init on the first training batch: ``"kmeans"``, ``"sample"`` or ``"none"``.
        dead_code_threshold: codes with EMA cluster size (assignments per update) below this are restarted.
        restart_every: dead-code restart period in training steps; 0 disables restarts.
        kmeans_iters: Lloyd iterations of the k-means init.
        init_max_samples: encoder outputs (all ranks together) used by the init.
        restart_noise: relative noise added to re-seeded codes.
        freeze_codebook: never update the codebook.
        codebook_seed: seed for init / restart sampling; ``None`` uses torch's global generator.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (96, 96, 192),
        num_res_layers: int = 3,
        num_res_channels: Sequence[int] | int = (96, 96, 192),
        downsample_parameters: Sequence[tuple[int, int, int, int]] | tuple[int, int, int, int] = (
            (2, 4, 1, 1),
            (2, 4, 1, 1),
            (2, 4, 1, 1),
        ),
        upsample_parameters: Sequence[tuple[int, int, int, int, int]] | tuple[int, int, int, int, int] = (
            (2, 4, 1, 1, 0),
            (2, 4, 1, 1, 0),
            (2, 4, 1, 1, 0),
        ),
        num_embeddings: int = 32,
        embedding_dim: int = 64,
        embedding_init: str = "normal",
        commitment_cost: float = 0.25,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        dropout: float = 0.0,
        act: tuple | str | None = Act.RELU,
        output_act: tuple | str | None = None,
        ddp_sync: bool = True,
        use_checkpointing: bool = False,
        init: str = "kmeans",
        dead_code_threshold: float = 1.0,
        restart_every: int = 10,
        kmeans_iters: int = 10,
        init_max_samples: int = 20000,
        restart_noise: float = 0.01,
        freeze_codebook: bool = False,
        codebook_seed: int | None = None,
    ) -> None:
        init_args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if spatial_dims not in (2, 3):
            raise BrainVQInputError("spatial_dims", f"must be 2 or 3, got {spatial_dims}")
        use_checkpointing = as_bool(use_checkpointing, "use_checkpointing")
        try:
            super().__init__(
                spatial_dims=spatial_dims,
                in_channels=in_channels,
                out_channels=out_channels,
                channels=channels,
                num_res_layers=num_res_layers,
                num_res_channels=num_res_channels,
                downsample_parameters=downsample_parameters,
                upsample_parameters=upsample_parameters,
                num_embeddings=num_embeddings,
                embedding_dim=embedding_dim,
                embedding_init=embedding_init,
                commitment_cost=commitment_cost,
                decay=decay,
                epsilon=epsilon,
                dropout=dropout,
                act=act,
                output_act=output_act,
                ddp_sync=ddp_sync,
                use_checkpointing=use_checkpointing,
            )
        except ValueError as err:
            if isinstance(err, BrainVQInputError):
                raise
            raise BrainVQInputError("BrainVQVAE", str(err)) from err
        self.quantizer = RobustVectorQuantizer(
            RobustEMAQuantizer(
                spatial_dims=spatial_dims,
                num_embeddings=num_embeddings,
                embedding_dim=embedding_dim,
                commitment_cost=commitment_cost,
                decay=decay,
                epsilon=epsilon,
                embedding_init=embedding_init,
                ddp_sync=ddp_sync,
                init=init,
                kmeans_iters=kmeans_iters,
                init_max_samples=init_max_samples,
                dead_code_threshold=dead_code_threshold,
                restart_every=restart_every,
                restart_noise=restart_noise,
                freeze_codebook=freeze_codebook,
                seed=codebook_seed,
            )
        )
        #: the constructor's arguments, so a run can record the network it trained (``record_run_settings``)
        self.init_args = json_ready({**init_args, "use_checkpointing": use_checkpointing})

    #: submodules that ``torch.compile`` should compile (the quantizer keeps host-side state and stays eager)
    compile_submodules: tuple[str, ...] = ("encoder", "decoder")
    #: properties TorchScript leaves out: ``ema_quantizer``'s annotated class does not match the scripted quantizer's
    #: type once differently configured quantizers have been scripted in the same process
    __jit_unused_properties__ = ["ema_quantizer"]
    #: plain-Python attributes TorchScript does not compile
    __jit_ignored_attributes__ = ["init_args"]

    def _checkpointing(self) -> bool:
        """Whether ``encode``/``decode`` checkpoint their blocks: with gradients enabled, never in TorchScript."""
        return not torch.jit.is_scripting() and self.use_checkpointing and torch.is_grad_enabled()

    @jit_unused
    def _run_checkpointed(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``module(x)`` with each of its ``blocks`` checkpointed (TorchScript has no ``torch.utils.checkpoint``)."""
        for block in module.blocks:
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        return x

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder output ``[B, embedding_dim, *latent_shape]`` (block-wise checkpointed with ``use_checkpointing``).

        Args:
            images: ``[B, in_channels, *spatial]``.

        Returns:
            the continuous encodings.
        """
        if self._checkpointing():
            return self._run_checkpointed(self.encoder, images)
        return self.encoder(images)

    def decode(self, quantizations: torch.Tensor) -> torch.Tensor:
        """Decoder output for quantized encodings (block-wise checkpointed with ``use_checkpointing``).

        Args:
            quantizations: ``[B, embedding_dim, *latent_shape]``.

        Returns:
            the reconstruction ``[B, out_channels, *spatial]``.
        """
        if self._checkpointing():
            return self._run_checkpointed(self.decoder, quantizations)
        return self.decoder(quantizations)

    @property
    def ema_quantizer(self) -> RobustEMAQuantizer:
        """The codebook module (usage statistics ``last_counts``, ``last_codes_used``, ``last_perplexity``)."""
        return self.quantizer.quantizer

    def forward(
        self, images: torch.Tensor, return_indices: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """MONAI's ``VQVAE.forward``: ``(reconstruction, quantization_loss)``, plus the code indices on request.

        ``return_indices=True`` is :meth:`forward_with_indices` through ``forward``, so trainers get the indices
        through wrappers such as ``DistributedDataParallel`` that only route ``forward``.

        Args:
            images: ``[B, in_channels, *spatial]``.
            return_indices: also return the ``[B, *latent_shape]`` code indices.

        Returns:
            ``(reconstruction, quantization_loss)`` or ``(reconstruction, quantization_loss, indices)``.
        """
        reconstruction, loss, indices = self.forward_with_indices(images)
        if return_indices:
            return reconstruction, loss, indices
        return reconstruction, loss

    def forward_with_indices(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One encoder pass returning the reconstruction, the quantization loss and the code indices.

        Args:
            images: ``[B, in_channels, *spatial]``.

        Returns:
            ``(reconstruction, quantization_loss, indices)`` with indices ``[B, *latent_shape]`` in ``[0, K)``.
        """
        quantized, loss, indices = self.quantizer.forward_with_indices(self.encode(images))
        return self.decode(quantized), loss, indices

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial shape of the code map for images of spatial shape ``image_shape``.

        Args:
            image_shape: spatial shape (``spatial_dims`` integers), e.g. ``(128, 128)``.

        Returns:
            the latent spatial shape, e.g. ``(32, 32)`` for two stride-2 ``(2, 4, 1, 1)`` downsamplings.
        """
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != self.spatial_dims:
            raise BrainVQInputError(
                "image_shape", f"expected {self.spatial_dims} spatial sizes, got {tuple(image_shape)}"
            )
        for stride, kernel, dilation, padding in self.encoder.downsample_parameters:
            shape = tuple((s + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1 for s in shape)
            if min(shape) < 1:
                raise BrainVQInputError("image_shape", f"{tuple(image_shape)} is too small for the downsamplings")
        return shape  # the final 3x3 convolution (stride 1, padding 1) keeps the size


class ReconstructionWrapper(nn.Module):
    """Tensor in, reconstruction out: a VQ-VAE as a plain ``nn.Module`` for ``monai.bundle`` checks and export.

    Use in eval mode (``verify_net_in_out`` and ``torch.jit.trace`` exports do); in training mode the wrapped
    network's quantizer updates its codebook as usual.

    Args:
        network: a MONAI ``VQVAE`` or :class:`BrainVQVAE` (anything whose ``forward`` returns
            ``(reconstruction, ...)``).
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``images`` ``[B, C, *spatial]``.

        Args:
            images: input batch.

        Returns:
            the reconstruction, same batch and spatial shape (for compatible image sizes).
        """
        reconstruction = self.network(images)[0]
        return reconstruction


def codebook_embeddings(network: nn.Module) -> torch.Tensor:
    """The ``(K, D)`` codebook of a VQ-VAE: a :class:`BrainVQVAE` or MONAI ``VQVAE``, also inside DDP/compile wrappers.

    Args:
        network: the VQ-VAE.

    Returns:
        the codebook embeddings (a view of the parameters/buffers; detach before logging).

    Raises:
        BrainVQInputError: ``network`` has no MONAI-style ``quantizer.quantizer.embedding``.
    """
    net = unwrap_module(network)
    quantizer = getattr(getattr(net, "quantizer", None), "quantizer", None)
    embedding = getattr(quantizer, "embedding", None)
    if not isinstance(embedding, nn.Embedding):
        raise BrainVQInputError(
            "network", f"{type(net).__name__} has no VQ-VAE codebook (quantizer.quantizer.embedding)"
        )
    return embedding.weight

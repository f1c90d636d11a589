"""Gated PixelCNN prior over 2D VQ-VAE code maps, with a fast exact incremental decoder.

Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders"):

* a **vertical stack** whose features at row ``r`` see the input rows ``<= r`` (kernel ``(k//2 + 1, k)`` over a
  top-padded input); it feeds the horizontal stack only through a **down-shift** by one row and a ``1x1`` conv, so
  the horizontal stack at row ``r`` receives information from rows ``< r`` only;
* a **horizontal stack** with kernel ``(1, k//2)`` over the strictly-left pixels in the first layer and ``(1, k//2 + 1)``
  over the left-including pixels in the later layers, with residual connections (not in the first layer, whose input
  is the current token itself);
* gated activations ``tanh(a) * sigmoid(b)`` and, when ``num_classes`` is set, a learned per-class bias added to the
  gate pre-activations of both stacks in every layer.

Masking is done by padding and cropped (rectangular) kernels, never by masked weights, so there is no blind spot
and the network works for any ``H, W >= 1`` (square or not). Positions are generated in raster (row-major) order.

The incremental decoder caches, per layer, the last ``k//2 + 1`` rows of the vertical-stack input and the last
``k//2 + 1`` columns of the horizontal-stack input in the current row (Ramachandran et al. 2017, "Fast Generation
for Convolutional Autoregressive Models"). Each step then costs one column per layer, plus one row per layer at
the start of each row, instead of a full pass over the map; its logits equal :meth:`GatedPixelCNN.forward`.

3D code maps are not supported: use :class:`brainvq_monai.networks.nets.transformer_prior.TransformerPrior`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from brainvq_monai.networks.nets.prior import AutoregressivePrior, IncrementalDecoder
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["GatedPixelCNN"]


def _gate(pre: torch.Tensor) -> torch.Tensor:
    """Gated activation ``tanh(a) * sigmoid(b)`` over the two channel halves of ``pre``."""
    a, b = pre.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def _push(window: torch.Tensor, new: torch.Tensor, dim: int) -> torch.Tensor:
    """Drops the oldest slice of ``window`` along ``dim`` and appends ``new`` (a sliding window)."""
    return torch.cat([window.narrow(dim, 1, window.shape[dim] - 1), new], dim=dim)


class _GatedLayer(nn.Module):
    """One gated layer: a vertical and a horizontal stack step, shared by the full and incremental passes.

    Args:
        in_channels: channels of both stack inputs.
        channels: channels of both stack outputs.
        kernel_size: odd spatial kernel size ``k``.
        first: first layer (horizontal kernel strictly left of the current pixel, no residual).
        num_classes: number of class labels for the per-class gate biases, or ``None``.
        dropout: dropout probability on the gated horizontal features.
    """

    def __init__(
        self, in_channels: int, channels: int, kernel_size: int, first: bool, num_classes: int | None, dropout: float
    ) -> None:
        super().__init__()
        self.pad = kernel_size // 2
        self.shift = 1 if first else 0
        self.residual = not first
        self.conv_v = nn.Conv2d(in_channels, 2 * channels, (self.pad + 1, kernel_size))
        self.conv_h = nn.Conv2d(in_channels, 2 * channels, (1, self.pad + 1 - self.shift))
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.res = nn.Conv2d(channels, channels, 1)
        self.drop = nn.Dropout(dropout)
        self.class_v: nn.Embedding | None = None
        self.class_h: nn.Embedding | None = None
        if num_classes is not None:
            self.class_v = nn.Embedding(num_classes, 2 * channels)
            self.class_h = nn.Embedding(num_classes, 2 * channels)
            nn.init.normal_(self.class_v.weight, std=0.1)
            nn.init.normal_(self.class_h.weight, std=0.1)

    def conditions(self, labels: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Per-class gate biases ``(B, 2C, 1, 1)`` for both stacks, or ``(None, None)``."""
        if labels is None or self.class_v is None or self.class_h is None:
            return None, None
        return self.class_v(labels)[..., None, None], self.class_h(labels)[..., None, None]

    def forward_v(self, v_window: torch.Tensor, cond_v: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Vertical stack step.

        Args:
            v_window: ``(B, C_in, R + k//2, W)`` vertical input with ``k//2`` rows of context above the ``R`` output
                rows (zeros above the top of the map).
            cond_v: optional per-class bias ``(B, 2C, 1, 1)``.

        Returns:
            the pre-activation ``(B, 2C, R, W)`` (fed, down-shifted, to the horizontal stack) and the gated output.
        """
        pre = self.conv_v(F.pad(v_window, (self.pad, self.pad)))
        return pre, _gate(pre if cond_v is None else pre + cond_v)

    def forward_h(
        self, h_window: torch.Tensor, link_in: torch.Tensor, h_center: torch.Tensor, cond_h: torch.Tensor | None
    ) -> torch.Tensor:
        """Horizontal stack step.

        Args:
            h_window: ``(B, C_in, R, Q + k//2 - shift)`` horizontal input: for each of the ``Q`` output columns, the
                ``k//2`` columns to its left (zeros left of the map) and, after the first layer, the column itself.
            link_in: ``(B, 2C, R, Q)`` down-shifted vertical pre-activations at the output columns.
            h_center: ``(B, C_in, R, Q)`` horizontal input at the output columns (for the residual connection).
            cond_h: optional per-class bias ``(B, 2C, 1, 1)``.

        Returns:
            ``(B, C, R, Q)`` horizontal output.
        """
        pre = self.conv_h(h_window) + self.link(link_in)
        out = self.res(self.drop(_gate(pre if cond_h is None else pre + cond_h)))
        return out + h_center if self.residual else out


class GatedPixelCNN(AutoregressivePrior):
    """Gated PixelCNN prior (no blind spot, optional class conditioning) over 2D code maps ``(B, H, W)``.

    Args:
        spatial_dims: must be 2; ``3`` raises a ``ValueError`` (GatedPixelCNN is 2D only; use ``TransformerPrior``
            for 3D latents).
        num_embeddings: codebook size ``K`` (number of code symbols); required.
        num_classes: number of class labels for conditioning (e.g. 2 for NC/AD), or ``None``.
        channels: feature channels of both stacks.
        num_layers: number of gated layers.
        kernel_size: odd spatial kernel size ``k >= 3``; each layer grows the receptive field by ``k // 2``.
        embedding_dim: size of the token embedding; defaults to ``channels``.
        dropout: dropout probability on the gated horizontal features (training only; sample in ``eval()`` mode).
        output_channels: hidden channels of the ``1x1`` output head; defaults to ``2 * channels``.

    Example::

        prior = GatedPixelCNN(num_embeddings=64, num_classes=2, channels=64, num_layers=8)
        logits = prior(codes, class_labels)  # (B, 64, H, W), causal in raster order
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        num_embeddings: int | None = None,
        num_classes: int | None = None,
        channels: int = 64,
        num_layers: int = 8,
        kernel_size: int = 5,
        embedding_dim: int | None = None,
        dropout: float = 0.0,
        output_channels: int | None = None,
    ) -> None:
        if spatial_dims == 3:
            raise BrainVQInputError("spatial_dims", "GatedPixelCNN is 2D only; use TransformerPrior for 3D latents")
        if num_embeddings is None:
            raise BrainVQInputError("num_embeddings", "is required (the codebook size K)")
        super().__init__(spatial_dims, num_embeddings, num_classes)
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise BrainVQInputError("kernel_size", f"must be odd and >= 3, got {kernel_size}")
        if num_layers < 1:
            raise BrainVQInputError("num_layers", f"must be >= 1, got {num_layers}")
        if channels < 1:
            raise BrainVQInputError("channels", f"must be >= 1, got {channels}")
        if not 0.0 <= dropout < 1.0:
            raise BrainVQInputError("dropout", f"must lie in [0, 1), got {dropout}")
        embedding_dim = channels if embedding_dim is None else int(embedding_dim)
        output_channels = 2 * channels if output_channels is None else int(output_channels)
        self.channels = channels
        self.kernel_size = kernel_size
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        self.layers = nn.ModuleList(
            _GatedLayer(embedding_dim if i == 0 else channels, channels, kernel_size, i == 0, num_classes, dropout)
            for i in range(num_layers)
        )
        last = self.layers[-1]
        if last.class_v is not None:  # the last vertical gate feeds nothing: frozen, so DDP waits for no gradient
            last.class_v.requires_grad_(False)
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, output_channels, 1),
            nn.ReLU(),
            nn.Conv2d(output_channels, num_embeddings, 1),
        )

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Token embedding ``(B, E, H, W)`` of an integer code map ``(B, H, W)``."""
        if codes.dim() != 3:
            raise ValueError(f"codes: expected a (B, H, W) code map, got shape {list(codes.shape)}")
        return self.embedding(codes.long()).permute(0, 3, 1, 2)

    def _conditions(self, labels: torch.Tensor | None) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
        return [layer.conditions(labels) for layer in self.layers]

    def forward_embedded(self, x_emb: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Causal logits ``(B, K, H, W)`` from an embedded code map ``(B, E, H, W)`` (differentiable input).

        Args:
            x_emb: embedded code map, e.g. from :meth:`embed`.
            class_labels: optional ``(B,)`` labels in ``[0, num_classes)``.
        """
        labels = self.check_class_labels(class_labels, x_emb.shape[0])
        labels = None if labels is None else labels.to(x_emb.device)
        height, width = x_emb.shape[-2], x_emb.shape[-1]
        v = h = x_emb
        for layer in self.layers:
            cond_v, cond_h = layer.conditions(labels)
            v_pre, v_next = layer.forward_v(F.pad(v, (0, 0, layer.pad, 0)), cond_v)
            link_in = F.pad(v_pre, (0, 0, 1, 0))[:, :, :height]  # down-shift: row r sees vertical rows < r
            h_window = F.pad(h, (layer.pad, 0))[..., : width + layer.pad - layer.shift]
            h = layer.forward_h(h_window, link_in, h, cond_h)
            v = v_next
        return self.head(h)

    def code_logits(self, codes: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Causal logits ``(B, K, H, W)`` for a code map ``(B, H, W)`` (raster order); ``forward`` also takes
        ``(B, 1, H, W)`` (see :meth:`AutoregressivePrior.forward`).

        Args:
            codes: ``(B, H, W)`` integer codes in ``[0, K)``.
            class_labels: optional ``(B,)`` labels in ``[0, num_classes)``.

        Returns:
            ``(B, K, H, W)`` logits.
        """
        return self.forward_embedded(self.embed(codes), class_labels)

    def generation_order(self, spatial_shape: Sequence[int]) -> torch.Tensor:
        """Raster (row-major) order: ``arange(H * W)``."""
        height, width = _check_shape(spatial_shape)
        return torch.arange(height * width)

    def incremental_decoder(
        self, batch_size: int, spatial_shape: Sequence[int], class_labels: torch.Tensor | None = None
    ) -> IncrementalDecoder:
        """A fresh row/column-caching decoder whose logits equal :meth:`forward` at every position."""
        return _PixelCNNDecoder(self, batch_size, spatial_shape, class_labels)


def _check_shape(spatial_shape: Sequence[int]) -> tuple[int, int]:
    shape = tuple(int(s) for s in spatial_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"spatial_shape: GatedPixelCNN needs (H, W) with H, W >= 1, got {tuple(spatial_shape)}")
    return shape[0], shape[1]


class _PixelCNNDecoder(IncrementalDecoder):
    """Exact incremental decoder of a :class:`GatedPixelCNN` (per-layer row and column caches).

    At the start of row ``r`` the vertical stack of row ``r - 1`` is computed once (one row per layer, from cached
    windows of the last ``k//2 + 1`` input rows), giving the down-shifted link input of row ``r``. At each column the
    horizontal stack advances by one column per layer from cached windows of the last ``k//2 + 1`` columns.
    Zero-initialised windows reproduce exactly the zero padding of the full forward at the top and left borders.
    """

    def __init__(
        self, net: GatedPixelCNN, batch_size: int, spatial_shape: Sequence[int], class_labels: torch.Tensor | None
    ) -> None:
        self.net = net
        self.height, self.width = _check_shape(spatial_shape)
        param = next(net.parameters())
        labels = net.check_class_labels(class_labels, batch_size)
        self.conds = net._conditions(None if labels is None else labels.to(param.device))
        zeros = param.new_zeros
        # per layer: vertical input rows [r - 1 - k//2, r - 1] and horizontal input columns of the current row
        self.v_windows = [zeros(batch_size, lay.conv_v.in_channels, lay.pad + 1, self.width) for lay in net.layers]
        self.h_widths = [lay.pad + 1 - lay.shift for lay in net.layers]
        self.h_windows: list[torch.Tensor] = []
        self.v_pres: list[torch.Tensor] = []
        self.v_pre_shape = (batch_size, 2 * net.channels, 1, self.width)

    def _start_row(self, codes: torch.Tensor, row: int) -> None:
        """Computes the link inputs of ``row`` (vertical stack of ``row - 1``) and resets the column windows."""
        layers = self.net.layers
        if row == 0:
            v_pres = [self.v_windows[0].new_zeros(self.v_pre_shape)] * len(layers)  # the down-shift's zero row
        else:
            prev = codes[:, (row - 1) * self.width : row * self.width].unsqueeze(1)
            v_new = self.net.embed(prev)
            v_pres = []
            for i, (layer, (cond_v, _)) in enumerate(zip(layers, self.conds)):
                self.v_windows[i] = _push(self.v_windows[i], v_new, dim=2)
                v_pre, v_new = layer.forward_v(self.v_windows[i], cond_v)
                v_pres.append(v_pre)
        self.v_pres = v_pres
        self.h_windows = [
            self.v_windows[i].new_zeros(*self.v_windows[i].shape[:2], 1, w) for i, w in enumerate(self.h_widths)
        ]

    def step(self, codes: torch.Tensor, t: int) -> torch.Tensor:
        row, col = divmod(int(t), self.width)
        if row >= self.height:
            raise ValueError(f"t: must be < {self.height * self.width}, got {t}")
        if col == 0:
            self._start_row(codes, row)
            h_new = None
        else:
            h_new = self.net.embed(codes[:, row * self.width + col - 1].view(-1, 1, 1))
        for i, (layer, (_, cond_h)) in enumerate(zip(self.net.layers, self.conds)):
            if h_new is not None:
                self.h_windows[i] = _push(self.h_windows[i], h_new, dim=3)
            window = self.h_windows[i]
            h_new = layer.forward_h(window, self.v_pres[i][..., col : col + 1], window[..., -1:], cond_h)
        return self.net.head(h_new).flatten(1)

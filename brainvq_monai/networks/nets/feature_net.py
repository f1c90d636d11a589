"""A small in-house feature network for generation metrics (FID, KID, precision/recall) that works offline.

No ImageNet / RadImageNet weights can be downloaded, so the features come from a small CNN trained on the *training*
split only: AD/NC classification (or, without labels, which of four flips was applied: a self-supervised signal),
regression of the normalised slice position when items carry one, and reconstruction of the image from the feature
vector itself (an autoencoder bottleneck). The last term is what makes the features measure *realism*: a network
trained only to classify or to locate a slice maps implausible images (stripes, noise, smears) close to real ones
as long as their coarse layout matches (measured: FID of such samples 1.1x the real-vs-real floor with class-only
features), whereas features that must reconstruct the image carry its texture and anatomy. The trained network is
frozen and saved with
:data:`FEATURE_NET_VERSION` and a hash of the training items (:func:`items_hash`): metrics computed with different
feature networks are not comparable, and :func:`load_feature_net` refuses a file of another version or data.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.blocks import Convolution
from torch import nn
from torch.nn import functional as F

from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.io import atomic_torch_save, load_torch_file

__all__ = [
    "FEATURE_NET_VERSION",
    "BrainFeatureNet",
    "items_hash",
    "augment_batch",
    "save_feature_net",
    "load_feature_net",
    "flip_task",
]

# bump when the architecture, the training recipe or the targets change: features (and metrics) then change too
FEATURE_NET_VERSION = "brainvq-featnet-2"


class BrainFeatureNet(nn.Module):
    """Strided CNN -> global average pool -> ``feature_dim`` embedding, with a class head and a position head.

    One code path for 2D and 3D (``spatial_dims``). ``features(x)`` is the embedding used by the metrics. With
    ``image_size``, a decoder reconstructs the image from the embedding alone (:meth:`reconstruct`).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: classes of the classification head (AD/NC, or 4 flips for the self-supervised task).
        feature_dim: size of the feature vector.
        channels: channels of the stride-2 convolution blocks.
        image_size: spatial size of the training images (each divisible by ``2 ** len(channels)``), for the
            reconstruction decoder; ``None``: no decoder.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        feature_dim: int = 128,
        channels: Sequence[int] = (16, 32, 64, 128),
        image_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise BrainVQInputError("spatial_dims", f"must be 2 or 3, got {spatial_dims}")
        if num_classes < 1 or feature_dim < 1 or not channels:
            raise BrainVQInputError("BrainFeatureNet", "num_classes, feature_dim and channels must be positive")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.channels = tuple(int(c) for c in channels)
        blocks: list[nn.Module] = []
        prev = in_channels
        for ch in self.channels:
            blocks.append(
                Convolution(
                    spatial_dims,
                    prev,
                    ch,
                    strides=2,
                    kernel_size=3,
                    act="GELU",
                    norm=("group", {"num_groups": min(8, ch)}),
                )
            )
            blocks.append(
                Convolution(spatial_dims, ch, ch, kernel_size=3, act="GELU", norm=("group", {"num_groups": min(8, ch)}))
            )
            prev = ch
        self.encoder = nn.Sequential(*blocks)
        self.embed = nn.Linear(prev, feature_dim)
        self.class_head = nn.Linear(feature_dim, num_classes)
        self.position_head = nn.Linear(feature_dim, 1)
        self.image_size = None if image_size is None else tuple(int(v) for v in image_size)
        self.decoder: nn.Module | None = None
        if self.image_size is not None:
            factor = 2 ** len(self.channels)
            if len(self.image_size) != spatial_dims or any(v % factor or v < factor for v in self.image_size):
                raise BrainVQInputError(
                    "image_size", f"{self.image_size}: expected {spatial_dims} sizes divisible by {factor}"
                )
            self._seed_shape = (prev, *(v // factor for v in self.image_size))
            ups: list[nn.Module] = [nn.Linear(feature_dim, int(torch.Size(self._seed_shape).numel())), nn.GELU()]
            ups.append(nn.Unflatten(1, self._seed_shape))
            for ch_in, ch_out in zip(self.channels[::-1], (*self.channels[-2::-1], 8)):
                ups.append(
                    Convolution(
                        spatial_dims, ch_in, ch_out, strides=2, kernel_size=3, is_transposed=True, act="GELU",
                        norm=("group", {"num_groups": min(8, ch_out)}),
                    )
                )  # fmt: skip
            ups.append(Convolution(spatial_dims, 8, in_channels, kernel_size=3, conv_only=True))
            self.decoder = nn.Sequential(*ups)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature vectors ``(B, feature_dim)`` of images ``(B, C, *spatial)``."""
        h = self.encoder(x)
        return self.embed(h.flatten(2).mean(-1))

    def stage_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every resolution stage of the encoder (for perceptual losses), finest first.

        Args:
            x: ``(B, C, *spatial)``.

        Returns:
            ``len(channels)`` tensors ``(B, channels[i], *spatial / 2 ** (i + 1))``.
        """
        out = []
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i % 2 == 1:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(class_logits (B, num_classes), slice_position (B,))`` (position in [0, 1])."""
        f = F.gelu(self.features(x))
        return self.class_head(f), torch.sigmoid(self.position_head(f)).squeeze(-1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The image decoded from its feature vector alone (``image_size`` must have been given).

        Args:
            x: ``(B, C, *image_size)``.

        Returns:
            ``(B, C, *image_size)``.
        """
        if self.decoder is None:
            raise BrainVQInputError("BrainFeatureNet", "built without image_size: no reconstruction decoder")
        return self.decoder(self.features(x))

    def config(self) -> dict[str, Any]:
        """Constructor arguments (saved with the weights)."""
        return {
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "feature_dim": self.feature_dim,
            "channels": list(self.channels),
            "image_size": None if self.image_size is None else list(self.image_size),
        }


def items_hash(items: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None) -> str:
    """SHA-256 of the training items (image path, slice, label) and settings that shape the features.

    Args:
        items: datalist items used for training.
        extra: further settings (spatial size, seed, ...), hashed as sorted JSON.

    Returns:
        hex digest.
    """
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.get('image')}|{it.get('slice', '')}|{it.get('label', '')}\n".encode())
    h.update(json.dumps(dict(extra or {}), sort_keys=True, default=str).encode())
    return h.hexdigest()


def flip_task(images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-supervised targets when there are no labels: flips of the first two spatial axes (4 classes).

    Args:
        images: ``(B, C, *spatial)``.
        generator: random generator.

    Returns:
        ``(flipped images, flip class in [0, 4))``.
    """
    target = torch.randint(0, 4, (images.shape[0],), generator=generator)
    out = images.clone()
    for i, t in enumerate(target.tolist()):
        dims = [d for bit, d in ((1, 2), (2, 3)) if t & bit]
        if dims:
            out[i] = torch.flip(images[i : i + 1], dims)[0]
    return out, target


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small label-preserving changes: shift by up to 3 voxels, contrast/brightness jitter, noise."""
    b = x.shape[0]
    shifts = torch.randint(-3, 4, (x.dim() - 2,), generator=generator).tolist()
    x = torch.roll(x, shifts=shifts, dims=tuple(range(2, x.dim())))
    view = (b,) + (1,) * (x.dim() - 1)
    scale = 1 + 0.1 * (torch.rand(view, generator=generator) * 2 - 1)
    offset = 0.05 * (torch.rand(view, generator=generator) * 2 - 1)
    return (x * scale + offset + 0.01 * torch.randn(x.shape, generator=generator)).clamp(0, 1)


def save_feature_net(
    net: BrainFeatureNet, path: str | os.PathLike, data_hash: str, meta: Mapping[str, Any] | None = None
) -> None:
    """Saves weights, constructor arguments, :data:`FEATURE_NET_VERSION`, the training-data hash and ``meta``.

    Args:
        net: the trained network.
        path: destination ``.pt`` file (parent folders are created).
        data_hash: :func:`items_hash` of the training items.
        meta: extra JSON-able information (training history, split name, ...).
    """
    atomic_torch_save(
        {
            "version": FEATURE_NET_VERSION,
            "data_hash": data_hash,
            "config": net.config(),
            "state_dict": net.state_dict(),
            "meta": json.loads(json.dumps(dict(meta or {}), default=str)),
        },
        os.fspath(path),
    )


def load_feature_net(
    path: str | os.PathLike, data_hash: str | None = None, map_location: str | torch.device = "cpu"
) -> tuple[BrainFeatureNet, dict[str, Any]]:
    """Loads a network saved by :func:`save_feature_net`, frozen and in eval mode.

    Args:
        path: the ``.pt`` file.
        data_hash: when given, the file must have been trained on data with this hash.
        map_location: device.

    Returns:
        ``(network, info)`` with ``info`` = ``version``, ``data_hash``, ``config``, ``meta``.

    Raises:
        BrainVQInputError: missing file, other version, or other training data.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BrainVQInputError(path, "feature network file not found")
    saved = load_torch_file(path, "feature network", map_location=map_location)
    if not isinstance(saved, Mapping) or "state_dict" not in saved:
        raise BrainVQInputError(path, "not a feature network file (no state_dict)")
    if saved.get("version") != FEATURE_NET_VERSION:
        raise BrainVQInputError(
            path, f"feature network version {saved.get('version')!r}, expected {FEATURE_NET_VERSION!r}; retrain it"
        )
    if data_hash is not None and saved.get("data_hash") != data_hash:
        raise BrainVQInputError(path, "feature network was trained on other data (training-items hash differs)")
    net = BrainFeatureNet(**saved["config"])
    net.load_state_dict(saved["state_dict"])
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    info = {k: saved.get(k) for k in ("version", "data_hash", "config", "meta")}
    return net, info

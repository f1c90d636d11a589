"""Loading a state dict into a network with a one-line error that says which setting differs.

``torch.nn.Module.load_state_dict`` reports a mismatch as a multi-line list starting with "Error(s) in loading
state_dict for BrainVQVAE:". Here the first mismatching tensor is named with both shapes and the config ID that most
likely differs between the run that wrote the checkpoint and the current config (``num_embeddings``,
``autoencoder_def#channels``, ``network_def#transformer#attn_layers_dim``, ...).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["load_state_dict_checked", "mismatch_hint", "unwrap_module"]

# (tensor name pattern, {differing dim: hint}); "kernel": a spatial kernel dim differs; None: any other difference
_HINTS: list[tuple[str, dict[Any, str]]] = [
    (r"quantizer.*(embedding\.weight|ema_w)$", {0: "num_embeddings", 1: "embedding_dim"}),
    (r"quantizer.*ema_cluster_size$", {0: "num_embeddings"}),
    (
        r"(token_embeddings\.weight|to_logits\.weight|to_logits\.bias)$",
        {0: "num_embeddings or conditional (the class count)", 1: "{id}#transformer#attn_layers_dim"},
    ),
    (r"position_embeddings", {0: "spatial_size (the code map size)", 1: "{id}#transformer#attn_layers_dim"}),
    (r"sequence_ordering$", {0: "spatial_size (the code map size)"}),
    (r"transformer\.blocks\.", {None: "{id}#transformer#attn_layers_dim"}),
    (r"^embedding\.weight$", {0: "num_embeddings", 1: "{id}#pixelcnn#channels"}),
    (r"class_[vh]\.weight$", {0: "conditional (the class count)", 1: "{id}#pixelcnn#channels"}),
    (r"^(layers|head)\.", {"kernel": "{id}#pixelcnn#kernel_size", None: "{id}#pixelcnn#channels"}),
    (
        r"^(encoder|decoder)\.",
        {
            "kernel": "{id}#downsample_parameters / {id}#upsample_parameters",
            None: "{id}#channels, {id}#num_res_channels or embedding_dim",
        },
    ),
]
_MISSING_HINTS: list[tuple[str, str]] = [
    (r"^(encoder|decoder)\.", "{id}#channels (number of levels) or {id}#num_res_layers"),
    (r"transformer\.blocks\.", "{id}#transformer#attn_layers_depth"),
    (r"^layers\.", "{id}#pixelcnn#num_layers"),
    (r"class_|class_emb|class_tokens", "conditional (a conditional and an unconditional prior)"),
]


def unwrap_module(module: Any) -> Any:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` (or ``module`` itself).

    Args:
        module: a module, possibly wrapped.

    Returns:
        the wrapped module.
    """
    wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    return module.module if isinstance(module, wrappers) else module


def mismatch_hint(name: str, saved: tuple[int, ...], current: tuple[int, ...], config_id: str = "network_def") -> str:
    """The config ID to change when tensor ``name`` has shape ``saved`` in a checkpoint and ``current`` in the network.

    Args:
        name: the tensor's state-dict key.
        saved: its shape in the checkpoint.
        current: its shape in the network.
        config_id: the config ID of the network definition (``network_def``, ``autoencoder_def``, ``prior_def``, ...).

    Returns:
        a short hint such as ``"num_embeddings"``.
    """
    if len(saved) != len(current):
        return f"spatial_dims of {config_id} (the checkpoint is for another number of dimensions)"
    differing = [i for i, (a, b) in enumerate(zip(saved, current)) if a != b]
    for pattern, hints in _HINTS:
        if re.search(pattern, name):
            for dim in differing:
                if dim in hints:
                    return hints[dim].format(id=config_id)
            if "kernel" in hints and any(d >= 2 for d in differing):
                return hints["kernel"].format(id=config_id)
            if None in hints:
                return hints[None].format(id=config_id)
    return config_id


def _missing_hint(names: list[str], config_id: str) -> str:
    for pattern, hint in _MISSING_HINTS:
        if any(re.search(pattern, n) for n in names):
            return hint.format(id=config_id)
    return config_id


def load_state_dict_checked(
    module: torch.nn.Module,
    state: Mapping[str, Any],
    source: str | os.PathLike,
    config_id: str = "network_def",
) -> None:
    """``module.load_state_dict(state)`` (strict), with a one-line error naming the first mismatching tensor, both
    shapes and the config ID to change.

    Args:
        module: the network (a ``DistributedDataParallel`` wrapper is looked through).
        state: the state dict from the checkpoint.
        source: the checkpoint file, for the message.
        config_id: the config ID of the network definition, for the hint.

    Raises:
        BrainVQInputError: the checkpoint does not match the network.
    """
    module = unwrap_module(module)
    if not isinstance(state, Mapping) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise BrainVQInputError(source, f"holds no state dict of tensors for {config_id}")
    own = module.state_dict()
    mismatched = [
        key
        for key, tensor in state.items()
        if key in own and isinstance(tensor, torch.Tensor) and tuple(tensor.shape) != tuple(own[key].shape)
    ]
    if mismatched:  # a weight tells more (both of its sizes) than a buffer or a bias
        key = next((k for k in mismatched if k.endswith("weight")), mismatched[0])
        saved, current = tuple(state[key].shape), tuple(own[key].shape)
        raise BrainVQInputError(
            source,
            f"tensor '{key}' has shape {list(saved)} in the checkpoint but {list(current)} in the network built "
            f"from the config: set {mismatch_hint(key, saved, current, config_id)} as in the run that wrote it",
        )
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            names = missing or unexpected
            more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
            what = (
                f"the checkpoint has no tensor '{names[0]}'{more} that the network built from the config has"
                if missing
                else f"the checkpoint has tensor '{names[0]}'{more} that the network built from the config lacks"
            )
            hint = _missing_hint(names, config_id)
            raise BrainVQInputError(
                source, f"{what}: the architecture differs; set {hint} as in the run that wrote it"
            ) from None
        first = str(err).strip().splitlines()[-1].strip()  # e.g. dtype or extra-state problems
        raise BrainVQInputError(source, f"does not match the network built from {config_id}: {first}") from None

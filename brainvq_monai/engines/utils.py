"""Small pieces shared by the trainers and evaluators: compilation, unwrapping, VQ-VAE forward, loss logging.

``autocast`` and ``to_channels_last`` (from :mod:`brainvq_monai.utils.tensors`) and ``prepare_images`` and
``prepare_codes`` (from :mod:`brainvq_monai.data.batch`) are re-exported here, where the engines import them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer

# general helpers that live in lower layers (inferers and transforms use them too), re-exported for the engines
from brainvq_monai.data.batch import prepare_codes, prepare_images
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.tensors import autocast, to_channels_last

__all__ = [
    "autocast",
    "compile_network",
    "engine_inferer",
    "lower_is_better",
    "output_losses",
    "prepare_codes",
    "prepare_images",
    "to_channels_last",
    "unwrap",
]


def compile_network(network: torch.nn.Module, **compile_kwargs: Any) -> torch.nn.Module:
    """Compiles ``network`` with ``torch.compile`` in place (``nn.Module.compile``), keeping its ``state_dict`` keys.

    ``torch.compile(network)`` returns a wrapper whose checkpoint keys gain an ``_orig_mod.`` prefix, which breaks
    ``CheckpointLoader``/``load_network`` and MONAI checkpoints; compiling in place does not. A network that names
    ``compile_submodules`` (e.g. :class:`~brainvq_monai.networks.nets.BrainVQVAE`: encoder and decoder, so the
    quantizer with its host-side state stays eager) gets those compiled instead of its whole forward.

    Args:
        network: the network (possibly ``DistributedDataParallel``-wrapped).
        compile_kwargs: arguments of ``torch.compile`` (``mode``, ``backend``, ``dynamic``, ...).

    Returns:
        ``network`` itself.
    """
    inner = unwrap(network)
    names = getattr(inner, "compile_submodules", None)
    for module in [getattr(inner, name) for name in names] if names else [inner]:
        module.compile(**compile_kwargs)
    return network


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel``, else ``network`` itself.

    Args:
        network: a module, possibly wrapped.

    Returns:
        the wrapped module, for attribute access (``num_classes``, ``generation_order``, ...).
    """
    if isinstance(network, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        return network.module
    return network


def engine_inferer(inferer: Inferer | None, expected: type[Inferer] | None, engine: str) -> Inferer:
    """The inferer an engine calls for its forward passes: ``inferer`` checked against ``expected``, or a new one.

    Args:
        inferer: the inferer given to the engine (a bundle's ``train#inferer``, ``validate#inferer``, ``inferer``),
            or ``None``.
        expected: the inferer class the engine calls (a subclass is accepted), built when ``inferer`` is ``None``;
            ``None``: any inferer, MONAI's ``SimpleInferer`` by default.
        engine: the engine's class name, for the error message.

    Returns:
        ``inferer``, or a new instance of ``expected`` (``SimpleInferer``) when it is ``None``.

    Raises:
        BrainVQInputError: ``inferer`` is not an instance of ``expected``.
    """
    if expected is None:
        return inferer if inferer is not None else SimpleInferer()
    if inferer is None:
        return expected()
    if not isinstance(inferer, expected):
        got = f"{type(inferer).__module__}.{type(inferer).__qualname__}"
        want = f"brainvq_monai.inferers.{expected.__qualname__}"
        raise BrainVQInputError("inferer", f"{engine} needs a {want} (or a subclass), got {got}")
    return inferer


def output_losses(output: Mapping) -> dict[str, float]:
    """Every scalar ``*loss`` entry of an engine output, as floats: the ``output_transform`` for loss logging.

    Args:
        output: ``engine.state.output``.

    Returns:
        ``{name: value}`` for each key ending in ``"loss"``.
    """
    return {k: float(v) for k, v in output.items() if str(k).endswith("loss") and torch.as_tensor(v).numel() == 1}


def lower_is_better(current: float, prev: float) -> bool:
    """``metric_cmp_fn`` for error-like key metrics (NLL): MONAI engines start ``best_metric`` at -1.

    Args:
        current: the new key metric value (non-negative).
        prev: the best value so far (-1 before the first).

    Returns:
        whether ``current`` is a new best.
    """
    return prev < 0 or current < prev

"""TorchScript helpers shared by the networks (scripting for ``monai.bundle ckpt_export``)."""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["jit_unused"]

_F = TypeVar("_F", bound=Callable[..., Any])


def jit_unused(fn: _F) -> _F:
    """``torch.jit.unused`` for a method of a module written with ``from __future__ import annotations``.

    TorchScript compiles an unused method as a stub that raises, typed from ``inspect.signature``; postponed (string)
    annotations are not resolved there (``Unknown type annotation: 'torch.Tensor'``), nor are argument types it cannot
    express (an ``nn.Module`` argument). So the return annotation is resolved here and the arguments are annotated
    ``Any``, as TorchScript itself does in the stub's source. Eager behaviour is unchanged: ``fn`` itself is returned.

    Args:
        fn: a method (possibly wrapped, e.g. by ``torch.no_grad()``) used only outside TorchScript (training).

    Returns:
        ``fn``, marked unused for TorchScript.
    """
    hints = typing.get_type_hints(fn)  # follows ``__wrapped__`` to the defining module's globals
    annotations = {name: Any for name in hints if name != "return"}
    annotations["return"] = hints.get("return", None)
    layer: Any = fn
    while layer is not None:  # ``inspect.signature`` reads the innermost wrapped function
        layer.__annotations__ = dict(annotations)
        layer = getattr(layer, "__wrapped__", None)
    return torch.jit.unused(fn)

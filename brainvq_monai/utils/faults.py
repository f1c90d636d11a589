"""Fault injection for the reliability tests: kill this process at a chosen point, as ``kill -9`` would.

The tests set the environment variable ``BRAINVQ_FAULT`` for a training subprocess; without it every
:func:`fault_point` is a dictionary lookup and nothing else. The value is a comma-separated list of
``point[@name]:n``: the ``n``-th time (1-based, counted per process) the code reaches ``point`` with a ``name`` that
contains ``name``, the process sends itself ``SIGKILL``. The points are

* ``atomic_write``: inside :func:`~brainvq_monai.utils.io.atomic_torch_save` and the other atomic writers, after the
  temporary file is complete and synced and before it replaces the destination;
* ``atomic_write_partial``: at the same place, after cutting the temporary file to half its size (a kill in the middle
  of writing it);
* ``iteration``: at the end of every training iteration (:class:`~brainvq_monai.handlers.TrainingCheckpointHandler`),
  with the name ``"<epoch>:<iteration>"``.

Example: ``BRAINVQ_FAULT="atomic_write@vqvae_last.pt:2"`` kills the run while it writes its second last checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

__all__ = ["FAULT_ENV", "fault_point"]

FAULT_ENV = "BRAINVQ_FAULT"

_counts: dict[tuple[str, str], int] = {}


def _parse(spec: str) -> list[tuple[str, str, int]]:
    rules = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        target, _, count = part.rpartition(":")
        point, _, name = target.partition("@")
        rules.append((point, name, int(count)))
    return rules


def fault_point(point: str, name: str = "", before_kill: Callable[[], None] | None = None) -> None:
    """Kills the process with ``SIGKILL`` when ``BRAINVQ_FAULT`` asks for it here (see the module docstring).

    Args:
        point: the point reached (``"atomic_write"``, ``"atomic_write_partial"``, ``"iteration"``).
        name: what is being done there (a file name, ``"<epoch>:<iteration>"``), matched as a substring.
        before_kill: called just before the kill (e.g. to cut a temporary file short).
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for rule_point, rule_name, count in _parse(spec):
        if rule_point != point or rule_name not in name:
            continue
        key = (rule_point, rule_name)
        _counts[key] = _counts.get(key, 0) + 1
        if _counts[key] == count:
            if before_kill is not None:
                before_kill()
            print(f"brainvq fault injection: SIGKILL at {point} {name}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

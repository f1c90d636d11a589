"""Classifier two-sample test (C2ST): can a small network tell generated images from real ones?

FID and its relatives measure distances in the feature space of a *fixed* network; with no pretrained network allowed
offline, that network is a small CNN trained on a few hundred real slices, and how it ranks implausible samples
depends on details of its training (measured in ``docs/quality.md``). A two-sample classifier asks the question
directly (Lopez-Paz and Oquab, "Revisiting Classifier Two-Sample Tests", ICLR 2017): a classifier is trained to
separate real from generated images, and its ROC AUC on *held-out* real and generated images is the score. 0.5 means
the two sets cannot be told apart; 1.0 means every sample gives itself away (blur, stripes, wrong anatomy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["roc_auc", "classifier_two_sample_test"]


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann-Whitney U, ties counted half).

    Args:
        scores: ``(N,)`` higher = more likely positive.
        labels: ``(N,)`` 0/1.

    Returns:
        the AUC in [0, 1]; ``nan`` when a class is missing.
    """
    s = torch.as_tensor(scores).double().reshape(-1)
    y = torch.as_tensor(labels).reshape(-1).bool()
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).double().sum()
    ties = (pos[:, None] == neg[None, :]).double().sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def _balanced(a: torch.Tensor, b: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n = min(len(a), len(b))
    return a[torch.randperm(len(a), generator=gen)[:n]], b[torch.randperm(len(b), generator=gen)[:n]]


def classifier_two_sample_test(
    real_fit: torch.Tensor,
    fake_fit: torch.Tensor,
    real_eval: torch.Tensor,
    fake_eval: torch.Tensor,
    make_classifier: Callable[[], nn.Module],
    epochs: int = 15,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict[str, Any]:
    """Trains ``make_classifier()`` on real-vs-fake and scores held-out real-vs-fake images.

    Both sets are balanced by random subsampling to the smaller one, so that a majority guess scores 0.5.

    Args:
        real_fit: ``(N, C, *spatial)`` real images to fit on (e.g. a training subset).
        fake_fit: generated images to fit on.
        real_eval: real images to score (not in ``real_fit``; e.g. the test split).
        fake_eval: generated images to score (not in ``fake_fit``).
        make_classifier: builds a fresh network whose ``forward`` returns logits ``(B, 2)`` (or a tuple whose first
            element is).
        epochs: passes over the fitting set.
        batch_size: batch size.
        lr: AdamW learning rate.
        seed: seed of initialisation, subsampling and batches.

    Returns:
        ``{"auc", "accuracy", "num_fit", "num_eval", "epochs"}``: AUC and accuracy on the held-out images.
    """
    for name, x in (("real_fit", real_fit), ("fake_fit", fake_fit), ("real_eval", real_eval), ("fake_eval", fake_eval)):
        if x.dim() < 4 or len(x) < 2:
            raise BrainVQInputError(name, f"expected at least 2 images (N, C, *spatial), got {tuple(x.shape)}")
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    rf, ff = _balanced(real_fit.float(), fake_fit.float(), gen)
    re, fe = _balanced(real_eval.float(), fake_eval.float(), gen)
    x = torch.cat([rf, ff])
    y = torch.cat([torch.zeros(len(rf)), torch.ones(len(ff))]).long()
    net = make_classifier()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    net.train()
    for _ in range(int(epochs)):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            out = net(x[idx])
            loss = F.cross_entropy(out[0] if isinstance(out, tuple) else out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    xe = torch.cat([re, fe])
    ye = torch.cat([torch.zeros(len(re)), torch.ones(len(fe))]).long()
    with torch.no_grad():
        logits = torch.cat([_first(net(xe[i : i + 64])) for i in range(0, len(xe), 64)])
    score = logits[:, 1] - logits[:, 0]
    return {
        "auc": roc_auc(score, ye),
        "accuracy": float(((score > 0).long() == ye).double().mean()),
        "num_fit": int(len(x)),
        "num_eval": int(len(xe)),
        "epochs": int(epochs),
    }


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out

"""Offline generation evaluation of a run folder: feature net, samples, realism / diversity / memorisation metrics.

``brainvq generation-eval --run RUN_DIR`` (:func:`run_generation_eval`) trains (or reuses) the
in-house feature network on the run's *training* split, samples the prior (``num_samples_per_class`` per class, one
seed), scores the samples with :func:`brainvq_monai.metrics.generation.evaluate_generation` against the test split
(with the train-vs-test floor), measures reconstruction SSIM / PSNR inside a brain mask on the test split, prints a
summary table and writes ``RUN_DIR/generation_metrics.json``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from brainvq_monai.engines.feature_trainer import train_feature_net
from brainvq_monai.metrics.generation import (
    bootstrap_ci,
    classification_accuracy,
    evaluate_generation,
    masked_ssim_psnr,
)
from brainvq_monai.networks.nets.feature_net import (
    FEATURE_NET_VERSION,
    BrainFeatureNet,
    items_hash,
    load_feature_net,
    save_feature_net,
)
from brainvq_monai.utils.environment import versions
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.io import atomic_write_json
from brainvq_monai.visualize.generation_tables import format_generation_summary as format_summary

__all__ = [
    "GENERATION_METRICS",
    "FEATURE_NET_FILE",
    "slice_positions",
    "ensure_feature_net",
    "realism_c2st",
    "class_fidelity",
    "sample_run",
    "score_samples",
    "reconstruction_metrics",
    "run_generation_eval",
    "format_summary",
]

GENERATION_METRICS = "generation_metrics.json"
FEATURE_NET_FILE = "models/feature_net.pt"


def slice_positions(items: list[dict[str, Any]], reference: list[dict[str, Any]] | None = None) -> torch.Tensor | None:
    """Slice indices scaled to [0, 1] by the range of ``reference`` (default: ``items``); ``None`` without slices.

    Args:
        items: datalist items with a ``slice`` field.
        reference: items defining the range (the training split).

    Returns:
        ``(N,)`` float positions (clipped to [0, 1]) or ``None``.
    """
    ref = reference if reference is not None else items
    if not items or any(it.get("slice") is None for it in items) or any(it.get("slice") is None for it in ref):
        return None
    lo, hi = min(float(it["slice"]) for it in ref), max(float(it["slice"]) for it in ref)
    if hi <= lo:
        return None
    return torch.tensor([(float(it["slice"]) - lo) / (hi - lo) for it in items]).clamp(0, 1)


def _relative_items(items: list[dict[str, Any]], root: str | None) -> list[dict[str, Any]]:
    out = []
    for it in items:
        image = str(it.get("image"))
        if root and image.startswith(str(root)):
            image = os.path.relpath(image, root)
        out.append({"image": image, "slice": it.get("slice"), "label": it.get("label")})
    return out


def ensure_feature_net(
    run: Any, seed: int = 0, epochs: int = 60, retrain: bool = False, verbose: bool = True
) -> tuple[BrainFeatureNet, dict[str, Any]]:
    """Loads ``run_dir/models/feature_net.pt`` when its version and training-data hash match, else trains and saves it.

    Trained on the run's training split only (AD/NC + slice position, or the self-supervised flip task).

    Args:
        run: :class:`~brainvq_monai.apps.run_loader.RunArtifacts`.
        seed: training seed (part of the hash).
        epochs: training epochs (part of the hash).
        retrain: ignore a saved network.
        verbose: print progress to stderr.

    Returns:
        ``(network, info)``: ``info`` has ``version``, ``data_hash``, ``reused``, ``path`` and training ``meta``.
    """
    items = run.items("training")
    extra = {"spatial_size": list(run.spatial_size), "seed": seed, "epochs": epochs, "version": FEATURE_NET_VERSION}
    data_hash = items_hash(_relative_items(items, run.datalist.get("root")), extra)
    path = Path(run.run_dir) / FEATURE_NET_FILE
    if path.is_file() and not retrain:
        try:
            net, info = load_feature_net(path, data_hash)
            return net, {**info, "reused": True, "path": str(path)}
        except BrainVQInputError as err:
            _say(f"retraining the feature net ({err})", verbose)
    images, labels = run.load_images("training")
    positions = slice_positions(items)
    _say(f"training the feature net on {len(images)} training images ({epochs} epochs)", verbose)
    net, history = train_feature_net(images, labels, positions, epochs=epochs, seed=seed)
    meta = {
        "split": "training",
        "num_images": len(images),
        "task": history["task"],
        "position_target": history["position"],
        "epochs": epochs,
        "seed": seed,
        "seconds": history["seconds"],
        "final_loss": history["loss"][-1],
        "first_loss": history["loss"][0],
        "train_accuracy": history["accuracy"][-1],
    }
    save_feature_net(net, path, data_hash, meta)
    return net, {
        "version": FEATURE_NET_VERSION,
        "data_hash": data_hash,
        "meta": meta,
        "reused": False,
        "path": str(path),
    }


def _feature_net_check(net: BrainFeatureNet, run: Any, images: torch.Tensor, labels: torch.Tensor | None) -> dict:
    """Held-out sanity check of the feature net on the test split: class accuracy and slice-position MAE."""
    with torch.no_grad():
        logits, pos = net(images)
    out: dict[str, Any] = {"split": "test", "num_images": len(images)}
    if labels is not None and net.num_classes == len(run.class_names or {}) and net.num_classes > 1:
        out["class_accuracy"] = float((logits.argmax(1) == labels).double().mean())
    positions = slice_positions(run.items("test"), run.items("training"))
    if positions is not None:
        out["position_mae"] = float((pos - positions).abs().mean())
    return out


def _class_logits(net: BrainFeatureNet, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([net(images[s : s + batch_size])[0] for s in range(0, len(images), batch_size)])


def class_fidelity(
    net: BrainFeatureNet,
    run: Any,
    test_images: torch.Tensor,
    test_labels: torch.Tensor | None,
    samples: torch.Tensor,
    sample_labels: torch.Tensor | None,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Does a conditional sample look like its class? The feature net's class head scores real and generated images.

    Its accuracy on the real test slices (unseen subjects; CI resampled by subject) says how well the classifier
    separates the classes at all; its accuracy on the conditional samples (against the class they were drawn for)
    says how much of that the prior reproduces. A faithful prior gives about the same accuracy on both.

    Args:
        net: the trained feature net (class head over the run's classes).
        run: :class:`~brainvq_monai.apps.run_loader.RunArtifacts`.
        test_images: ``(N, 1, *spatial)`` real test images.
        test_labels: their classes.
        samples: ``(M, 1, *spatial)`` samples.
        sample_labels: the classes they were drawn for.
        seed: bootstrap seed.

    Returns:
        ``{"real_test", "samples", "gap"}`` (see :func:`~brainvq_monai.metrics.generation.classification_accuracy`),
        or ``None`` for an unconditional prior or a feature net without the run's class head.
    """
    if not run.conditional or test_labels is None or sample_labels is None:
        return None
    if net.num_classes != len(run.class_names):
        return None
    subjects = [str(it.get("subject", i)) for i, it in enumerate(run.items("test"))]
    real = classification_accuracy(_class_logits(net, test_images), test_labels, subjects, run.class_names, seed)
    gen = classification_accuracy(_class_logits(net, samples), sample_labels, None, run.class_names, seed)
    return {
        "classifier": "class head of the in-house feature net (trained on the training split only)",
        "real_test": real,
        "samples": gen,
        "gap": real["accuracy"] - gen["accuracy"],
    }


def realism_c2st(
    samples: torch.Tensor,
    sample_labels: torch.Tensor | None,
    train_images: torch.Tensor,
    test_images: torch.Tensor,
    heldout_images: torch.Tensor | None,
    heldout_subjects: Sequence[str] | None = None,
    seed: int = 0,
    epochs: int = 15,
) -> dict[str, Any]:
    """Classifier two-sample test of the samples, and the same test of real held-out images (the floor).

    The samples are split in two halves (alternating, so classes stay balanced): a fresh small CNN learns to tell
    training images from the first half and is scored (ROC AUC) on test images against the second half. The floor
    runs the same procedure with real held-out (validation) images in place of the samples: what "indistinguishable"
    looks like at these sample sizes. The held-out images are split by subject (half the subjects to fit, the other
    half to score): slices of one subject in both halves would let the classifier recognise the subject.

    Args:
        samples: ``(M, 1, *spatial)`` generated images.
        sample_labels: their classes (unused but for ordering), or ``None``.
        train_images: real images to fit on.
        test_images: real images to score on.
        heldout_images: real images in neither set (the floor), or ``None``.
        heldout_subjects: their subject ids (one per image), for the split; ``None``: alternate images.
        seed: seed.
        epochs: training epochs of each classifier.

    Returns:
        ``{"generated": {...}, "real_floor": {...} or None}`` (see
        :func:`~brainvq_monai.metrics.two_sample.classifier_two_sample_test`).
    """
    from brainvq_monai.metrics.two_sample import classifier_two_sample_test

    def make() -> BrainFeatureNet:
        return BrainFeatureNet(samples.dim() - 2, samples.shape[1], num_classes=2, feature_dim=64)

    order = torch.argsort(sample_labels, stable=True) if sample_labels is not None else torch.arange(len(samples))
    ordered = samples[order]
    out: dict[str, Any] = {
        "generated": classifier_two_sample_test(
            train_images, ordered[0::2], test_images, ordered[1::2], make, epochs=epochs, seed=seed
        ),
        "real_floor": None,
        "what": "ROC AUC of a CNN telling real from generated on held-out images; 0.5 = indistinguishable",
    }
    if heldout_images is not None and len(heldout_images) >= 4:
        if heldout_subjects is not None and len(set(heldout_subjects)) >= 2:
            ids = sorted(set(heldout_subjects))
            first = {s for i, s in enumerate(ids) if i % 2 == 0}
            in_first = torch.tensor([s in first for s in heldout_subjects])
            fit, score = heldout_images[in_first], heldout_images[~in_first]
        else:
            fit, score = heldout_images[0::2], heldout_images[1::2]
        out["real_floor"] = classifier_two_sample_test(
            train_images, fit, test_images, score, make, epochs=epochs, seed=seed
        )
        out["real_floor"]["split"] = "by subject" if heldout_subjects is not None else "alternate images"
    return out


def sample_run(
    run: Any,
    num_samples_per_class: int,
    seed: int = 0,
    temperature: float = 1.0,
    batch_size: int = 64,
    top_k: int | None = None,
    top_p: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Samples the run's prior: ``num_samples_per_class`` per class (or in total when unconditional).

    Args:
        run: :class:`~brainvq_monai.apps.run_loader.RunArtifacts`.
        num_samples_per_class: samples per class.
        seed: sampling seed (one generator for all batches).
        temperature: sampling temperature.
        batch_size: samples drawn at once.
        top_k: optional top-k truncation.
        top_p: optional nucleus truncation.

    Returns:
        ``(images (M, 1, *spatial) clamped to [0, 1] on the CPU, labels (M,) or None)``.
    """
    from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer

    if num_samples_per_class < 1:
        raise BrainVQInputError("num_samples_per_class", f"must be >= 1, got {num_samples_per_class}")
    inferer = AutoregressivePriorInferer()
    device = next(run.prior.parameters()).device
    gen = torch.Generator(device=device).manual_seed(int(seed))
    classes: list[int | None] = sorted(run.class_names) if run.conditional else [None]
    images, labels = [], []
    for c in classes:
        done = 0
        while done < num_samples_per_class:
            n = min(batch_size, num_samples_per_class - done)
            lab = None if c is None else torch.full((n,), c, dtype=torch.long, device=device)
            x = inferer.sample(
                run.vqvae, run.prior, n, run.latent_shape, lab, temperature, top_k, gen, verbose=False, top_p=top_p
            )
            images.append(x.clamp(0, 1).cpu())
            labels.append(torch.full((n,), -1 if c is None else c, dtype=torch.long))
            done += n
    return torch.cat(images), (torch.cat(labels) if run.conditional else None)


def reconstruction_metrics(
    run: Any, images: torch.Tensor, labels: torch.Tensor | None, seed: int = 0, batch_size: int = 32
) -> dict[str, Any]:
    """Reconstruction SSIM / PSNR of ``images`` inside a brain mask and over the whole image, per class too.

    Args:
        run: :class:`~brainvq_monai.apps.run_loader.RunArtifacts`.
        images: ``(N, 1, *spatial)`` test images.
        labels: ``(N,)`` classes or ``None``.
        seed: bootstrap seed.
        batch_size: VQ-VAE batch size.

    Returns:
        ``{"all": {...}, "<class>": {...}}`` with means, 95% bootstrap CIs of the masked SSIM / PSNR, and counts.
    """
    device = next(run.vqvae.parameters()).device
    recon = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            out = run.vqvae(images[s : s + batch_size].to(device))
            recon.append((out[0] if isinstance(out, (tuple, list)) else out).clamp(0, 1).cpu())
    rec = torch.cat(recon)
    groups = {"all": torch.arange(len(images))}
    if labels is not None:
        for c in sorted(set(labels.tolist())):
            groups[run.class_names.get(c, str(c))] = torch.nonzero(labels == c).flatten()
    out: dict[str, Any] = {}
    for name, idx in groups.items():
        m = masked_ssim_psnr(rec[idx], images[idx])
        out[name] = {
            "num_images": len(idx),
            "ssim_brain": m["ssim"],
            "ssim_brain_ci": list(bootstrap_ci(m["ssim_per_image"], seed=seed)),
            "psnr_brain": m["psnr"],
            "psnr_brain_ci": list(bootstrap_ci(m["psnr_per_image"], seed=seed)),
            "ssim_whole_image": m["ssim_full"],
            "psnr_whole_image": m["psnr_full"],
            "brain_mask_fraction": m["mask_fraction"],
        }
    out["mask"] = "test image > 0.05, dilated by 2 voxels; SSIM window 11 (MONAI SSIMMetric settings)"
    return out


def _load_splits(run: Any) -> dict[str, Any]:
    """Training, test and (when the run has one) validation images, labels and validation subject ids."""
    train_x, train_y = run.load_images("training")
    test_x, test_y = run.load_images("test")
    has_val = bool(run.datalist.get("validation"))
    val_x, val_y = run.load_images("validation") if has_val else (None, None)
    val_subjects = [str(it.get("subject", i)) for i, it in enumerate(run.items("validation"))] if has_val else None
    return {
        "train": (train_x, train_y),
        "test": (test_x, test_y),
        "validation": (val_x, val_y),
        "validation_subjects": val_subjects,
    }


def score_samples(
    run: Any,
    net: BrainFeatureNet,
    data: dict[str, Any],
    samples: torch.Tensor,
    sample_labels: torch.Tensor | None,
    seed: int = 0,
    num_bootstrap: int = 500,
    verbose: bool = True,
) -> dict[str, Any]:
    """Generation metrics, class fidelity and the classifier two-sample test of a run's samples.

    Args:
        run: :class:`~brainvq_monai.apps.run_loader.RunArtifacts`.
        net: the run's feature net (:func:`ensure_feature_net`).
        data: the run's images, as :func:`run_generation_eval` loads them (``train``, ``test``, ``validation``
            pairs of images and labels, ``validation_subjects``).
        samples: ``(M, 1, *spatial)`` samples of the run's prior.
        sample_labels: the classes they were drawn for (``None`` for an unconditional prior).
        seed: seed of subsets, pairs, bootstrap and classifiers.
        num_bootstrap: bootstrap replicates.
        verbose: print progress to stderr.

    Returns:
        ``{"generation", "class_fidelity", "c2st"}``.
    """
    (train_x, train_y), (test_x, test_y), (val_x, val_y) = data["train"], data["test"], data["validation"]
    _say("computing generation metrics", verbose)
    generation = evaluate_generation(
        samples,
        test_x,
        train_x,
        net,
        sample_labels,
        test_y if run.conditional else None,
        train_y if run.conditional else None,
        seed=seed,
        class_names=run.class_names,
        real_heldout=val_x,
        heldout_labels=val_y if run.conditional else None,
        num_bootstrap=num_bootstrap,
    )
    fidelity = class_fidelity(net, run, test_x, test_y, samples, sample_labels, seed)
    _say("classifier two-sample test (real vs generated)", verbose)
    c2st = realism_c2st(samples, sample_labels, train_x, test_x, val_x, data["validation_subjects"], seed)
    return {"generation": generation, "class_fidelity": fidelity, "c2st": c2st}


def _record(
    run: Any, sampling: dict[str, Any], net_info: dict[str, Any], scores: dict[str, Any], recon: dict[str, Any]
) -> dict[str, Any]:
    """The ``generation_metrics.json`` record (without ``seconds``): what ran, with which seeds, and every number."""
    return {
        "run_dir": str(run.run_dir),
        "prior": run.prior_name,
        "conditional": run.conditional,
        "class_names": {str(k): v for k, v in run.class_names.items()},
        "seed": sampling["seed"],
        "sampling": sampling,
        "feature_net": {k: v for k, v in net_info.items() if k != "config"},
        **scores,
        "reconstruction": recon,
        "device": str(next(run.prior.parameters()).device),
        "versions": versions(),
    }


def run_generation_eval(
    run_dir: str | os.PathLike,
    num_samples_per_class: int = 100,
    seed: int = 0,
    temperature: float = 1.0,
    feature_epochs: int = 60,
    num_bootstrap: int = 500,
    retrain_feature_net: bool = False,
    write: bool = True,
    verbose: bool = True,
    top_k: int | None = None,
    top_p: float | None = None,
) -> dict[str, Any]:
    """Evaluates a run folder's generations offline and writes ``run_dir/generation_metrics.json``.

    Args:
        run_dir: a ``brainvq demo`` run folder (see :func:`~brainvq_monai.apps.run_loader.load_run`).
        num_samples_per_class: prior samples per class (in total for an unconditional prior).
        seed: seed of the feature net, the samples, subsets and bootstrap.
        temperature: sampling temperature.
        feature_epochs: feature net training epochs.
        num_bootstrap: bootstrap replicates.
        retrain_feature_net: ignore a saved feature net.
        write: write ``generation_metrics.json``.
        verbose: print progress and the summary table to stderr.
        top_k: optional top-k truncation of the sampling.
        top_p: optional nucleus truncation of the sampling.

    Returns:
        the metrics dict (also written to the JSON file).
    """
    from brainvq_monai.apps.run_loader import load_run

    t = [time.time()]  # after loading, the feature net, sampling, scoring and reconstruction
    torch.manual_seed(seed)
    run = load_run(run_dir)
    data = _load_splits(run)
    t.append(time.time())
    net, net_info = ensure_feature_net(run, seed, feature_epochs, retrain_feature_net, verbose)
    net_info["test_check"] = _feature_net_check(net, run, *data["test"])
    t.append(time.time())
    _say(f"sampling {num_samples_per_class} per class from the {run.prior_name} prior (seed {seed})", verbose)
    samples, sample_y = sample_run(run, num_samples_per_class, seed, temperature, top_k=top_k, top_p=top_p)
    t.append(time.time())
    scores = score_samples(run, net, data, samples, sample_y, seed, num_bootstrap, verbose)
    t.append(time.time())
    recon = reconstruction_metrics(run, *data["test"], seed)
    t.append(time.time())
    sampling = {"num_samples_per_class": num_samples_per_class, "num_samples": len(samples),
                "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed,
                "seconds": round(t[3] - t[2], 2)}  # fmt: skip
    result = _record(run, sampling, net_info, scores, recon)
    steps = ("load", "feature_net", "sampling", "metrics", "reconstruction")
    result["seconds"] = {**{k: round(t[i + 1] - t[i], 2) for i, k in enumerate(steps)}, "total": round(t[-1] - t[0], 2)}
    if write:
        path = Path(run.run_dir) / GENERATION_METRICS
        atomic_write_json(path, result)
        result["file"] = str(path)
    if verbose:
        print(format_summary(result), file=sys.stderr, flush=True)
    return result


def _say(msg: str, verbose: bool = True) -> None:
    if verbose:
        print(f"generation eval: {msg}", file=sys.stderr, flush=True)

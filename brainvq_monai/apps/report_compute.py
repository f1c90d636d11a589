"""Compute stage of ``brainvq report``: numbers and figure arrays of one loaded run, as plain data.

Each function takes a loaded run (:class:`~brainvq_monai.apps.run_loader.RunArtifacts`), tensors or files of the run
folder and returns JSON-able dicts; those that feed a figure also save its source arrays (``.npz``, 2D display planes:
a volume's central axial slice) for the render stage (:mod:`brainvq_monai.visualize.report`), which draws from them
without the models. :func:`brainvq_monai.apps.report.compute_report` assembles the results into ``report.json``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.visualize.grids import display_plane

__all__ = [
    "read_json",
    "read_tensorboard_scalars",
    "save_curves",
    "encode_images",
    "codebook_usage",
    "pick_per_class",
    "reconstruction_panel",
    "codebook_projection",
    "read_sample_files",
    "sample_panel",
]

_SAMPLE_FILE = re.compile(r"^sample_(?P<tag>.+)_(?P<num>\d+)\.(png|nii|nii\.gz)$")


def read_tensorboard_scalars(log_dir: str | os.PathLike) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Every scalar series of every TensorBoard run under ``log_dir``.

    Args:
        log_dir: a folder of TensorBoard runs (``tensorboard/vqvae``, ``tensorboard/prior_transformer``, ...), or
            one run folder.

    Returns:
        ``{run name: {tag: (steps, values)}}``, runs named by their folder relative to ``log_dir`` (``"."`` for
        event files directly in it); event files of one run are merged, a later value replacing an earlier one
        at the same step.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = Path(os.fspath(log_dir))
    runs: dict[str, dict[str, dict[int, float]]] = {}
    for event_file in sorted(root.rglob("events.out.tfevents.*")):
        name = str(event_file.parent.relative_to(root))
        acc = EventAccumulator(
            str(event_file), size_guidance={"scalars": 0, "images": 1, "histograms": 1, "tensors": 1}
        )
        acc.Reload()
        series = runs.setdefault(name, {})
        for tag in acc.Tags().get("scalars", []):
            points = series.setdefault(tag, {})
            for event in acc.Scalars(tag):
                points[int(event.step)] = float(event.value)
    return {
        name: {
            tag: (np.array(sorted(p), dtype=np.int64), np.array([p[s] for s in sorted(p)], dtype=np.float64))
            for tag, p in series.items()
        }
        for name, series in runs.items()
    }


def save_curves(scalars: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], path: Path) -> dict[str, Any]:
    """Saves TensorBoard scalars as arrays ``s<i>_steps`` / ``s<i>_values`` of one ``.npz`` file.

    Args:
        scalars: ``{run name: {tag: (steps, values)}}`` (:func:`read_tensorboard_scalars`).
        path: the ``.npz`` file to write.

    Returns:
        ``{"series": [{"run", "tag", "key", "points", "last_step", "last_value"}]}`` (the index of the arrays).
    """
    arrays: dict[str, np.ndarray] = {}
    series = []
    for i, (name, tag) in enumerate((n, t) for n in sorted(scalars) for t in sorted(scalars[n])):
        steps, values = scalars[name][tag]
        arrays[f"s{i}_steps"], arrays[f"s{i}_values"] = np.asarray(steps), np.asarray(values, dtype=np.float64)
        last = (int(steps[-1]), float(values[-1])) if len(steps) else (None, None)
        series.append({"run": name, "tag": tag, "key": f"s{i}", "points": int(len(steps)),
                       "last_step": last[0], "last_value": last[1]})  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return {"series": series}


@torch.no_grad()
def encode_images(
    vqvae: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstructions (clamped to [0, 1]) and code indices of ``images`` with the run's VQ-VAE.

    Args:
        vqvae: the run's VQ-VAE (``forward_with_indices``).
        images: ``(N, C, *spatial)`` images in [0, 1].
        device: where the VQ-VAE runs.
        batch_size: images per forward pass.

    Returns:
        ``(reconstructions (N, C, *spatial), codes (N, *latent))`` on the CPU.
    """
    recons, codes = [], []
    vqvae.eval()
    for start in range(0, len(images), batch_size):
        recon, _, idx = vqvae.forward_with_indices(images[start : start + batch_size].to(device))
        recons.append(recon.float().cpu())
        codes.append(idx.cpu())
    return torch.cat(recons).clamp(0, 1), torch.cat(codes)


def codebook_usage(codes: torch.Tensor, num_embeddings: int, split: str = "test") -> dict[str, Any]:
    """Token counts per code over a split, used and dead codes and the histogram perplexity.

    Args:
        codes: ``(N, *latent)`` code indices of the split's images.
        num_embeddings: codebook size.
        split: the split's name (recorded).

    Returns:
        ``{"split", "images", "tokens", "num_embeddings", "used", "dead", "perplexity", "counts"}``.
    """
    from brainvq_monai.metrics.codebook import histogram_perplexity

    counts = torch.bincount(codes.flatten().long(), minlength=num_embeddings).double()
    used = int((counts > 0).sum())
    return {
        "split": split,
        "images": int(codes.shape[0]),
        "tokens": int(counts.sum()),
        "num_embeddings": int(num_embeddings),
        "used": used,
        "dead": int(num_embeddings) - used,
        "perplexity": float(histogram_perplexity(counts)),
        "counts": [int(c) for c in counts.tolist()],
    }


def pick_per_class(labels: torch.Tensor, classes: Sequence[int], per_class: int) -> list[int]:
    """Evenly spaced indices of each class (in datalist order), ``per_class`` of each (class ``-1``: all images).

    Args:
        labels: ``(N,)`` classes (``-1`` for unlabelled images).
        classes: the classes to pick from, in order.
        per_class: images per class.

    Returns:
        the indices.
    """
    picked: list[int] = []
    for c in classes:
        idx = torch.nonzero(labels == c).flatten().tolist() if c >= 0 else list(range(len(labels)))
        if not idx:
            continue
        take = np.unique(np.linspace(0, len(idx) - 1, min(per_class, len(idx))).round().astype(int))
        picked.extend(idx[i] for i in take)
    return picked


def _planes(images: Sequence[torch.Tensor] | torch.Tensor) -> np.ndarray:
    """Display planes ``(n, 1, W, H)`` of images (a volume's central axial slice); ``(0, 1, 1, 1)`` for none."""
    planes = [display_plane(x) for x in images]
    return np.stack(planes).astype(np.float32) if planes else np.zeros((0, 1, 1, 1), np.float32)


def reconstruction_panel(
    items: Sequence[Mapping[str, Any]],
    images: torch.Tensor,
    labels: torch.Tensor,
    recon: torch.Tensor,
    picked: Sequence[int],
    class_names: Mapping[int, str],
    path: Path,
) -> dict[str, Any]:
    """Per-image PSNR and error scale of the picked test images; their planes saved for the reconstruction grid.

    Args:
        items: the split's datalist items (subject and slice of each column).
        images: ``(N, C, *spatial)`` test images.
        labels: ``(N,)`` their classes (``-1``: none).
        recon: ``(N, C, *spatial)`` reconstructions.
        picked: indices shown.
        class_names: ``{class id: name}``.
        path: the ``.npz`` file of the planes (``inputs``, ``reconstructions``, ``errors``).

    Returns:
        ``{"split", "num_images", "columns": [{"index", "class", "subject", "slice", "psnr"}],
        "error_display_max"}`` (the colour scale of the errors: their 99th percentile, at least 1e-3).
    """
    picked = list(picked)
    err = (recon[picked] - images[picked]).abs()
    err_max = float(max(torch.quantile(err.flatten(), 0.99), 1e-3)) if picked else 1e-3  # outliers darken a row
    mse = ((recon[picked] - images[picked]) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    psnr = (10 * torch.log10(1.0 / mse)).tolist()
    columns = [
        {"index": int(i), "class": class_names.get(int(labels[i])), "subject": items[i].get("subject"),
         "slice": items[i].get("slice"), "psnr": float(p)}
        for i, p in zip(picked, psnr)
    ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, inputs=_planes(images[picked]), reconstructions=_planes(recon[picked]),
                        errors=_planes(err))  # fmt: skip
    return {"split": "test", "num_images": len(images), "columns": columns, "error_display_max": err_max}


def codebook_projection(codebook: np.ndarray, seed: int, path: Path) -> dict[str, Any]:
    """2D projections of the codebook vectors (PCA, and UMAP when ``umap-learn`` is installed), saved as arrays.

    Args:
        codebook: ``(K, D)`` codebook vectors.
        seed: UMAP's ``random_state``.
        path: the ``.npz`` file of the ``(K, 2)`` coordinates (one array per method).

    Returns:
        ``{"num_embeddings", "embedding_dim", "seed", "methods": [{"name", "key", "xlabel", "ylabel"}],
        "pca_explained_variance_ratio"}``.
    """
    from brainvq_monai.visualize.plots import pca_2d

    xy, ratio = pca_2d(codebook)
    arrays = {"pca": np.asarray(xy)}
    methods = [{"name": "PCA", "key": "pca", "xlabel": f"PC1 ({100 * ratio[0]:.1f}% of variance)",
                "ylabel": f"PC2 ({100 * ratio[1]:.1f}% of variance)"}]  # fmt: skip
    try:
        import umap  # type: ignore[import-not-found]

        reducer = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, len(codebook) - 1))
        arrays["umap"] = np.asarray(reducer.fit_transform(codebook))
        methods.append({"name": "UMAP", "key": "umap", "xlabel": "UMAP 1", "ylabel": "UMAP 2"})
    except ImportError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return {
        "num_embeddings": int(codebook.shape[0]),
        "embedding_dim": int(codebook.shape[1]),
        "seed": int(seed),
        "methods": methods,
        "pca_explained_variance_ratio": [float(r) for r in ratio],
    }


def read_sample_files(samples_dir: Path) -> dict[str, list[Path]]:
    """``{class tag: [files]}`` of ``sample_<tag>_<NNNN>.<ext>`` files, in number order.

    Args:
        samples_dir: the run's ``samples/`` folder.

    Returns:
        the files per tag (empty without the folder).
    """
    found: dict[str, list[tuple[int, Path]]] = {}
    if samples_dir.is_dir():
        for f in samples_dir.iterdir():
            m = _SAMPLE_FILE.match(f.name)
            if m:
                found.setdefault(m.group("tag"), []).append((int(m.group("num")), f))
    return {tag: [p for _, p in sorted(v)] for tag, v in found.items()}


def _read_sample(path: Path) -> torch.Tensor:
    """A sample file as a channel-first image in [0, 1] (8-bit PNGs hold 0..255; a blank sample is shown)."""
    from brainvq_monai.data.image_io import read_image

    image = torch.as_tensor(read_image(path, allow_constant=True)[0])[None].float()
    return image / 255.0 if float(image.max()) > 1.0 else image


def _file_rows(files: Mapping[str, list[Path]], tags: Sequence[str], per_class: int) -> list[list[torch.Tensor]]:
    return [[_read_sample(f) for f in files[tag][:per_class]] for tag in tags]


def sample_panel(
    run: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    per_class: int,
    seed: int,
    path: Path,
) -> dict[str, Any]:
    """Samples per class next to real test images of the class: the run's sample files, or fresh samples.

    Args:
        run: the loaded run (:class:`~brainvq_monai.apps.run_loader.RunArtifacts`).
        images: ``(N, C, *spatial)`` test images.
        labels: ``(N,)`` their classes (``-1``: none).
        per_class: samples (and real images) per class.
        seed: seed of fresh samples (drawn only when ``samples/`` holds no sample files).
        path: the ``.npz`` file of the rows' planes (``row_<i>``).

    Returns:
        ``{"source": "files" | "fresh", "seed", "temperature", "top_k", "per_class", "shown", "available",
        "rows": [{"label", "kind", "class", "key", "count"}]}``.
    """
    names = {int(k): str(v) for k, v in (run.class_names or {}).items()}
    files = read_sample_files(Path(run.run_dir) / "samples")
    if files:
        info = read_json(Path(run.run_dir) / "samples" / "samples.json")
        tags = [names[c] for c in sorted(names) if names[c] in files] or sorted(files)
        drawn = dict(zip(tags, _file_rows(files, tags, per_class)))
        out = {"source": "files", "seed": info.get("seed"), "temperature": info.get("temperature"),
               "top_k": info.get("top_k"), "available": sum(len(v) for v in files.values())}  # fmt: skip
    else:
        from brainvq_monai.apps.generation_eval import sample_run

        x, y = sample_run(run, per_class, seed)  # one generator, class after class
        classes = sorted(set(y.tolist())) if y is not None else [-1]
        tags = [names.get(c, "all") for c in classes]
        drawn = {names.get(c, "all"): list(x if y is None else x[y == c]) for c in classes}
        out = {"source": "fresh", "seed": int(seed), "temperature": 1.0, "top_k": None, "available": len(x)}
    rows, arrays = [], {}
    for tag in tags:
        c = next((k for k, v in names.items() if v == tag), -1)
        real = pick_per_class(labels, [c], per_class)
        for kind, cells in (("sampled", drawn.get(tag, [])), ("real", list(images[real]))):
            if kind == "real" and not real and out["source"] == "files":
                continue  # a class without test images: no real row
            key = f"row_{len(rows)}"
            arrays[key] = _planes(cells)
            label = f"sampled {tag}" if kind == "sampled" else f"real {tag} (test)"
            rows.append({"label": label, "kind": kind, "class": tag, "key": key, "count": len(cells)})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    shown = sum(r["count"] for r in rows if r["kind"] == "sampled")
    return {**out, "per_class": int(per_class), "shown": shown, "rows": rows}


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of the run folder (``{}`` when there is none).

    Args:
        path: the file.

    Returns:
        its content.

    Raises:
        BrainVQInputError: the file is not valid JSON.
    """
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BrainVQInputError(path, f"not valid JSON ({err.msg}, line {err.lineno})") from None

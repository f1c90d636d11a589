"""What limits the quality of the demo, by measurement: an ablation of the demo settings, one change per row.

Every row is a whole ``brainvq demo`` run (:func:`brainvq_monai.apps.demo.run_demo`) with the settings of the row
above plus one change, the same seed and the same wall-clock budget per training stage (``vqvae_budget_s``,
``prior_budget_s``: a row whose model is cheaper trains more epochs, one that is dearer fewer, see
:class:`~brainvq_monai.handlers.TimeBudgetHandler`). Rows that change only how samples are drawn
(``stage="sampling"``) reuse the trained models of the row above and only sample, evaluate and report again; rows
that change only the prior (``stage="prior"``) reuse its VQ-VAE (and so its codes), so their prior figures differ by
the change alone, not by a retrained VQ-VAE.

Three stages, as everywhere in the toolkit: :func:`run_ablation` computes (runs the rows, resumable: a row whose
settings are unchanged is not run again), :func:`collect_row` records the figures of a finished run folder into
``ablation.json``, and :func:`render_ablation` turns that record into Markdown; it never trains or samples.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.io import atomic_write_json

__all__ = [
    "ABLATION_BASE",
    "ABLATION_ROWS",
    "AblationRow",
    "bundle_row",
    "cumulative_settings",
    "collect_row",
    "run_ablation",
    "render_ablation",
    "run_seeds",
    "render_seeds",
    "HEADLINE",
]

ABLATION_FILE = "ablation.json"


@dataclass(frozen=True)
class AblationRow:
    """One row: a change of the demo settings on top of the row above.

    Attributes:
        key: short id (folder name under the ablation folder).
        change: what this row changes, for the table.
        settings: the settings it changes (merged into its base row's; nested dicts are merged one level deep).
        stage: ``"train"`` (a whole demo run), ``"prior"`` (train only the prior, on the base row's VQ-VAE) or
            ``"sampling"`` (re-sample the base row's trained models).
        grid: show this row's sample grid in the rendered document.
        base: key of the row it changes; ``None``: the row above. A row whose change did not help is a *probe*:
            the rows after it name the last kept row as their base, so every row stays one change from its base.
    """

    key: str
    change: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    stage: str = "train"
    grid: bool = False
    base: str | None = None


#: the settings of row 0: the demo defaults before this ablation (issue 10), with the same wall-clock budget as
#: every other row (the epoch counts are caps the budgets reach first).
ABLATION_BASE: dict[str, Any] = {
    "subjects": 20,
    "slices_per_subject": 20,
    "slice_spacing": 1,
    "spatial_size": [64, 64],
    "num_embeddings": 64,
    "embedding_dim": 32,
    "vqvae_channels": [32, 64],
    "vqvae_res_layers": 1,
    "vqvae_strides": [2, 2],
    "l1_weight": 1.0,
    "ssim_weight": 0.0,
    "perceptual_weight": 0.0,
    "adversarial_weight": 0.0,
    "adversarial_start": 0,
    "vqvae_epochs": 1000,
    "vqvae_budget_s": 180,
    "prior_epochs": 1000,
    "prior_budget_s": 180,
    "budget_clock": "process",
    "prior_val_interval": 10,
    "prior_weight_decay": 0.01,
    "learning_rate_vqvae": 0.002,
    "learning_rate_prior": 0.002,
    "transformer": {
        "attn_layers_dim": 64,
        "attn_layers_depth": 4,
        "attn_layers_heads": 4,
        "embedding_dropout_rate": 0.1,
        "dropout_rate": 0.0,
    },
    "temperature": 1.0,
    "top_k": None,
    "top_p": None,
    "amp": "off",
    "time_limit_s": None,
}

_F2 = {"vqvae_channels": [48], "vqvae_strides": [2]}

ABLATION_ROWS: tuple[AblationRow, ...] = (
    AblationRow("r00_base", "demo defaults before this ablation", grid=True),
    AblationRow("r01_val_every_epoch", "prior validated every epoch (was every 10): the kept checkpoint is the best",
                {"prior_val_interval": 1}),
    AblationRow("r02_subjects60", "cohort 20 -> 60 subjects (20 adjacent slices each)", {"subjects": 60}),
    AblationRow("r03_spaced_slices", "8 slices 3 mm apart per subject instead of 20 adjacent ones",
                {"slices_per_subject": 8, "slice_spacing": 3}, grid=True),
    AblationRow("r04_codes256", "codebook 64 -> 256 codes", {"num_embeddings": 256}),
    AblationRow("r05_code_dim64", "code dimension 32 -> 64", {"embedding_dim": 64}),
    AblationRow("r06_wider_vqvae", "VQ-VAE channels (32, 64) -> (64, 128)", {"vqvae_channels": [64, 128]}),
    AblationRow("r07_ssim_loss", "reconstruction loss L1 -> L1 + 0.5 (1 - SSIM)", {"ssim_weight": 0.5},
                base="r05_code_dim64"),
    AblationRow("r07b_perceptual", "reconstruction loss L1 -> L1 + 0.1 perceptual (in-house network, see text)",
                {"perceptual_weight": 0.1}, base="r05_code_dim64"),
    AblationRow("r08_adversarial", "+ patch-adversarial term (weight 0.05 from iteration 300)",
                {"adversarial_weight": 0.05, "adversarial_start": 300}, base="r05_code_dim64"),
    AblationRow("r09_f2_latent", "one stride-2 level (48 channels): 32 x 32 codes instead of 16 x 16", _F2, grid=True,
                base="r05_code_dim64"),
    AblationRow("r10_f2_block_prior", "+ block transformer prior (2 x 2 code blocks, 256 spatial steps)",
                {"transformer": {"block_size": 2, "depth_layers": 1}}, grid=True),
    AblationRow("r11_prior_dropout", "prior residual dropout 0 -> 0.1", {"transformer": {"dropout_rate": 0.1}},
                stage="prior", base="r05_code_dim64"),
    AblationRow("r12_weight_decay", "prior weight decay 0.01 -> 0.1", {"prior_weight_decay": 0.1}, stage="prior"),
    AblationRow("r13_bigger_prior", "prior width 64 -> 96, depth 4 -> 6",
                {"transformer": {"attn_layers_dim": 96, "attn_layers_depth": 6}}, stage="prior"),
    AblationRow("r16_batch16", "batch size 32 -> 16: twice the optimiser steps for the same images seen",
                {"batch_size": 16}, base="r05_code_dim64"),
    AblationRow("r14_temperature", "sampling temperature 1.0 -> 0.9", {"temperature": 0.9}, stage="sampling"),
    AblationRow("r15_top_p", "nucleus sampling top-p 0.95", {"top_p": 0.95}, stage="sampling"),
)  # fmt: skip


def bundle_row(
    budget_s: float, bundle: str = "brain_vqvae_2d", key: str = "b01_bundle_2d_128", base: str = "r05_code_dim64"
) -> AblationRow:
    """A row that trains with a bundle's own defaults (image size, networks, codebook, losses, optimisers, prior).

    The values are read from the bundle's ``train_vqvae`` and ``train_prior`` workflows (so the row follows the
    configs as they change); only the cohort, the seed and the time budget per stage come from the ablation.

    Args:
        budget_s: seconds per training stage (on the ablation's clock).
        bundle: bundle name (see :data:`~brainvq_monai.bundle.utils.BUNDLE_NAMES`).
        key: the row's key.
        base: the row whose cohort and sampling settings it keeps.

    Returns:
        the row (append it to :data:`ABLATION_ROWS` to run it).
    """
    from brainvq_monai.bundle.layout import AUTOENCODER_ID, PRIOR_ID, read_bundle_config
    from brainvq_monai.bundle.utils import default_bundle_root

    vq = read_bundle_config(default_bundle_root(bundle), "train_vqvae")
    pr = read_bundle_config(default_bundle_root(bundle), "train_prior")
    net = vq[AUTOENCODER_ID]
    if len(vq["spatial_size"]) != 2:
        raise BrainVQInputError(bundle, "bundle rows run the 2D demo pipeline: the bundle must be 2D")
    settings = {
        "spatial_size": list(vq["spatial_size"]),
        "num_embeddings": int(vq["num_embeddings"]),
        "embedding_dim": int(vq["embedding_dim"]),
        "batch_size": int(vq["batch_size"]),
        "vqvae_channels": list(net["channels"]),
        "vqvae_res_layers": int(net["num_res_layers"]),
        "vqvae_strides": [int(d[0]) for d in net["downsample_parameters"]],
        "learning_rate_vqvae": float(vq["learning_rate"]),
        **{
            k: vq[k]
            for k in ("l1_weight", "ssim_weight", "perceptual_weight", "adversarial_weight", "adversarial_start")
        },
        "vqvae_epochs": int(vq["max_epochs"]),
        "vqvae_budget_s": budget_s,
        "learning_rate_prior": float(pr.get_parsed_content("learning_rate")),  # an expression: the prior's own rate
        "prior_weight_decay": float(pr["optimizer"]["weight_decay"]),
        "prior_val_interval": int(pr["val_interval"]),
        "prior_epochs": int(pr["max_epochs"]),
        "prior_budget_s": budget_s,
        "transformer": {k: v for k, v in pr[PRIOR_ID]["transformer"].items() if not str(v).startswith(("@", "$"))},
    }
    change = f"the {bundle} bundle's defaults ({settings['spatial_size'][0]} px), {budget_s:.0f} s per stage"
    return AblationRow(key, change, settings, grid=True, base=base)


#: what a row of each stage runs (see :data:`brainvq_monai.apps.demo.STAGES`)
_STAGES: dict[str, tuple[str, ...]] = {
    "train": ("vqvae", "prior", "evaluate", "sample", "report"),
    "prior": ("prior", "evaluate", "sample", "report"),
    "sampling": ("sample", "report"),
}


def _merge(base: Mapping[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in change.items():
        out[k] = {**out[k], **v} if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def cumulative_settings(
    rows: Sequence[AblationRow] = ABLATION_ROWS, base: Mapping[str, Any] = ABLATION_BASE
) -> list[dict[str, Any]]:
    """The full settings of every row: ``base`` plus the changes of all rows up to it.

    Args:
        rows: the rows, in order.
        base: the settings of the first row.

    Returns:
        one settings dict per row.
    """
    out: list[dict[str, Any]] = []
    by_key: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.stage not in _STAGES:
            raise BrainVQInputError(row.key, f"stage must be one of {', '.join(_STAGES)}, got {row.stage!r}")
        if row.base is not None and row.base not in by_key:
            raise BrainVQInputError(row.key, f"base row {row.base!r} is not an earlier row")
        start = by_key[row.base] if row.base is not None else (out[-1] if out else dict(base))
        current = _merge(start, row.settings)
        by_key[row.key] = current
        out.append(current)
    return out


def _trained_base(rows: Sequence[AblationRow], index: int) -> str:
    """The key of the row whose trained models a row reuses: its base (a base that only sampled has no models of its
    own: its base's are used)."""
    keys = [r.key for r in rows]
    row = rows[index]
    key = row.base if row.base is not None else keys[index - 1]
    while rows[keys.index(key)].stage == "sampling":
        prev = rows[keys.index(key)]
        key = prev.base if prev.base is not None else keys[keys.index(key) - 1]
    return key


def _cohort_cache(out: Path, settings: Mapping[str, Any], seed: int) -> Path:
    """Where the ablation keeps a copy of the demo cohort of these settings, for later rows with the same cohort."""
    keys = ("subjects", "slices_per_subject", "slice_spacing")
    return out / "_cohorts" / ("c" + "-".join(str(settings[k]) for k in keys) + f"-seed{seed}")


def _settings_hash(settings: Mapping[str, Any], seed: int) -> str:
    return hashlib.sha256(json.dumps({"s": settings, "seed": seed}, sort_keys=True, default=str).encode()).hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, default=str)


def _curve(series: Mapping[str, Any], tag: str) -> dict[str, Any] | None:
    if tag not in series:
        return None
    steps, values = series[tag]
    if not len(values):
        return None
    best = int(values.argmin())
    return {
        "epochs": [int(s) for s in steps],
        "values": [round(float(v), 5) for v in values],
        "min": float(values[best]),
        "min_epoch": int(steps[best]),
        "final": float(values[-1]),
        "final_epoch": int(steps[-1]),
    }


def collect_row(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The figures of one finished demo run folder (it reads files only).

    Args:
        run_dir: a ``brainvq demo`` run folder with ``generation_metrics.json``.

    Returns:
        reconstruction (brain-masked SSIM / PSNR, codes used), prior (validation and training NLL curves, test NLL),
        generation (FID, KID, precision, recall, coverage against the real-vs-real floor; diversity; memorisation),
        class fidelity, epochs trained and seconds per stage.
    """
    from brainvq_monai.apps.report import read_tensorboard_scalars

    run = Path(run_dir)
    gen_all = _read_json(run / "generation_metrics.json")
    if not gen_all:
        raise BrainVQInputError(run / "generation_metrics.json", "missing: the row's run did not finish")
    metrics = _read_json(run / "metrics.json")
    summary = _read_json(run / "demo_summary.json")
    scalars = read_tensorboard_scalars(run / "tensorboard") if (run / "tensorboard").is_dir() else {}
    vq = scalars.get("vqvae", {})
    pr = next((v for k, v in scalars.items() if k.startswith("prior")), {})
    rec = (metrics.get("reconstruction") or {}).get("metrics", {})
    prior_metrics = (metrics.get("prior") or {}).get("metrics", {})
    masked = gen_all["reconstruction"]["all"]
    groups = gen_all["generation"]["groups"]
    rows = groups["all"]["metrics"]

    def pick(name: str, *keys: str) -> dict[str, Any] | None:
        row = rows.get(name)
        return None if row is None else {k: row.get(k) for k in keys if k in row}

    fidelity = gen_all.get("class_fidelity") or None
    fid = rows["fid"]
    return {
        "epochs": {
            "vqvae": int(vq["val_ssim"][0][-1]) if "val_ssim" in vq else None,
            "prior": int(pr["train_loss"][0][-1]) if "train_loss" in pr else None,
        },
        "seconds": summary.get("seconds", {}),
        "precision": summary.get("precision", {}),
        "reconstruction": {
            "ssim_brain": masked["ssim_brain"],
            "ssim_brain_ci": masked["ssim_brain_ci"],
            "psnr_brain": masked["psnr_brain"],
            "psnr_brain_ci": masked["psnr_brain_ci"],
            "ssim_whole_image": masked["ssim_whole_image"],
            "codes_used": rec.get("test_codes_used"),
            "perplexity": rec.get("test_perplexity"),
            "num_embeddings": None,
        },
        "prior": {
            "val_nll": _curve(pr, "val_nll"),
            "train_nll": _curve(pr, "train_loss"),
            "test_nll": prior_metrics.get("test_nll"),
        },
        "generation": {
            "fid": fid["generated"],
            "fid_ci": fid.get("generated_ci"),
            "fid_floor": fid["real_floor"],
            "fid_ratio": fid["generated"] / fid["real_floor"] if fid["real_floor"] > 0 else math.inf,
            "kid": pick("kid", "generated", "real_floor"),
            "precision": pick("precision", "generated", "real_floor"),
            "recall": pick("recall", "generated", "real_floor"),
            "coverage": pick("coverage", "generated", "real_floor"),
            "diversity": pick("ms_ssim_diversity", "generated", "real_test", "real_floor"),
            "nn_ssim_to_train": pick("nn_ssim_to_train", "generated", "real_floor"),
            "closer_to_train": pick("closer_to_train", "generated", "real_heldout", "num_heldout"),
            "copy_fraction": groups["all"]["memorisation"]["copy_fraction"],
            "counts": groups["all"]["counts"],
        },
        "class_fidelity": None
        if fidelity is None
        else {
            "real_test_accuracy": fidelity["real_test"]["accuracy"],
            "real_test_ci": fidelity["real_test"]["ci"],
            "real_test_subjects": fidelity["real_test"]["num_clusters"],
            "samples_accuracy": fidelity["samples"]["accuracy"],
            "samples_ci": fidelity["samples"]["ci"],
            "gap": fidelity["gap"],
        },
        "c2st": None
        if not gen_all.get("c2st")
        else {
            "auc": gen_all["c2st"]["generated"]["auc"],
            "floor_auc": (gen_all["c2st"].get("real_floor") or {}).get("auc"),
        },
        "feature_net": gen_all.get("feature_net", {}).get("test_check", {}),
        "sampling": gen_all.get("sampling", {}),
    }


def _prepare_reuse_row(src: Path, dst: Path, vqvae_only: bool = False) -> None:
    """A run folder for a row that reuses ``src``'s trained models (all of them, or the VQ-VAE, its codes and the
    generation eval's feature net) and data, nothing sampled yet."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    if vqvae_only:
        (dst / "models").mkdir()
        for f in (src / "models").glob("*.pt"):
            if f.name.startswith(("model_autoencoder", "vqvae", "feature_net")):
                shutil.copy2(f, dst / "models" / f.name)
        if (src / "tensorboard" / "vqvae").is_dir():
            shutil.copytree(src / "tensorboard" / "vqvae", dst / "tensorboard" / "vqvae")
    for name in ("codes",) if vqvae_only else ("models", "tensorboard", "codes"):
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name)
    (dst / "data").symlink_to((src / "data").resolve(), target_is_directory=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix in (".json", ".csv") and f.name != "generation_metrics.json":
            shutil.copy2(f, dst / f.name)  # the datalist keeps naming the source's data files: the same files


def run_ablation(
    out_dir: str | os.PathLike,
    rows: Sequence[AblationRow] = ABLATION_ROWS,
    base: Mapping[str, Any] = ABLATION_BASE,
    seed: int = 0,
    only: Sequence[str] | None = None,
    prior: str = "transformer",
    verbose: bool = True,
) -> dict[str, Any]:
    """Runs the rows (skipping those already recorded with the same settings) and writes ``ablation.json``.

    Args:
        out_dir: the ablation folder; row ``key`` runs in ``out_dir/key``.
        rows: the rows, in order (each one change from the row above).
        base: the settings of the first row.
        seed: seed of every row.
        only: run only these row keys (the others keep their recorded figures).
        prior: the prior of every row.
        verbose: progress on stderr.

    Returns:
        the record written to ``out_dir/ablation.json``.
    """
    from brainvq_monai.apps.demo import run_demo
    from brainvq_monai.utils.environment import device_info, versions

    out = Path(os.path.abspath(os.fspath(out_dir)))
    out.mkdir(parents=True, exist_ok=True)
    keys = [r.key for r in rows]
    if len(set(keys)) != len(keys):
        raise BrainVQInputError("rows", "row keys must be unique")
    if only is not None and (bad := [k for k in only if k not in keys]):
        raise BrainVQInputError("only", f"unknown rows {bad}; rows are {keys}")
    if rows and rows[0].stage != "train":
        raise BrainVQInputError(rows[0].key, "the first row must train (stage 'train')")
    record_file = out / ABLATION_FILE
    record = _read_json(record_file) or {"rows": {}}
    record.update({"seed": seed, "prior": prior, "device": device_info("cpu"), "versions": versions()})
    # rows recorded by other invocations (e.g. a bundle row) keep their place after this invocation's rows
    record["order"] = keys + [k for k in record.get("order", []) if k not in keys]
    settings = cumulative_settings(rows, base)
    for i, (row, s) in enumerate(zip(rows, settings)):
        run_dir = out / row.key
        digest = _settings_hash({**s, "_stage": row.stage}, seed)
        done = record["rows"].get(row.key, {})
        if (only is not None and row.key not in only) or done.get("hash") == digest:
            continue
        if verbose:
            print(f"ablation: [{i + 1}/{len(rows)}] {row.key}: {row.change}", file=sys.stderr, flush=True)
        start = time.time()
        demo_settings = {k: v for k, v in s.items() if k != "subjects"}
        if row.stage == "train":
            if run_dir.exists():
                shutil.rmtree(run_dir)
            cohort = _cohort_cache(out, s, seed)
            if cohort.is_dir():  # the same synthetic cohort as an earlier row: copied, not made again
                shutil.copytree(cohort, run_dir / "data")
            run_demo(run_dir, subjects=int(s["subjects"]), seed=seed, prior=prior, settings=demo_settings)
        else:
            _prepare_reuse_row(out / _trained_base(rows, i), run_dir, vqvae_only=row.stage == "prior")
            run_demo(
                run_dir, subjects=int(s["subjects"]), seed=seed, prior=prior, settings=demo_settings,
                stages=_STAGES[row.stage],
            )  # fmt: skip
        if row.stage == "train" and not cohort.is_dir():
            shutil.copytree(run_dir / "data", cohort.with_name(cohort.name + ".tmp"), dirs_exist_ok=True)
            os.replace(cohort.with_name(cohort.name + ".tmp"), cohort)
        figures = collect_row(run_dir)
        figures["reconstruction"]["num_embeddings"] = s["num_embeddings"]
        record["rows"][row.key] = {
            "key": row.key,
            "base": row.base if row.base is not None else (keys[i - 1] if i else None),
            "change": row.change,
            "stage": row.stage,
            "grid": row.grid,
            "settings": s,
            "hash": digest,
            "wall_seconds": round(time.time() - start, 1),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **figures,
        }
        _write_json(record_file, record)
    _write_json(record_file, record)
    return record


# ------------------------------------------------------------------------------------------------------- rendering
def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render_ablation(record: Mapping[str, Any], grids: Mapping[str, str] | None = None) -> str:
    """Markdown of an ablation record: one table row per ablation row, then the sample grids.

    Args:
        record: the content of ``ablation.json``.
        grids: ``{row key: image path}`` of the sample grids to show (relative to the document).

    Returns:
        Markdown text.
    """
    order = [k for k in record.get("order", []) if k in record["rows"]]
    head = (
        "| # | row (base row when not the one above): change | epochs VQ-VAE / prior | SSIM brain | PSNR brain (dB) | codes used | "
        "val NLL min (epoch) / final | FID / floor (x floor) | KID / floor | precision / floor | recall / floor | "
        "coverage / floor | C2ST AUC (floor) | diversity (test) | closer to train (held-out) | "
        "class acc. samples / real test |"
    )
    lines = [head, "|" + "---|" * 16]
    for i, key in enumerate(order):
        r = record["rows"][key]
        rec, pr, gen, cf = r["reconstruction"], r["prior"], r["generation"], r.get("class_fidelity")
        val = pr.get("val_nll") or {}
        pair = lambda d, n=3: f"{_f((d or {}).get('generated'), n)} / {_f((d or {}).get('real_floor'), n)}"  # noqa: E731
        lines.append(
            "| "
            + " | ".join(
                [
                    str(i),
                    f"`{key}`"
                    + (f" (from `{r['base']}`)" if r.get("base") and i and r["base"] != order[i - 1] else "")
                    + f": {r['change']}",
                    f"{_f(r['epochs'].get('vqvae'))} / {_f(r['epochs'].get('prior'))}",
                    _f(rec["ssim_brain"]),
                    _f(rec["psnr_brain"], 2),
                    f"{_f(rec.get('codes_used'), 0)} / {rec.get('num_embeddings')}",
                    f"{_f(val.get('min'))} ({val.get('min_epoch', '-')}) / {_f(val.get('final'))}",
                    f"{_f(gen['fid'], 2)} / {_f(gen['fid_floor'], 2)} ({_f(gen['fid_ratio'], 1)}x)",
                    pair(gen.get("kid"), 4),
                    pair(gen.get("precision")),
                    pair(gen.get("recall")),
                    pair(gen.get("coverage")),
                    "-" if not r.get("c2st") else f"{_f(r['c2st']['auc'])} ({_f(r['c2st']['floor_auc'])})",
                    f"{_f((gen.get('diversity') or {}).get('generated'))} ({_f((gen.get('diversity') or {}).get('real_test'))})",
                    f"{_f((gen.get('closer_to_train') or {}).get('generated'))} "
                    f"({_f((gen.get('closer_to_train') or {}).get('real_heldout'))})",
                    "-" if not cf else f"{_f(cf['samples_accuracy'])} / {_f(cf['real_test_accuracy'])}",
                ]
            )
            + " |"
        )
    for key, path in (grids or {}).items():
        if key in record["rows"]:
            lines += ["", f"**`{key}`** ({record['rows'][key]['change']}):", "", f"![{key}]({path})"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------- seeds
#: headline figures of a run: (label, path into :func:`collect_row`'s dict, digits)
HEADLINE: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("SSIM inside the brain (test)", ("reconstruction", "ssim_brain"), 3),
    ("PSNR inside the brain (test, dB)", ("reconstruction", "psnr_brain"), 2),
    ("SSIM whole image (test)", ("reconstruction", "ssim_whole_image"), 3),
    ("codes used (test)", ("reconstruction", "codes_used"), 0),
    ("prior validation NLL, best (nats/token)", ("prior", "val_nll", "min"), 3),
    ("prior test NLL (nats/token)", ("prior", "test_nll"), 3),
    ("FID (in-house features)", ("generation", "fid"), 2),
    ("FID real-vs-real floor", ("generation", "fid_floor"), 2),
    ("FID / floor", ("generation", "fid_ratio"), 2),
    ("precision", ("generation", "precision", "generated"), 3),
    ("recall", ("generation", "recall", "generated"), 3),
    ("coverage", ("generation", "coverage", "generated"), 3),
    ("C2ST AUC real vs samples (0.5 = indistinguishable)", ("c2st", "auc"), 3),
    ("C2ST AUC real vs real held-out", ("c2st", "floor_auc"), 3),
    ("diversity: mean pairwise MS-SSIM of samples", ("generation", "diversity", "generated"), 3),
    ("diversity of real test images", ("generation", "diversity", "real_test"), 3),
    ("samples closer to a training than to any test image", ("generation", "closer_to_train", "generated"), 3),
    ("real held-out images closer to training than to test", ("generation", "closer_to_train", "real_heldout"), 3),
    ("classifier accuracy, real test slices", ("class_fidelity", "real_test_accuracy"), 3),
    ("classifier accuracy, conditional samples", ("class_fidelity", "samples_accuracy"), 3),
    ("wall time, whole demo (s)", ("seconds", "total"), 0),
)


def _get(tree: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def run_seeds(
    out_dir: str | os.PathLike,
    seeds: Sequence[int] = (0, 1, 2),
    settings: Mapping[str, Any] | None = None,
    prior: str = "transformer",
    verbose: bool = True,
) -> dict[str, Any]:
    """Runs the demo once per seed (resumable) and records the spread of every headline figure in ``seeds.json``.

    Args:
        out_dir: folder; seed ``s`` runs in ``out_dir/seed<s>``.
        seeds: the seeds (cohort, split, initialisation, sampling: everything changes with the seed).
        settings: overrides of the demo settings (default: the demo defaults).
        prior: the prior.
        verbose: progress on stderr.

    Returns:
        ``{"seeds", "runs": {seed: figures}, "summary": {label: {"mean", "sd", "min", "max", "values"}}, ...}``.
    """
    from brainvq_monai.apps.demo import DEMO_SETTINGS, run_demo
    from brainvq_monai.utils.environment import device_info, versions

    out = Path(os.path.abspath(os.fspath(out_dir)))
    out.mkdir(parents=True, exist_ok=True)
    full = {**DEMO_SETTINGS, **(settings or {})}
    record_file = out / "seeds.json"
    record = _read_json(record_file) or {"runs": {}}
    record.update({"seeds": list(seeds), "prior": prior, "settings": full, "device": device_info("cpu")})
    record["versions"] = versions()
    for seed in seeds:
        digest = _settings_hash({**full, "_prior": prior}, int(seed))
        if record["runs"].get(str(seed), {}).get("hash") == digest:
            continue
        if verbose:
            print(f"seeds: demo with seed {seed}", file=sys.stderr, flush=True)
        run_dir = out / f"seed{seed}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_demo(run_dir, seed=int(seed), prior=prior, settings=settings)
        record["runs"][str(seed)] = {"hash": digest, **collect_row(run_dir)}
        _write_json(record_file, record)
    summary = {}
    for label, path, _ in HEADLINE:
        values = [_get(record["runs"][str(s)], path) for s in seeds if str(s) in record["runs"]]
        values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        if values:
            mean = sum(values) / len(values)
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
            summary[label] = {"mean": mean, "sd": sd, "min": min(values), "max": max(values), "values": values}
    record["summary"] = summary
    _write_json(record_file, record)
    return record


def render_seeds(record: Mapping[str, Any]) -> str:
    """Markdown table of :func:`run_seeds`' record: mean, standard deviation and range of every headline figure.

    Args:
        record: the content of ``seeds.json``.

    Returns:
        Markdown text.
    """
    seeds = record.get("seeds", [])
    lines = [
        f"| figure | mean | sd | min - max | per seed ({', '.join(str(s) for s in seeds)}) |",
        "|---|---:|---:|---|---|",
    ]
    for label, _, digits in HEADLINE:
        st = record.get("summary", {}).get(label)
        if not st:
            continue
        per = ", ".join(f"{v:.{digits}f}" for v in st["values"])
        lines.append(
            f"| {label} | {st['mean']:.{digits}f} | {st['sd']:.{digits}f} | "
            f"{st['min']:.{digits}f} - {st['max']:.{digits}f} | {per} |"
        )
    return "\n".join(lines) + "\n"

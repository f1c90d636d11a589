"""Render stage of ``brainvq report``: ``report.md`` and its figures from the run's record, ``report.json``.

The record (written by :func:`brainvq_monai.apps.report.compute_report`) holds every number of the report, the seeds,
counts, versions and device, and names the arrays the figures are drawn from (``report/data/*.npz``). Rendering reads
them and nothing else: it loads no network, draws no sample and trains nothing, so a report can be re-rendered
(``brainvq report --run RUN --render-only``) anywhere the run folder is, without the models' device.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.visualize.generation_tables import generation_section, report_number
from brainvq_monai.visualize.report_figures import REPORT_FIGURES, draw_report_figures

__all__ = [
    "REPORT_FIGURES",
    "REPORT_RECORD",
    "RECORD_VERSION",
    "read_report_record",
    "report_markdown",
    "render_report",
]

REPORT_RECORD = "report.json"
"""The record of a run's report, in the run folder."""

RECORD_VERSION = 1
"""Layout version of :data:`REPORT_RECORD` (``record_version``)."""

_n = report_number


def read_report_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The report record of a run folder.

    Args:
        run_dir: the run folder.

    Returns:
        the record.

    Raises:
        BrainVQInputError: no record, not JSON, or a layout this version does not read.
    """
    path = Path(os.fspath(run_dir)) / REPORT_RECORD
    if not path.is_file():
        raise BrainVQInputError(path, f"no report record; compute it with `brainvq report --run {path.parent}`")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BrainVQInputError(path, f"not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(record, dict) or record.get("record_version") != RECORD_VERSION:
        found = record.get("record_version") if isinstance(record, dict) else None
        raise BrainVQInputError(path, f"record_version {found!r}, this version renders {RECORD_VERSION}; recompute it")
    return record


# ---------------------------------------------------------------------------------------------------- sections
def _header(record: Mapping[str, Any], run: Path) -> list[str]:
    data, model, device = record["data"], record["model"], record["device"]
    counts = data["counts"]
    labels = ", ".join(f"{k} = {v}" for k, v in (data.get("labels") or {}).items()) or "none"
    md = [
        f"# brainvq run report: `{run.name}`",
        "",
        "| | |",
        "|---|---|",
        f"| run folder | `{run}` |",
        f"| run finished (metrics.json) | {record['run'].get('finished') or 'not recorded'} |",
        f"| report computed (report.json) | {record['computed']} |",
        f"| report written | {datetime.now(timezone.utc).isoformat(timespec='seconds')} |",
        f"| data | {data.get('name', '?')} (`{data.get('format', '?')}` layout) at `{data.get('root', '?')}` |",
        f"| split | {counts['training']} training / {counts['validation']} validation / {counts['test']} test "
        f"items, by `{data.get('split_method', '?')}` (seed {_n(data.get('seed'))}) |",
        f"| classes | {labels} |",
        f"| image size | {' x '.join(map(str, model['spatial_size']))}, code map "
        f"{' x '.join(map(str, model['latent_shape']))}, codebook {model['num_embeddings']} codes |",
        f"| prior | {model['prior']} |",
        f"| training device | {device.get('training') or 'not recorded in the run folder'} |",
        f"| report device | {device['report']} |",
        f"| versions (report) | {', '.join(f'{k} {v}' for k, v in record['versions'].items())} |",
    ]
    seconds = record["run"].get("seconds") or {}
    if seconds:
        steps = ", ".join(f"{k.removesuffix('.json')} {v}" for k, v in seconds.items())
        md.append(f"| run time (s) | {steps} |")
    return md


def _settings(record: Mapping[str, Any]) -> list[str]:
    settings = record["settings"]
    source = (
        "`run_config.json`"
        if settings["source"] == "run_config.json"
        else "no `run_config.json`: the demo defaults, as `load_run` used them"
    )
    return [
        "",
        "Every number below is read from this run's files (`metrics.json`, `generation_metrics.json`, TensorBoard "
        "logs, `samples/samples.json`) or computed by the report with this run's models on this run's test split; "
        f"all of them are recorded in `{REPORT_RECORD}`.",
        "",
        f"<details><summary>Run settings ({source})</summary>",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {k} | `{json.dumps(v, default=str)}` |" for k, v in settings["values"].items()),
        "",
        "</details>",
        "",
    ]


_REC_ROWS: tuple[tuple[str, str], ...] = (
    ("test_ssim", "SSIM (whole image)"),
    ("test_ms_ssim", "MS-SSIM (whole image)"),
    ("test_psnr", "PSNR (dB, whole image)"),
    ("test_mae", "MAE"),
    ("test_mse", "MSE"),
    ("test_codes_used", "codes used"),
    ("test_perplexity", "codebook perplexity"),
)
_PRIOR_ROWS: tuple[tuple[str, str], ...] = (
    ("test_nll", "NLL (nats/token)"),
    ("test_bits_per_dim", "bits/dim"),
    ("test_code_js", "code JS: generated vs test code maps (bits, 0 = same statistics)"),
    ("test_generated_codes_used", "codes used by the generated maps"),
)


def _likelihood_note(metrics: Mapping[str, Any]) -> list[str]:
    """A line saying that the prior has no likelihood (the DCGAN), from ``metrics.json``; nothing otherwise."""
    note = str((metrics.get("prior") or {}).get("likelihood") or "")
    if not note.startswith("none"):
        return []
    return [
        "No NLL or bits/dim: the prior is adversarial and has no likelihood. It is scored by how far its generated "
        "code maps are from the test codes (code JS above) and by the generation metrics below, like the other priors.",
        "",
    ]


def _metric_section(metrics: Mapping[str, Any], key: str, rows: Sequence[tuple[str, str]], heading: str) -> list[str]:
    block = metrics.get(key) or {}
    values = block.get("metrics") or {}
    if not values:
        return [f"### {heading}", "", f"not in metrics.json (no `{key}` entry).", ""]
    lines = [
        f"### {heading}",
        "",
        f"From `metrics.json` (`{key}`): split `{block.get('split', '?')}`, {_n(block.get('num_images'))} images, "
        f"checkpoint `{Path(str(block.get('checkpoint', '?'))).name}`, written {block.get('written', '?')}.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    listed = {name for name, _ in rows if name in values}
    lines += [f"| {label} | {_n(values[name])} |" for name, label in rows if name in values]
    lines += [f"| {name} | {_n(v)} |" for name, v in sorted(values.items()) if name not in listed]
    return [*lines, ""]


def _sample_note(record: Mapping[str, Any]) -> str:
    s = record.get("samples") or {}
    if s.get("source") == "files":
        return (
            f"{s['shown']} sample files from `samples/` (of {s['available']}; seed {_n(s.get('seed'))}, temperature "
            f"{_n(s.get('temperature'))}, top-k {_n(s.get('top_k'))}, from `samples.json`)"
        )
    return (
        f"`samples/` holds no sample files: {s.get('per_class')} fresh samples per class drawn by the report "
        f"(seed {s.get('seed')}, temperature {_n(s.get('temperature'))})"
    )


def _captions(record: Mapping[str, Any]) -> dict[str, str]:
    usage = record.get("codebook_usage") or {}
    projection = record.get("codebook_projection") or {}
    methods = [m["name"] for m in projection.get("methods", [])]
    proj = "PCA and UMAP (`umap-learn` is installed)." if "UMAP" in methods else (
        "PCA only (UMAP is drawn too when `umap-learn` is installed).")  # fmt: skip
    return {
        "loss_curves": "**Training curves** (`report/loss_curves.png`), from the TensorBoard logs: every loss term "
        "per iteration (faint) with its running mean over one epoch, the epoch mean (`train_loss`), the validation "
        "NLL of the prior (DCGAN: generator and discriminator losses, D(real) and D(fake)), and the learning rate.",
        "validation_metrics": "**Validation metrics** (`report/validation_metrics.png`) per validation epoch, from "
        "the TensorBoard logs; dashed lines: the test value of the best checkpoint from `metrics.json`.",
        "reconstructions": "**Reconstructions** (`report/reconstructions.png`): test images evenly spaced through "
        "each class, their VQ-VAE reconstruction and the absolute error (colour bar in intensity units, images in "
        "[0, 1]; its colour scale ends at the 99th percentile of the errors shown, larger errors saturate)"
        + ("; volumes are shown by their central axial slice." if record["model"]["spatial_dims"] == 3 else "."),
        "samples": f"**Samples per class** (`report/samples.png`): {_sample_note(record)}; each row of samples "
        "is followed by real test images of the same class.",
        "codebook_usage": f"**Codebook usage** (`report/codebook_usage.png`) over the {usage.get('images')} test "
        f"images ({usage.get('tokens')} tokens), computed by the report: {usage.get('used')} of "
        f"{usage.get('num_embeddings')} codes used, {usage.get('dead')} dead, perplexity "
        f"{_n(usage.get('perplexity'))}.",
        "codebook_projection": f"**Codebook projection** (`report/codebook_projection.png`): {proj} Point area grows "
        "with test-split usage; crosses mark dead codes; the most used codes are labelled with their index.",
        "memorisation": "**Memorisation** (`report/memorisation.png`): per-image SSIM to the nearest training image, "
        "samples against real test images (values from `generation_metrics.json`); samples far right of the test "
        "images would be near-copies of training images.",
    }


def _figures(record: Mapping[str, Any], figures: Mapping[str, str]) -> list[str]:
    captions = _captions(record)
    md = ["## Figures", ""]
    for key, name in figures.items():
        md += [captions[key], "", f"![{key}](report/{name})", ""]
    missing = [k for k in REPORT_FIGURES if k not in figures]
    if missing:
        why = {"memorisation": "no generation_metrics.json"}
        listed = ", ".join(f"{k} ({why.get(k, 'no data in the run folder')})" for k in missing)
        md += [f"Not drawn: {listed}.", ""]
    return md


def _generation_reason(run: Path) -> str:
    return (
        "not computed: `generation_metrics.json` is missing and the report ran with `--no-generation`; run "
        f"`brainvq report --run {run}` to compute it."
    )


def report_markdown(record: Mapping[str, Any], figures: Mapping[str, str], run_dir: str | os.PathLike) -> list[str]:
    """The lines of ``report.md``.

    Args:
        record: the report record.
        figures: ``{figure key: file name}`` of the figures drawn under ``run_dir/report/``.
        run_dir: the run folder.

    Returns:
        Markdown lines.
    """
    run = Path(os.fspath(run_dir))
    metrics, prior = record.get("metrics") or {}, record["model"]["prior"]
    md = [*_header(record, run), *_settings(record), "## Metrics", ""]
    md += _metric_section(metrics, "reconstruction", _REC_ROWS, "Reconstruction (VQ-VAE, test split)")
    md += _metric_section(metrics, "prior", _PRIOR_ROWS, f"Prior ({prior}, test split)")
    md += _likelihood_note(metrics)
    md += generation_section((record.get("generation") or {}).get("record"), _generation_reason(run))
    return md + _figures(record, figures)


def render_report(run_dir: str | os.PathLike, record: Mapping[str, Any] | None = None) -> Path:
    """Writes ``run_dir/report.md`` and its figures under ``run_dir/report/`` from the run's report record.

    Args:
        run_dir: the run folder (holding ``report.json`` and the arrays it names).
        record: the record, when the caller has it (default: read ``run_dir/report.json``).

    Returns:
        the path of ``report.md``.
    """
    run = Path(os.path.abspath(os.fspath(run_dir)))
    record = read_report_record(run) if record is None else record
    figures = draw_report_figures(record, run)
    out = run / "report.md"
    out.write_text("\n".join(report_markdown(record, figures, run)) + "\n", encoding="utf-8")
    return out

"""`brainvq report` on one tiny demo run: figures exist and are real images, numbers come from the run's files.

The report is computed into a record (``report.json``) and rendered from it: every number of the Markdown tables is
in the record, and rendering again (``--render-only``) needs no network, sampling or training.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_DEMO
from PIL import Image

from brainvq_monai.apps.report import REPORT_FIGURES, REPORT_RECORD, make_report, read_tensorboard_scalars
from brainvq_monai.cli import main
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.visualize.generation_tables import report_number

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tiny_demo_run):
    """The session's tiny `brainvq demo` run (the 8-subject cohort, 32x32, 2 epochs each)."""
    return tiny_demo_run


def _table(md: str, heading: str) -> dict[str, list[str]]:
    """``{first cell: other cells}`` of the tables under ``### heading``."""
    section = md.split(f"### {heading}", 1)[1].split("###", 1)[0]
    rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in section.splitlines() if r.startswith("|")]
    return {r[0]: r[1:] for r in rows if len(r) >= 2 and not r[1].startswith("---")}


def _record_numbers(tree) -> set[str]:
    """Every number of the record, as the report prints it."""
    if isinstance(tree, dict):
        return set().union(*(_record_numbers(v) for v in tree.values())) if tree else set()
    if isinstance(tree, list):
        return set().union(*(_record_numbers(v) for v in tree)) if tree else set()
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return {report_number(tree)}
    return set()


def _check_tables_in_record(md: str, record: dict) -> int:
    """Every number in the tables of the Metrics section is a number of the record; returns how many were seen."""
    known = _record_numbers(record)
    section = md.split("## Metrics", 1)[1].split("## Figures", 1)[0]
    seen = 0
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        for cell in [c.strip() for c in line.strip().strip("|").split("|")][1:]:
            if re.search(r"[a-zA-Z]{2,}", cell.replace("(sd)", "")):
                continue  # a header or the 'better' column
            for number in re.findall(r"-?\d+(?:\.\d+)?(?:e[+-]\d+)?", cell):
                assert number in known, (number, line)
                seen += 1
    return seen


def _check_png(path, min_side=150):
    assert path.is_file(), path
    assert 5_000 < path.stat().st_size < 400_000, (path, path.stat().st_size)
    image = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert min(image.shape) >= min_side
    assert image.std() > 10  # not a blank figure


def test_report_figures_and_numbers(tiny_run):
    md_path = make_report(tiny_run, generation=False)
    assert md_path == tiny_run / "report.md"
    md = md_path.read_text()
    for key, name in REPORT_FIGURES.items():
        if key == "memorisation":  # drawn from generation_metrics.json only
            assert f"](report/{name})" not in md and "memorisation (no generation_metrics.json)" in md
            continue
        assert f"](report/{name})" in md, name
        _check_png(tiny_run / "report" / name)
    # which run, data, settings, device, versions
    assert f"`{tiny_run}`" in md and "report device | cpu" in md and "torch " in md and "monai " in md
    assert '"embedding_dim": 8' in md  # the run's own settings (run_config.json), not the defaults
    assert "not computed" in md and "--no-generation" in md

    metrics = json.loads((tiny_run / "metrics.json").read_text())
    rec, prior = metrics["reconstruction"]["metrics"], metrics["prior"]["metrics"]
    rec_table = _table(md, "Reconstruction")
    assert math.isclose(float(rec_table["SSIM (whole image)"][0]), rec["test_ssim"], rel_tol=1e-3)
    assert math.isclose(float(rec_table["PSNR (dB, whole image)"][0]), rec["test_psnr"], rel_tol=1e-3)
    assert math.isclose(float(rec_table["codebook perplexity"][0]), rec["test_perplexity"], rel_tol=1e-3)
    assert int(rec_table["codes used"][0]) == int(rec["test_codes_used"])
    prior_table = _table(md, "Prior")
    assert math.isclose(float(prior_table["NLL (nats/token)"][0]), prior["test_nll"], rel_tol=1e-3)
    assert math.isclose(float(prior_table["bits/dim"][0]), prior["test_bits_per_dim"], rel_tol=1e-3)
    # the report's own codebook count over the test split agrees with the bundle evaluator's
    used, k = map(int, re.search(r"(\d+) of (\d+) codes used", md).groups())
    assert (used, k) == (int(rec["test_codes_used"]), TINY_DEMO["num_embeddings"])
    perplexity = float(re.search(r"dead, perplexity (\d+(?:\.\d+)?)", md).group(1))
    assert math.isclose(perplexity, rec["test_perplexity"], rel_tol=1e-3)

    # the record holds what the Markdown shows, with seeds, counts, versions, device and the figures' arrays
    record = json.loads((tiny_run / REPORT_RECORD).read_text())
    assert _check_tables_in_record(md, record) >= 9
    assert record["metrics"]["reconstruction"]["metrics"] == rec and record["metrics"]["prior"]["metrics"] == prior
    usage = record["codebook_usage"]
    assert (usage["used"], usage["num_embeddings"]) == (used, k) and sum(usage["counts"]) == usage["tokens"]
    assert report_number(usage["perplexity"]) in md and usage["images"] == record["data"]["counts"]["test"]
    assert record["device"]["report"] == "cpu" and {"torch", "monai", "matplotlib"} <= set(record["versions"])
    assert record["parameters"]["seed"] == 0 and record["samples"]["source"] == "files"
    assert record["samples"]["seed"] == json.loads((tiny_run / "samples" / "samples.json").read_text())["seed"]
    assert record["model"]["spatial_dims"] == 2 and record["generation"]["status"] == "missing"
    for rel in record["arrays"].values():
        assert (tiny_run / rel).is_file(), rel

    scalars = read_tensorboard_scalars(tiny_run / "tensorboard")
    assert {"loss", "lr", "val_ssim"} <= set(scalars["vqvae"]) and "val_nll" in scalars["prior_transformer"]
    steps, values = scalars["prior_transformer"]["val_nll"]
    assert steps.tolist() == [1, 2] and np.isfinite(values).all()


def _fake_generation_metrics() -> dict:
    row = {"better": "lower", "generated": 12.5, "real_floor": 3.25, "generated_ci": [10.0, 15.0]}
    group = {
        "counts": {"samples": 6, "real_test": 8, "real_train": 20, "real_floor_subset": 6},
        "metrics": {"fid": row},
        "memorisation": {
            "generated_quantiles": {"q50": 0.61},
            "real_test_quantiles": {"q50": 0.66},
            "generated_max": 0.7,
            "real_test_max": 0.8,
            "copy_fraction": 0.0,
            "generated_values": [0.5, 0.6, 0.7],
            "real_test_values": [0.6, 0.7, 0.8],
        },
    }
    return {
        "prior": "transformer",
        "seed": 7,
        "sampling": {"num_samples_per_class": 3, "num_samples": 6, "temperature": 1.0, "seed": 7},
        "feature_net": {"version": "test-1", "data_hash": "abc", "test_check": {"class_accuracy": 0.5}},
        "generation": {"seed": 7, "k": 5, "num_bootstrap": 10, "groups": {"all": group}},
        "reconstruction": {"all": {"num_images": 8, "ssim_brain": 0.4321, "ssim_brain_ci": [0.4, 0.45],
                                   "psnr_brain": 20.5, "ssim_whole_image": 0.5, "psnr_whole_image": 21.0}},
    }  # fmt: skip


def test_cli_report_with_generation_metrics_and_fresh_samples(tiny_run, capsys):
    gen_file = tiny_run / "generation_metrics.json"
    gen_file.write_text(json.dumps(_fake_generation_metrics()))
    hidden = tiny_run.parent / "samples_hidden"
    shutil.move(tiny_run / "samples", hidden)  # no sample files: the report draws fresh samples
    try:
        assert main(["report", "--run", str(tiny_run)]) == 0
    finally:
        shutil.move(hidden, tiny_run / "samples")
        gen_file.unlink()
    assert str(tiny_run / "report.md") in capsys.readouterr().out
    md = (tiny_run / "report.md").read_text()
    assert _table(md, "Generation")["fid"][:4] == ["12.5", "[10, 15]", "3.25", "-"]  # value, CI, floor of the file
    assert "seed 7" in md and "0.4321" in md  # seeds and masked reconstruction SSIM from the file
    assert "fresh samples" in md
    record = json.loads((tiny_run / REPORT_RECORD).read_text())
    assert _check_tables_in_record(md, record) >= 20  # metrics.json and generation_metrics.json numbers
    assert record["generation"]["status"] == "read" and record["generation"]["record"]["seed"] == 7
    assert record["samples"]["source"] == "fresh" and record["samples"]["seed"] == 0
    rows = ["sampled NC", "real NC (test)", "sampled AD", "real AD (test)"]
    assert [r["label"] for r in record["samples"]["rows"]] == rows
    assert f"](report/{REPORT_FIGURES['memorisation']})" in md
    _check_png(tiny_run / "report" / REPORT_FIGURES["memorisation"])
    _check_png(tiny_run / "report" / REPORT_FIGURES["samples"])


def _raise(*args, **kwargs):
    raise AssertionError("rendering a report must not load, sample, train or run a network")


def test_render_only_needs_no_model(tiny_run, monkeypatch, capsys):
    """Re-render the last record with loading, sampling, training and every network forward patched to raise."""
    import ignite.engine
    import torch

    from brainvq_monai.apps import demo, generation_eval, run_loader
    from brainvq_monai.engines import feature_trainer
    from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer

    computed = (tiny_run / "report.md").read_text()  # the last report: fresh samples, generation_metrics.json
    # since then generation_metrics.json was removed and the sample files came back: neither may change the render
    assert not (tiny_run / "generation_metrics.json").exists() and (tiny_run / "samples").is_dir()
    for f in (tiny_run / "report").glob("*.png"):
        f.unlink()
    for target, name in (
        (run_loader, "load_run"), (generation_eval, "run_generation_eval"), (generation_eval, "sample_run"),
        (generation_eval, "ensure_feature_net"), (feature_trainer, "train_feature_net"), (demo, "run_demo"),
        (AutoregressivePriorInferer, "sample"), (AutoregressivePriorInferer, "sample_codes"),
        (torch.nn.Module, "__call__"), (torch, "load"), (ignite.engine.Engine, "run"),
    ):  # fmt: skip
        monkeypatch.setattr(target, name, _raise)
    assert main(["report", "--run", str(tiny_run), "--render-only"]) == 0
    assert str(tiny_run / "report.md") in capsys.readouterr().out
    rendered = (tiny_run / "report.md").read_text()

    def drop_time(md: str) -> str:
        return re.sub(r"\| report written \| [^|]+ \|", "", md)

    assert drop_time(rendered) == drop_time(computed)  # the record's report, not the run folder's current state
    assert "fresh samples" in rendered and "seed 7" in rendered
    for name in REPORT_FIGURES.values():
        _check_png(tiny_run / "report" / name)


def test_renderer_imports_no_networks(tiny_run):
    """In a fresh process, rendering imports neither networks, inferers, engines nor apps (nor MONAI)."""
    code = (
        "import sys; from brainvq_monai.visualize.report import render_report; "
        f"render_report({str(tiny_run)!r}); "
        "bad = [m for m in sys.modules if m.startswith(('brainvq_monai.networks', 'brainvq_monai.inferers', "
        "'brainvq_monai.engines', 'brainvq_monai.apps', 'brainvq_monai.bundle', 'monai', 'ignite'))]; "
        "assert not bad, bad"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_render_only_without_record_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["report", "--run", str(tmp_path / "run"), "--render-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "report.json" in err and "brainvq report" in err


def test_report_bad_run_dir_is_one_line(tmp_path, capsys):
    assert main(["report", "--run", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "nope") in err and "not found" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(BrainVQInputError, match="no run_settings.json"):
        make_report(tmp_path / "empty", generation=False)
    assert main(["report", "--run", str(tmp_path / "empty"), "--no-generation"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "empty" in err and "run_settings.json" in err


def test_figure_arrays_of_volumes_are_central_slices(tmp_path):
    """The compute stage stores what the figures show: a 2D plane per image, a volume's central axial slice."""
    import torch

    from brainvq_monai.apps.report_compute import reconstruction_panel
    from brainvq_monai.visualize.grids import to_display_slice

    g = torch.Generator().manual_seed(0)
    volumes = torch.rand(3, 1, 12, 10, 8, generator=g)
    recon = (volumes + 0.1 * torch.rand(volumes.shape, generator=g)).clamp(0, 1)
    items = [{"subject": f"S{i}"} for i in range(3)]
    panel = reconstruction_panel(items, volumes, torch.tensor([0, 1, 0]), recon, [0, 2], {0: "NC"}, tmp_path / "r.npz")
    assert [c["subject"] for c in panel["columns"]] == ["S0", "S2"] and panel["num_images"] == 3
    mse = ((recon[0] - volumes[0]) ** 2).mean()
    assert math.isclose(panel["columns"][0]["psnr"], float(10 * torch.log10(1 / mse)), rel_tol=1e-5)  # whole volume
    arrays = np.load(tmp_path / "r.npz")
    assert arrays["inputs"].shape == (2, 1, 12, 10)
    for stored, volume in zip(arrays["inputs"], volumes[[0, 2]]):
        np.testing.assert_array_equal(to_display_slice(stored), to_display_slice(volume))


@pytest.mark.parametrize(("dims", "data_format"), [(3, "nifti"), (2, "nifti")])
def test_report_of_a_3d_run_and_of_nifti_slices(dims, data_format, bundle_run):
    """``brainvq report`` on bundle runs other than the 2D demo: the 3D bundle, and the 2D bundle on NIfTI slices
    (a bundle folder trained in place: its run lives in runs/)."""
    root = bundle_run(dims, data_format)
    assert main(["report", "--run", str(root), "--no-generation", "--device", "cpu"]) == 0
    record = json.loads((root / "runs" / "report.json").read_text())
    assert record["model"]["spatial_dims"] == dims and record["data"]["format"] == data_format
    md = (root / "runs" / "report.md").read_text()
    assert "## Metrics" in md and "## Figures" in md
    for name in ("reconstructions", "samples"):
        assert (root / "runs" / record["arrays"][name]).is_file()

"""scripts/compare.py: both head-to-heads run end to end in the hidden tiny mode and write a complete JSON report."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "compare.py")


def _load_script():
    spec = importlib.util.spec_from_file_location("brainvq_compare_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _floats(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _floats(v)
    elif isinstance(x, list):
        for v in x:
            yield from _floats(v)
    elif isinstance(x, float):
        yield x


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    json_file = out / "report" / "compare.json"
    proc = subprocess.run(
        [
            sys.executable,
            SCRIPT,
            "--tiny",
            "--seed",
            "1",
            "--threads",
            "1",
            "--out",
            str(out),
            "--json",
            str(json_file),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(json_file.read_text()), proc.stdout


def test_report_metadata(tiny_run):
    report, _ = tiny_run
    assert report["mode"] == "tiny" and report["seeds"]["weights"] == 1 and report["seeds"]["sampling"] == 1
    assert report["device"]["device"] == "cpu" and report["device"]["torch_threads"] == 1
    for key in ("python", "torch", "monai", "brainvq_monai"):
        assert report["versions"][key]
    assert report["date"][:2] == "20" and report["seconds_total"] > 0
    data = report["data"]
    assert data["reused"] is False and data["num_train"] > 0 and data["num_test"] > 0
    assert set(data["test_per_class"]) == {"NC", "AD"} and min(data["test_per_class"].values()) > 0
    assert not any(math.isnan(v) or math.isinf(v) for v in _floats(report))


def test_vqvae_head_to_head(tiny_run):
    report, _ = tiny_run
    settings, models = report["vqvae"]["settings"], report["vqvae"]["models"]
    assert set(models) == {"brainvq", "monai"}
    assert settings["steps"] == 3 and settings["lr"] == 1e-4 and settings["channels_shrunk"] is True
    assert settings["num_res_layers"] == 2 and settings["downsample_parameters"] == [[2, 4, 1, 1], [2, 4, 1, 1]]
    ours, monai = models["brainvq"], models["monai"]
    assert ours["quantizer"] == "RobustEMAQuantizer" and ours["decay"] == 0.99
    assert monai["quantizer"] == "EMAQuantizer" and monai["decay"] == 0.5
    assert ours["num_params"] == monai["num_params"]  # same architecture, only the quantizer differs
    for m in (ours, monai):
        assert -1.0 <= m["test_ssim"] <= 1.0 and math.isfinite(m["test_psnr"])
        assert 1 <= m["codes_used"] <= m["num_embeddings"] == settings["num_embeddings"]
        assert 1.0 - 1e-6 <= m["perplexity"] <= m["codes_used"] + 1e-6
        assert m["num_test_images"] == report["data"]["num_test"] and m["train_seconds"] > 0
    # k-means init spreads the codes from the first step; MONAI's random codebook starts collapsed
    assert ours["codes_used"] > monai["codes_used"]


def test_prior_head_to_head(tiny_run):
    report, _ = tiny_run
    settings, models = report["prior"]["settings"], report["prior"]["models"]
    assert set(models) == {"pixelcnn", "transformer"}
    assert settings["steps"] == 3 and settings["num_samples"] == 2 * settings["samples_per_class"]
    p, t = models["pixelcnn"]["num_params"], models["transformer"]["num_params"]
    assert 0.8 < p / t < 1.25  # matched parameter counts
    assert settings["pixelcnn"]["channels"] > 0
    log_k = math.log(settings["num_embeddings"])
    for m in models.values():
        assert 0 < m["test_nll"] < 2 * log_k
        assert m["sampling_seconds"] > 0 and m["num_samples"] == settings["num_samples"]
        assert abs(m["seconds_per_sample"] - m["sampling_seconds"] / m["num_samples"]) < 1e-9
    gen = report["prior"]["generation"]
    try:
        import brainvq_monai.metrics.generation  # noqa: F401
    except ImportError:
        assert gen["available"] is False
        return
    assert gen["available"] is True and gen["feature_net"]["trained_on"] == "training split only"
    for name in ("pixelcnn", "transformer"):
        groups = gen[name]["groups"]
        assert set(groups) == {"all", "NC", "AD"}
        assert groups["all"]["counts"]["samples"] == settings["num_samples"]
        rows = groups["all"]["metrics"]
        assert rows["fid"]["generated"] >= 0 and rows["fid"]["real_floor"] >= 0
        assert 0 <= rows["ms_ssim_diversity"]["real_test"] <= 1


def test_table_printed(tiny_run):
    report, stdout = tiny_run
    assert report["table"] in stdout
    for text in ("(a) VQ-VAE", "(b) Priors", "| brainvq |", "| monai |", "| pixelcnn |", "| transformer |"):
        assert text in report["table"]
    if report["prior"]["generation"]["available"]:
        assert "real-vs-real floor" in report["table"] and "FID" in report["table"]


def test_batch_plan_is_shared_and_full():
    compare = _load_script()
    a = compare._batch_plan(10, 4, 7, seed=3)
    assert len(a) == 7 and all(b.numel() == 4 for b in a)
    assert all(torch.equal(x, y) for x, y in zip(a, compare._batch_plan(10, 4, 7, seed=3)))
    assert not all(torch.equal(x, y) for x, y in zip(a, compare._batch_plan(10, 4, 7, seed=4)))
    assert sorted(torch.cat(a[:2]).tolist()) == sorted(set(torch.cat(a[:2]).tolist()))  # no repeats within an epoch


def test_bad_device_is_one_line_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--tiny", "--device", "cuda", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--device" in proc.stderr

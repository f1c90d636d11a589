"""brainvq compare: both head-to-heads run end to end in the hidden tiny mode and write a complete JSON report."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch

from brainvq_monai.apps.compare import batch_plan
from brainvq_monai.cli import main


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
    args = ["compare", "--tiny", "--seed", "1", "--threads", "1", "--out", str(out), "--json", str(json_file)]
    stdout = io.StringIO()  # a module-scoped fixture has no capsys
    with contextlib.redirect_stdout(stdout):
        assert main(args) == 0
    return json.loads(json_file.read_text()), stdout.getvalue()


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
    assert set(models) == {"pixelcnn", "transformer", "dcgan"}
    assert settings["steps"] == 3 and settings["num_samples"] == 2 * settings["samples_per_class"]
    p, t = models["pixelcnn"]["num_params"], models["transformer"]["num_params"]
    assert 0.8 < p / t < 1.25  # matched parameter counts
    assert 0.5 < models["dcgan"]["sampling_params"] / t < 2  # the DCGAN's generator: the closest width
    assert models["dcgan"]["sampling_params"] == settings["dcgan"]["generator_params"] < models["dcgan"]["num_params"]
    assert settings["pixelcnn"]["channels"] > 0
    log_k = math.log(settings["num_embeddings"])
    for name, m in models.items():
        if name == "dcgan":  # no likelihood: no NLL, a generator loss instead of a training NLL
            assert m["test_nll"] is None and math.isfinite(m["final_generator_loss"])
        else:
            assert 0 < m["test_nll"] < 2 * log_k
        assert 0 <= m["test_code_js"] <= 1
        assert m["sampling_seconds"] > 0 and m["num_samples"] == settings["num_samples"]
        assert abs(m["seconds_per_sample"] - m["sampling_seconds"] / m["num_samples"]) < 1e-9
    gen = report["prior"]["generation"]
    assert gen["feature_net"]["trained_on"] == "training split only"
    for name in ("pixelcnn", "transformer", "dcgan"):
        groups = gen[name]["groups"]
        assert set(groups) == {"all", "NC", "AD"}
        assert groups["all"]["counts"]["samples"] == settings["num_samples"]
        rows = groups["all"]["metrics"]
        assert rows["fid"]["generated"] >= 0 and rows["fid"]["real_floor"] >= 0
        assert 0 <= rows["ms_ssim_diversity"]["real_test"] <= 1


def test_table_printed(tiny_run):
    report, stdout = tiny_run
    assert report["table"] in stdout
    for text in (
        "(a) VQ-VAE",
        "(b) Priors",
        "| brainvq |",
        "| monai |",
        "| pixelcnn |",
        "| transformer |",
        "| dcgan |",
    ):
        assert text in report["table"]
    assert "— (no likelihood)" in report["table"] and "s/brain" in report["table"]
    assert "real-vs-real floor" in report["table"] and "FID" in report["table"]
    assert report["command"] == f"brainvq compare --tiny --seed 1 --threads 1 --out {report['data']['dir'][:-5]}" + (
        f" --json {report['data']['dir'][:-5]}/report/compare.json"
    )


def test_batch_plan_is_shared_and_full():
    a = batch_plan(10, 4, 7, seed=3)
    assert len(a) == 7 and all(b.numel() == 4 for b in a)
    assert all(torch.equal(x, y) for x, y in zip(a, batch_plan(10, 4, 7, seed=3)))
    assert not all(torch.equal(x, y) for x, y in zip(a, batch_plan(10, 4, 7, seed=4)))
    assert sorted(torch.cat(a[:2]).tolist()) == sorted(set(torch.cat(a[:2]).tolist()))  # no repeats within an epoch


def test_training_goes_through_the_engines(tiny_run):
    report, _ = tiny_run
    assert report["vqvae"]["settings"]["trainer"].startswith("brainvq_monai.engines.VQVAETrainer")
    assert report["prior"]["settings"]["trainer"].startswith("brainvq_monai.engines.PriorTrainer")


def test_monai_vqvae_updates_its_codebook_once_per_step():
    """MONAI's EMA quantizer in training mode: one step of train_vqvae is one EMA update (not two)."""
    from monai.networks.nets import VQVAE

    from brainvq_monai.apps.compare.models import vqvae_kwargs
    from brainvq_monai.apps.compare.settings import MODES
    from brainvq_monai.apps.compare.training import train_vqvae

    torch.manual_seed(0)
    net = VQVAE(**vqvae_kwargs(MODES["tiny"]))
    ema = net.quantizer.quantizer
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        _, _, indices = ema.quantize(net.encode(x))
    counts = torch.bincount(indices.reshape(-1), minlength=ema.num_embeddings).float()
    expected = ema.ema_cluster_size * ema.decay + counts * (1 - ema.decay)
    train_vqvae(net, x, [torch.arange(4)], lr=1e-4, device=torch.device("cpu"))
    assert torch.allclose(ema.ema_cluster_size, expected)


def test_bad_device_is_one_line_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    assert main(["compare", "--tiny", "--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("brainvq: error: --device:") and len(err.splitlines()) == 1


@pytest.mark.parametrize(("dims", "data_format"), [(3, "nifti"), (2, "nifti")])
def test_compare_on_a_run_folder(dims, data_format, bundle_run, tmp_path):
    """``brainvq compare --run``: the priors on a bundle run's own data and VQ-VAE, 3D (transformer against the block
    transformer; the PixelCNN is 2D only) and NIfTI slices (PixelCNN against the transformer)."""
    root = bundle_run(dims, data_format)
    json_file = tmp_path / "compare.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["compare", "--tiny", "--run", str(root), "--out", str(tmp_path), "--json", str(json_file)]) == 0
    report = json.loads(json_file.read_text())
    assert report["data"]["run"] == str(root / "runs") and report["vqvae"]["models"] == {}
    names = {"transformer", "block_transformer" if dims == 3 else "pixelcnn", "dcgan"}
    assert set(report["prior"]["models"]) == names
    assert report["prior"]["settings"]["latent_shape"] == ([2, 2, 2] if dims == 3 else [8, 8])
    for name, m in report["prior"]["models"].items():
        assert m["num_params"] > 0 and (m["test_nll"] is None if name == "dcgan" else 0 < m["test_nll"] < 10)
    printed = out.getvalue()
    assert "(a) VQ-VAE: not run" in printed and all(f"| {name} |" in printed for name in names)

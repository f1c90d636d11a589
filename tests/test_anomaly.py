"""Anomaly maps: NLL maps in image space, healing through the priors' incremental decoders, scores, bundle config."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, make_tiny_vqvae
from monai.bundle import ConfigWorkflow
from monai.networks.nets import VQVAE

from brainvq_monai.bundle.layout import config_files
from brainvq_monai.inferers.anomaly import (
    SCORE_COLUMNS,
    anomaly_map,
    auroc,
    brain_mask,
    heal_codes,
    likelihood_threshold,
    masked_mean,
    region_mask,
    residual_map,
    upsample_map,
)
from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer
from brainvq_monai.inferers.sampling import token_nll
from brainvq_monai.networks.nets.gated_pixelcnn import GatedPixelCNN
from brainvq_monai.networks.nets.transformer_prior import TransformerPrior
from brainvq_monai.utils.errors import BrainVQInputError

K = 8


def _vqvae(spatial_dims: int = 2) -> VQVAE:
    """MONAI's VQVAE, one stride-2 level, K codes of dim 3."""
    return make_tiny_vqvae(spatial_dims, VQVAE, levels=1, num_embeddings=K, embedding_dim=3).eval()


def _prior(name: str, latent=(4, 4), num_classes=2):
    torch.manual_seed(1)
    if name == "pixelcnn":
        return GatedPixelCNN(2, K, num_classes, channels=8, num_layers=2, kernel_size=3).eval()
    return TransformerPrior(
        len(latent), K, latent, num_classes, attn_layers_dim=16, attn_layers_depth=2, attn_layers_heads=2,
        ordering_type="s_curve",
    ).eval()  # fmt: skip


CASES = [("pixelcnn", 2), ("transformer", 2), ("transformer", 3)]


def _setup(name: str, dims: int):
    image = (8,) * dims
    latent = (4,) * dims
    vqvae, prior = _vqvae(dims), _prior(name, latent)
    x = torch.rand(3, 1, *image, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([0, 1, 0])
    return vqvae, prior, x, labels, latent


@pytest.mark.parametrize("name,dims", CASES)
def test_anomaly_map_matches_token_nll_in_image_space(name, dims):
    vqvae, prior, x, labels, latent = _setup(name, dims)
    nll_map = AutoregressivePriorInferer().get_anomaly_map(x, vqvae, prior, labels)
    assert nll_map.shape == (3, 1, *x.shape[2:])
    codes = vqvae.index_quantize(x)
    latent_nll = token_nll(prior, codes, labels)
    # nearest upsampling: every 2^dims pixel block carries its token's NLL; the image mean is the token mean
    torch.testing.assert_close(nll_map[(slice(None), 0, *[slice(None, None, 2)] * dims)], latent_nll)
    torch.testing.assert_close(nll_map.flatten(1).mean(1), latent_nll.flatten(1).mean(1))
    linear = anomaly_map(x, vqvae, prior, labels, mode="linear")
    assert linear.shape == nll_map.shape and not torch.equal(linear, nll_map)
    assert linear.min() >= latent_nll.min() - 1e-5 and linear.max() <= latent_nll.max() + 1e-5
    with pytest.raises(BrainVQInputError, match="mode"):
        upsample_map(latent_nll, x.shape[2:], "bicubic")


@pytest.mark.parametrize("name,dims", CASES)
def test_threshold_zero_keeps_everything_and_decodes_the_original_codes(name, dims):
    vqvae, prior, x, labels, _ = _setup(name, dims)
    out = AutoregressivePriorInferer().heal(x, vqvae, prior, threshold=0.0, class_labels=labels, generator=0)
    codes = vqvae.index_quantize(x)
    assert torch.equal(out.codes, codes) and torch.equal(out.original_codes, codes) and not out.resampled.any()
    assert torch.equal(out.image, vqvae.decode_samples(codes))
    assert torch.equal(residual_map(out.image, out.image), torch.zeros_like(out.image))


@pytest.mark.parametrize("name,dims", CASES)
def test_threshold_one_is_exactly_sampling_the_prior(name, dims):
    vqvae, prior, x, labels, latent = _setup(name, dims)
    inferer = AutoregressivePriorInferer()
    out = inferer.heal(x, vqvae, prior, threshold=1.0, class_labels=labels, generator=7)
    sampled = inferer.sample_codes(prior, 3, latent, labels, generator=7)
    assert out.resampled.all() and torch.equal(out.codes, sampled)
    assert not torch.equal(out.codes, out.original_codes)
    naive, _ = heal_codes(prior, out.original_codes, 1.0, labels, generator=7, use_cache=False)
    assert torch.equal(naive, sampled)


@pytest.mark.parametrize("name,dims", CASES)
def test_kept_codes_are_likely_given_the_healed_prefix(name, dims):
    """The keep test is made on the healed prefix: re-scoring the healed map with a full forward pass agrees."""
    vqvae, prior, x, labels, _ = _setup(name, dims)
    codes = torch.randint(0, K, (3, *(4,) * dims), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        threshold = float(torch.exp(-token_nll(prior, codes, labels)).median())  # about half the tokens resampled
    healed, resampled = heal_codes(prior, codes, threshold, labels, generator=3)
    naive, resampled_naive = heal_codes(prior, codes, threshold, labels, generator=3, use_cache=False)
    assert torch.equal(healed, naive) and torch.equal(resampled, resampled_naive)
    assert resampled.any() and (~resampled).any()
    assert torch.equal(healed[~resampled], codes[~resampled])
    p_healed = torch.exp(-token_nll(prior, healed, labels))
    assert (p_healed[~resampled] > threshold).all()


def _forbid(prior, code: int) -> None:
    """Makes ``code`` practically impossible: a large negative bias on its logit in the output layer."""
    head = [m for m in prior.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    with torch.no_grad():
        head.bias[code] -= 40.0


@pytest.mark.parametrize("name,dims", CASES)
def test_planted_impossible_codes_get_the_highest_nll_and_are_replaced(name, dims):
    _, prior, _, labels, latent = _setup(name, dims)
    bad = K - 1
    _forbid(prior, bad)
    codes = torch.randint(0, K - 1, (3, *latent), generator=torch.Generator().manual_seed(4))
    planted = torch.zeros_like(codes, dtype=torch.bool)
    planted[0].view(-1)[[3, 9]] = True
    planted[2].view(-1)[[14]] = True
    codes[planted] = bad
    nll = token_nll(prior, codes, labels)
    assert nll[planted].min() > nll[~planted].max() + 20
    image_nll = upsample_map(nll, (8,) * dims)
    flat_argmax = image_nll[0, 0].flatten().argmax()
    block = torch.unravel_index(flat_argmax, (8,) * dims)
    assert planted[0][tuple(i // 2 for i in block)]  # the hottest pixel lies on a planted token
    healed, resampled = heal_codes(prior, codes, threshold=1e-6, class_labels=labels, generator=0)
    assert torch.equal(resampled, planted) and not (healed == bad).any()
    assert torch.equal(healed[~planted], codes[~planted])


def test_residual_map_is_restricted_to_resampled_tokens_and_smoothed():
    x = torch.zeros(1, 1, 8, 8)
    healed = torch.ones(1, 1, 8, 8)
    resampled = torch.zeros(1, 4, 4, dtype=torch.bool)
    resampled[0, 1, 2] = True
    res = residual_map(x, healed, resampled)
    assert res.sum() == 4 and res[0, 0, 2:4, 4:6].eq(1).all()
    smooth = residual_map(x, healed * 0 + torch.eye(8)[None, None], sigma=1.0)
    assert smooth.shape == x.shape and 0 < smooth.max() < 1
    with pytest.raises(BrainVQInputError, match="healed"):
        residual_map(x, healed[..., :4])


def test_masks_means_thresholds_and_auroc():
    box = region_mask((10, 20), (0.3, 0.7))
    assert box.shape == (1, 1, 10, 20) and box.sum() == 4 * 8 and box[0, 0, 3, 6] and not box[0, 0, 2, 6]
    assert region_mask((8, 8, 8), [(0, 0.5), (0, 1), (0.5, 1)]).sum() == 4 * 8 * 4
    with pytest.raises(BrainVQInputError, match="box"):
        region_mask((8, 8), [(0.5, 0.2)])
    maps = torch.arange(8.0).view(2, 1, 2, 2)
    mask = torch.tensor([[True, False], [False, False]])[None, None]
    torch.testing.assert_close(masked_mean(maps, mask), torch.tensor([0.0, 4.0]))
    torch.testing.assert_close(masked_mean(maps), torch.tensor([1.5, 5.5]))
    assert masked_mean(maps, torch.zeros_like(mask)).isnan().all()
    img = torch.zeros(1, 1, 4, 4)
    img[..., 1, 1] = 0.5
    assert brain_mask(img, dilation=0).sum() == 1
    nll = torch.arange(100.0)
    assert likelihood_threshold(nll, 0.9) == pytest.approx(float(torch.exp(-torch.quantile(nll, 0.9))))
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 60).astype(float), rng.integers(0, 2, 60)  # many ties
    from sklearn.metrics import roc_auc_score

    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert auroc([3, 4, 1, 2], [1, 1, 0, 0]) == 1.0 and auroc([1, 2, 3, 4], [1, 1, 0, 0]) == 0.0
    with pytest.raises(BrainVQInputError, match="both classes"):
        auroc([1.0, 2.0], [1, 1])


# ---------------------------------------------------------------- bundle config
CONFIGS = REPO / "bundles" / "brain_vqvae_2d" / "configs"
TINY_PRIOR = {
    "transformer": {"attn_layers_dim": 16, "attn_layers_depth": 1, "attn_layers_heads": 2},
    "pixelcnn": {"channels": 8, "num_layers": 2, "kernel_size": 3},
}


def _tiny(root: Path, data: Path, prior: str) -> dict:
    over = {
        "bundle_root": str(root),
        "output_dir": str(root / "runs"),
        "ckpt_dir": str(root / "models"),
        "dataset_dir": str(data),
        "spatial_size": [32, 32],
        "num_embeddings": 16,
        "embedding_dim": 8,
        "batch_size": 8,
        "num_workers": 0,
        "prior": prior,
        "heal_threshold": 0.05,
        f"prior_def#{prior}": TINY_PRIOR[prior],
    }
    over.update({f"autoencoder_def#{k}": v for k, v in {"channels": [8, 16], "num_res_channels": [8, 16]}.items()})
    return over


def _workflow(over: dict) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=config_files(CONFIGS.parent, "anomaly"), meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
        workflow_type=None, **over,
    )  # fmt: skip
    wf.initialize()
    return wf


def _save_untrained_checkpoints(over: dict) -> None:
    """Random-weight checkpoints for the configured networks (what training would leave in ``ckpt_dir``)."""
    wf = _workflow(over)
    models = Path(over["ckpt_dir"])
    models.mkdir(parents=True, exist_ok=True)
    torch.save(wf.parser.get_parsed_content("autoencoder_def").state_dict(), models / "model_autoencoder.pt")
    torch.save(wf.parser.get_parsed_content("network_def").state_dict(), models / "model.pt")


def _check_outputs(out: Path, datalist: dict) -> None:
    rows = list(csv.DictReader(open(out / "scores.csv", encoding="utf-8")))
    assert len(rows) == len(datalist["test"]) > 0
    assert {r["label"] for r in rows} == {str(i["label"]) for i in datalist["test"]}
    for r in rows:
        values = [float(r[k]) for k in ("nll_brain", "nll_region", "residual_brain", "residual_region")]
        assert all(np.isfinite(values)) and float(r["nll_brain"]) > 0 and 0 <= float(r["resampled_fraction"]) <= 1
        assert r["class"] in ("NC", "AD")
        assert np.load(out / f"{r['name']}_nll.npy").shape == (1, 32, 32)
        assert np.load(out / f"{r['name']}_residual.npy").shape == (1, 32, 32)
        assert (out / f"{r['name']}_healed.png").is_file()
    settings = json.loads((out / "anomaly_settings.json").read_text())
    assert settings["class_label"] == 0 and settings["threshold"] == 0.05


def test_bundle_config_in_process_and_through_monai_bundle_run(demo_cohort, tmp_path):
    over = _tiny(tmp_path / "t", demo_cohort, "transformer")
    _save_untrained_checkpoints(over)
    wf = _workflow(over)
    wf.run()
    wf.finalize()
    datalist = wf.parser.get_parsed_content("datalist_data")
    _check_outputs(tmp_path / "t" / "runs" / "anomaly", datalist)

    over = _tiny(tmp_path / "p", demo_cohort, "pixelcnn")
    _save_untrained_checkpoints(over)
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        json.dumps(config_files(CONFIGS.parent, "anomaly")),
    ]
    for k, v in over.items():
        args += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=str(REPO), timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    _check_outputs(tmp_path / "p" / "runs" / "anomaly", datalist)


# ---------------------------------------------------------------- brainvq anomaly
@pytest.mark.parametrize(("dims", "data_format"), [(2, "adni"), (2, "nifti"), (3, "nifti")])
def test_brainvq_anomaly_on_a_bundle_run(dims, data_format, bundle_run, capsys):
    """Settings, networks and data come from the run folder (load_run): the same command for 2D and 3D runs."""
    from brainvq_monai.cli import main

    tmp_path = bundle_run(dims, data_format)
    capsys.readouterr()
    figure, page = tmp_path / "figures" / "maps.png", tmp_path / "anomaly.md"
    args = ["anomaly", "--run", str(tmp_path), "--figure", str(figure), "--markdown", str(page), "--quantile", "0.9"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "runs" / "anomaly"  # a bundle trained in place: its run folder is runs/
    results = json.loads((out / "anomaly_results.json").read_text())
    assert results["normal_class"] == 0 and results["normal_class_name"] == "NC" and results["conditional"]
    assert results["spatial_size"] == ([32, 32] if dims == 2 else [16, 16, 16])
    assert results["calibration"]["split"] == "validation" and results["calibration"]["quantile"] == 0.9
    rows = list(csv.DictReader(open(out / "scores.csv", encoding="utf-8")))
    assert len(rows) == results["num_slices"] > 0 and {r["class"] for r in rows} == {"NC", "AD"}
    assert np.load(out / f"{rows[0]['name']}_nll.npy").shape == (1, *results["spatial_size"])
    assert (out / f"{rows[0]['name']}_healed{'.png' if dims == 2 else '.nii.gz'}").is_file()
    for score in SCORE_COLUMNS:
        assert 0 <= results["slice_auroc"][score] <= 1 and f"{score:20s} AUROC per slice" in printed
    assert figure.is_file() and "![anomaly maps](maps.png)" in page.read_text()
    assert results["command"] in page.read_text() and results["command"].startswith("brainvq anomaly --run")


def test_brainvq_anomaly_errors_are_one_line(tmp_path, capsys):
    from brainvq_monai.cli import main

    assert main(["anomaly", "--run", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("brainvq: error:") and "run folder not found" in err and len(err.splitlines()) == 1
    assert main(["anomaly", "--run", str(tmp_path), "--quantile", "1.5"]) == 2
    assert "--quantile" in capsys.readouterr().err

"""Loading a demo run folder and evaluating its generations (one tiny demo run shared by all tests)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import copy_run

from brainvq_monai.apps.generation_eval import GENERATION_METRICS, format_summary, run_generation_eval, slice_positions
from brainvq_monai.apps.run_loader import load_run
from brainvq_monai.bundle.run import RUN_SETTINGS
from brainvq_monai.networks.nets.feature_net import FEATURE_NET_VERSION
from brainvq_monai.utils.errors import BrainVQInputError


@pytest.fixture(scope="module")
def tiny_run(tiny_demo_run, tmp_path_factory):
    """A copy of the session's tiny demo run (these tests write generation metrics and feature nets into it)."""
    return copy_run(tiny_demo_run, tmp_path_factory.mktemp("run_loader") / "run")


def test_load_run_rebuilds_networks_and_data(tiny_run):
    record = json.loads((tiny_run / RUN_SETTINGS).read_text())
    assert record["settings"]["prior"] == "transformer" and record["settings"]["spatial_size"] == [32, 32]
    assert record["autoencoder_def"]["channels"] == [8, 16]
    assert record["prior_def"]["transformer"]["attn_layers_dim"] == 16
    assert record["config"]["autoencoder_def"]["channels"] == [8, 16]  # the run's config, settings baked in
    run = load_run(tiny_run)
    assert run.prior_name == "transformer" and run.class_names == {0: "NC", 1: "AD"} and run.conditional
    assert run.spatial_size == (32, 32) and run.latent_shape == (8, 8) and run.spatial_dims == 2
    assert not run.vqvae.training and not run.prior.training
    x, y = run.load_images("test")
    assert x.shape == (len(run.datalist["test"]), 1, 32, 32) and y.shape == (x.shape[0],)
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    x4, _ = run.load_images("training", max_items=4)
    assert x4.shape[0] == 4
    with torch.no_grad():  # the loaded VQ-VAE reconstructs like the demo's evaluation did
        rec = run.vqvae(x)[0]
    assert rec.shape == x.shape
    with pytest.raises(BrainVQInputError, match="split"):
        run.load_images("nope")


def test_moved_and_older_run_folders(tiny_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run, moved, ignore=shutil.ignore_patterns("tensorboard", "codes"))
    datalist_file = moved / "datalist_adni.json"
    dl = json.loads(datalist_file.read_text())
    old_root = dl["root"]
    text = datalist_file.read_text().replace(old_root, "/vanished/place/data")  # as if the run was moved
    datalist_file.write_text(text)
    record = json.loads((moved / RUN_SETTINGS).read_text())
    for key in ("output_dir", "ckpt_dir", "datalist", "autoencoder_ckpt", "prior_ckpt", "dataset_dir"):
        record["paths"][key] = record["paths"][key].replace(str(tiny_run), "/vanished/run")
    (moved / RUN_SETTINGS).write_text(json.dumps(record))
    run = load_run(moved)
    assert run.run_dir == moved and run.datalist["root"] == str(moved / "data")
    assert all(it["image"].startswith(str(moved / "data")) for it in run.datalist["training"])
    assert run.load_images("test", max_items=2)[0].shape == (2, 1, 32, 32)
    with pytest.raises(BrainVQInputError, match="not found"):
        load_run(tmp_path / "nope")
    (moved / RUN_SETTINGS).unlink()
    (moved / "run_config.json").write_text("{}")  # a run of brainvq_monai < 0.2.0
    with pytest.raises(BrainVQInputError, match="< 0.2.0"):
        load_run(moved)


def test_slice_positions():
    items = [{"slice": 10}, {"slice": 20}, {"slice": 15}]
    assert slice_positions(items).tolist() == [0.0, 1.0, 0.5]
    assert slice_positions([{"slice": 25}], items).tolist() == [1.0]
    assert slice_positions([{"image": "x"}]) is None


def test_run_generation_eval_writes_metrics_and_reuses_feature_net(tiny_run):
    kw = {"num_samples_per_class": 6, "feature_epochs": 2, "num_bootstrap": 5, "verbose": False}
    res = run_generation_eval(tiny_run, seed=3, **kw)
    saved = json.loads((tiny_run / GENERATION_METRICS).read_text())
    assert saved["seed"] == 3 and saved["sampling"]["num_samples"] == 12
    assert saved["feature_net"]["version"] == FEATURE_NET_VERSION and not saved["feature_net"]["reused"]
    assert (tiny_run / "models" / "feature_net.pt").is_file()
    groups = saved["generation"]["groups"]
    assert set(groups) == {"all", "NC", "AD"} and groups["all"]["counts"]["samples"] == 12
    assert {"fid", "kid", "ms_ssim_diversity", "nn_ssim_to_train"} <= set(groups["all"]["metrics"])
    rec = saved["reconstruction"]["all"]
    assert 0 < rec["ssim_brain"] <= 1 and rec["num_images"] == len(load_run(tiny_run).datalist["test"])
    assert "| fid |" in format_summary(res) and "SSIM brain" in format_summary(res)
    again = run_generation_eval(tiny_run, seed=3, write=False, **kw)
    assert again["feature_net"]["reused"] and again["feature_net"]["data_hash"] == res["feature_net"]["data_hash"]
    # same seed, same samples, same feature net: same numbers
    assert again["generation"]["groups"]["all"]["metrics"]["fid"]["generated"] == pytest.approx(
        res["generation"]["groups"]["all"]["metrics"]["fid"]["generated"]
    )
    other = run_generation_eval(tiny_run, seed=4, write=False, **kw)  # another seed: another feature net
    assert not other["feature_net"]["reused"]


@pytest.mark.parametrize(("dims", "data_format"), [(3, "nifti"), (2, "nifti"), (2, "oasis")])
def test_load_run_of_any_bundle_run(dims, data_format, bundle_run):
    """A bundle run of the 3D bundle, of the 2D bundle on NIfTI slices and on unlabelled OASIS PNG slices."""
    root = bundle_run(dims, data_format)
    run = load_run(root)  # the bundle folder trained in place: its record is in runs/
    assert run.run_dir == root / "runs" and run.spatial_dims == dims
    assert run.spatial_size == ((32, 32) if dims == 2 else (16, 16, 16))
    assert run.conditional == (data_format != "oasis")
    x, _ = run.load_images("test", max_items=2)
    assert x.shape == (2, 1, *run.spatial_size)
    with torch.no_grad():
        assert run.vqvae(x)[0].shape == x.shape
        codes = run.vqvae.index_quantize(x)
    assert tuple(codes.shape[1:]) == run.latent_shape

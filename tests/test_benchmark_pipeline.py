"""Benchmark section ``pipeline`` in tiny mode: every case measured on real files, checks pass, temp files removed."""

from __future__ import annotations

import math
import tempfile

import pytest
import torch

from brainvq_monai.apps.benchmark import pipeline
from brainvq_monai.apps.benchmark.report import data_feed

CASES = {
    "cache_nifti_slices_cachedataset_volumecache_off",
    "cache_nifti_slices_cachedataset_volumecache_on",
    "cache_nifti_slices_persistent_volumecache_off",
    "cache_nifti_slices_persistent_volumecache_on",
    "cache_png_2d_cachedataset",
    "cache_volumes_3d_cachedataset",
    "augment_per_sample_2d_workers0",
    "augment_per_sample_2d_workers2",
    "augment_per_sample_3d_workers0",
    "augment_per_sample_3d_workers2",
    "augment_batched_2d",
    "augment_batched_3d",
    "feed_batched_augment_2d_workers0",
    "codes_monai_dataloader",
    "codes_dataloader",
}


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench_tmp")
    before = tempfile.tempdir
    tempfile.tempdir = str(tmp)
    try:
        out = pipeline.run(torch.device("cpu"), quick=False, tiny=True, seed=0)
    finally:
        tempfile.tempdir = before
    assert list(tmp.iterdir()) == []  # cohort and persistent cache removed
    return out


def test_every_case_measured(rows):
    cases = [r["case"] for r in rows]
    assert set(cases) == CASES and len(cases) == len(set(cases))
    for row in rows:
        assert row["section"] == "pipeline"
        rate = row["results"]["samples_per_s"]
        assert rate is not None and math.isfinite(rate) and rate > 0, row["case"]
        assert row["config"]["torch_threads"] == 1 and "cohort" in row["config"]
        if row.get("check") is not None:
            assert row["check"]["passed"], row["case"]


def test_configs_and_references(rows):
    by_case = {r["case"]: r for r in rows}
    on = by_case["cache_nifti_slices_cachedataset_volumecache_on"]
    off = by_case["cache_nifti_slices_cachedataset_volumecache_off"]
    assert off["config"]["read_cache_volumes"] == 0 and on["config"]["read_cache_volumes"] > 0
    assert on["config"]["items"] == off["config"]["items"] > on["config"]["volumes"] == 2
    assert on["reference"] == off["case"] and off["results"]["speedup"] == 1.0
    assert by_case["cache_nifti_slices_persistent_volumecache_on"]["results"]["epoch2_samples_per_s"] > 0
    assert by_case["augment_per_sample_2d_workers2"]["config"]["workers"] == 2
    assert (
        by_case["augment_batched_2d"]["config"]["batch"] == 16 and by_case["augment_batched_3d"]["config"]["batch"] == 2
    )
    codes = by_case["codes_dataloader"]
    assert codes["check"]["passed"] and codes["config"]["latent"] == [8, 8]
    assert codes["results"]["samples_per_s"] == pytest.approx(codes["results"]["batches_per_s"] * 128 / 8)
    roles = [r["config"].get("role") for r in rows]
    assert roles.count("vqvae_2d_feed") == 3 and roles.count("prior_feed") == 2


def test_rows_feed_the_report(rows):
    training = [
        {"case": "vqvae_trainer_bf16_cl_fused", "config": {}, "results": {"images_per_s": 1e9}},
        {
            "case": "prior_transformer_trainer_bf16",
            "config": {"tokens_per_sequence": 65},
            "results": {"tokens_per_s": 64},
        },
    ]
    feed = data_feed({"training": training, "pipeline": rows})
    assert feed["augment_per_sample_2d_workers0_keeps_up"] is False  # nothing feeds 1e9 images/s
    assert feed["codes_dataloader_keeps_up"] is True  # one sequence/s is easy
    assert "feed_batched_augment_2d_workers0_samples_per_s" in feed


def test_format_rows(rows):
    text = pipeline.format_rows(rows)
    lines = text.splitlines()
    for case in CASES:
        assert any(line.startswith(case + " ") for line in lines)
    bad = [dict(rows[-1], check={"kind": "x", "passed": False})]
    assert "CHECK FAILED" in pipeline.format_rows(bad)

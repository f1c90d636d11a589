"""brainvq benchmark runs every section end to end in its tiny test mode and writes a complete JSON report."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from brainvq_monai.cli import main


def _run(*args: str) -> tuple[int, str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["benchmark", *args])
    return code, stdout.getvalue()


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "sub" / "report.json"
    code, stdout = _run("--tiny", "--device", "cpu", "--seed", "3", "--threads", "1", "--json", str(out))
    assert code == 0, stdout
    return json.loads(out.read_text()), stdout


def test_report_records_device_versions_and_every_section(tiny_report):
    report, stdout = tiny_report
    assert report["mode"] == "tiny" and report["seed"] == 3
    assert report["device"]["device"] == "cpu" and report["device"]["cpu"]
    for key in ("python", "torch", "monai"):
        assert report["versions"][key]
    assert report["date"][:2] == "20"
    assert list(report["sections"]) == ["sampling", "training", "pipeline", "scale3d"]
    for name, rows in report["sections"].items():
        assert rows, name
        assert report["section_seconds"][name] > 0
        for row in rows:
            assert row["section"] == name and row["case"] in stdout  # the printed tables name every case
            assert row.get("check", {"passed": True})["passed"] is True, row


def test_sampling_rows_are_exact_and_consistent(tiny_report):
    rows = {r["case"]: r for r in tiny_report[0]["sections"]["sampling"]}
    assert set(rows) == {"transformer_4x4", "pixelcnn_6x6"}
    for row in rows.values():
        r = row["results"]
        assert r["seconds_reference"] > 0 and r["seconds_ours"] > 0
        assert abs(r["speedup"] - r["seconds_reference"] / r["seconds_ours"]) < 1e-9
    assert rows["transformer_4x4"]["check"]["max_abs_diff"] < 1e-4
    assert rows["transformer_4x4"]["reference"].startswith("monai.VQVAETransformerInferer")


def test_training_rows_compare_against_the_monai_loops(tiny_report):
    report = tiny_report[0]
    rows = {r["case"]: r for r in report["sections"]["training"]}
    ref = rows["vqvae_monai_tutorial_loop"]["results"]["images_per_s"]
    for case in ("vqvae_trainer_fp32", "vqvae_trainer_bf16", "vqvae_trainer_bf16_cl", "vqvae_trainer_bf16_cl_fused"):
        r = rows[case]["results"]
        assert r["images_per_s"] > 0 and abs(r["speedup"] - r["images_per_s"] / ref) < 1e-9
        assert r["peak_gib"] is None  # CPU: not measured, never estimated
    assert rows["vqvae_trainer_bf16_cl_fused"]["config"]["options"] == {
        "amp": True, "channels_last": True, "fused": True
    }  # fmt: skip
    assert (
        "vqvae_trainer_bf16_cl_fused_compile" not in rows and "compile" in rows["vqvae_trainer_bf16_cl_fused"]["note"]
    )
    tutorial = rows["prior_monai_tutorial_inferer"]["results"]["tokens_per_s"]
    for case in (
        "prior_monai_transformer_cached_codes",
        "prior_transformer_trainer_fp32",
        "prior_transformer_trainer_bf16",
    ):
        r = rows[case]["results"]
        assert r["tokens_per_s"] > 0 and abs(r["speedup"] - r["tokens_per_s"] / tutorial) < 1e-9
    assert rows["prior_pixelcnn_trainer_bf16"]["results"]["tokens_per_s"] > 0
    enc = rows["encode_dataset_bf16"]["results"]
    assert enc["images_per_s"] > 0 and 0.5 <= enc["code_agreement_with_fp32"] <= 1.0
    feed = report["data_feed"]
    assert feed["vqvae_trainer_images_per_s"] == rows["vqvae_trainer_bf16_cl_fused"]["results"]["images_per_s"]
    assert any(k.endswith("_keeps_up") for k in feed)


def test_bad_section_is_a_one_line_error(capsys):
    assert _run("--tiny", "--sections", "nope")[0] == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("brainvq: error: --sections:") and len(err.splitlines()) == 1 and "nope" in err


def test_failed_check_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    from brainvq_monai.apps import benchmark

    report = {"sections": {"sampling": [{"case": "x", "check": {"passed": False}}]}}
    monkeypatch.setattr(benchmark, "run_benchmark", lambda *a, **k: report)
    monkeypatch.setattr(benchmark, "format_report", lambda r: "table")
    out = tmp_path / "bench.json"
    assert _run("--tiny", "--json", str(out))[0] == 1
    err = capsys.readouterr().err.strip()
    assert err == "brainvq: error: benchmark: correctness checks failed: sampling/x"
    assert json.loads(out.read_text()) == report  # written before the failure is reported


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_paths_run_unchanged(tmp_path):
    """Every CUDA code path of the benchmark (bf16, channels-last, fused, compile, CUDA graphs, peak memory)."""
    out = tmp_path / "gpu.json"
    code, stdout = _run("--tiny", "--device", "cuda", "--json", str(out))
    assert code == 0, stdout
    report = json.loads(out.read_text())
    assert "gpu" in report["device"]
    training = {r["case"]: r for r in report["sections"]["training"]}
    assert training["vqvae_trainer_bf16_cl_fused"]["results"]["peak_gib"] > 0

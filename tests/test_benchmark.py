"""brainvq benchmark runs every section end to end in its tiny test mode and writes a complete JSON report."""

from __future__ import annotations

import contextlib
import io
import json
import statistics

import pytest
import torch

from brainvq_monai.apps.benchmark import hardware
from brainvq_monai.cli import main

#: /proc/cpuinfo of a CPU with bf16 units: the tiny report times every bf16 row on any test machine
BF16_CPUINFO = (
    "processor\t: 0\nmodel name\t: Test CPU with AMX\nflags\t\t: fpu sse2 avx2 avx512f amx_bf16 avx512_bf16\n"
)


def _run(*args: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["benchmark", *args])
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "sub" / "report.json"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hardware, "read_cpuinfo", lambda path=hardware.CPUINFO: BF16_CPUINFO)
        mp.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        code, stdout, stderr = _run("--tiny", "--device", "cpu", "--seed", "3", "--json", str(out))  # default threads
    assert code == 0, stdout + stderr
    assert torch.get_num_threads() == threads  # the pinned count is restored after the run
    return json.loads(out.read_text()), stdout, stderr


def test_report_records_device_versions_and_every_section(tiny_report):
    report, stdout, _ = tiny_report
    assert report["mode"] == "tiny" and report["seed"] == 3
    assert report["device"]["device"] == "cpu" and report["device"]["cpu"]
    for key in ("python", "torch", "monai"):
        assert report["versions"][key]
    assert report["date"][:2] == "20"
    assert list(report["sections"]) == ["sampling", "training", "pipeline", "scale3d"]
    for name, rows in report["sections"].items():
        assert rows, name
        assert 0 < report["section_seconds"][name] and report["section_budget_s"][name] == 120.0
        for row in rows:
            assert row["section"] == name and row["case"] in stdout  # the printed tables name every case
            assert row.get("check", {"passed": True})["passed"] is True, row
    assert report["over_budget"] == []


def test_report_records_threads_cpu_model_and_bf16_detection(tiny_report):
    report, stdout, _ = tiny_report
    assert report["threads"] == {
        "torch_threads": 1, "interop_threads": torch.get_num_interop_threads(), "requested": 1
    }  # fmt: skip
    assert report["hardware"]["threads"] == report["threads"]
    assert report["hardware"]["cpu_model"] == "Test CPU with AMX"
    bf16 = report["hardware"]["bf16"]
    assert bf16["usable"] is True and bf16["amx_bf16"] and bf16["reason"] is None and "cpuinfo" in bf16["how"]
    assert "torch threads: 1 intra-op" in stdout and "bf16 units: yes" in stdout


def test_progress_lines_on_stderr(tiny_report):
    _, _, stderr = tiny_report
    lines = stderr.splitlines()
    assert lines[0].startswith("brainvq benchmark: tiny run on cpu (Test CPU with AMX), 1 torch thread(s)")
    for name in ("sampling", "training", "pipeline", "scale3d"):
        starts = [
            i for i, line in enumerate(lines) if line.startswith(f"brainvq benchmark: {name} [") and "start" in line
        ]
        ends = [
            i for i, line in enumerate(lines) if line.startswith(f"brainvq benchmark: {name} [") and ": done:" in line
        ]
        assert len(starts) == 1 and len(ends) == 1 and starts[0] < ends[0], name
    rows = [line for line in lines if " done in " in line]
    assert any("sampling [" in line and "transformer_4x4 done in" in line and "speedup" in line for line in rows)
    assert any("training [" in line and "vqvae_trainer_fp32 done in" in line for line in rows)
    assert lines[-1].startswith("brainvq benchmark: finished in ")


def test_sampling_rows_are_interleaved_exact_and_consistent(tiny_report):
    rows = {r["case"]: r for r in tiny_report[0]["sections"]["sampling"]}
    assert set(rows) == {"transformer_4x4", "pixelcnn_6x6"}
    for row in rows.values():
        r, c = row["results"], row["config"]
        assert r["repeats"] == c["repeats"] == 2 and c["order"].startswith("interleaved: reference, ")
        ref, ours = r["spread"]["seconds_reference"]["values"], r["spread"]["seconds_ours"]["values"]
        assert len(ref) == len(ours) == 2 and min(ref + ours) > 0
        assert r["seconds_reference"] == pytest.approx(statistics.median(ref))
        assert r["speedup"] == pytest.approx(statistics.median([a / b for a, b in zip(ref, ours)]))
        assert r["spread"]["speedup"]["min"] <= r["speedup"] <= r["spread"]["speedup"]["max"]
        assert c["latent_shape"] == c["planned"]["latent_shape"] and "note" not in row  # nothing shrank
    assert rows["transformer_4x4"]["check"]["max_abs_diff"] < 1e-4
    assert rows["transformer_4x4"]["reference"].startswith("monai.VQVAETransformerInferer")


def test_training_rows_compare_against_the_monai_loops(tiny_report):
    report = tiny_report[0]
    rows = {r["case"]: r for r in report["sections"]["training"]}
    ref = rows["vqvae_monai_tutorial_loop"]["results"]["spread"]["images_per_s"]["values"]
    for case in ("vqvae_trainer_fp32", "vqvae_trainer_bf16", "vqvae_trainer_bf16_cl", "vqvae_trainer_bf16_cl_fused"):
        r = rows[case]["results"]
        rates = r["spread"]["images_per_s"]["values"]
        assert r["images_per_s"] == pytest.approx(statistics.median(rates)) and r["repeats"] == len(rates) == 2
        assert r["speedup"] == pytest.approx(statistics.median([a / b for a, b in zip(rates, ref)]))
        assert r["peak_gib"] is None  # CPU: not measured, never estimated
    assert rows["vqvae_trainer_bf16_cl_fused"]["config"]["options"] == {
        "amp": True, "channels_last": True, "fused": True
    }  # fmt: skip
    assert (
        "vqvae_trainer_bf16_cl_fused_compile" not in rows and "compile" in rows["vqvae_trainer_bf16_cl_fused"]["note"]
    )
    tutorial = rows["prior_monai_tutorial_inferer"]["results"]["spread"]["tokens_per_s"]["values"]
    for case in (
        "prior_monai_transformer_cached_codes",
        "prior_transformer_trainer_fp32",
        "prior_transformer_trainer_bf16",
    ):
        r = rows[case]["results"]
        rates = r["spread"]["tokens_per_s"]["values"]
        assert r["tokens_per_s"] > 0 and r["speedup"] == pytest.approx(
            statistics.median([a / b for a, b in zip(rates, tutorial)])
        )
    assert rows["prior_pixelcnn_trainer_bf16"]["results"]["tokens_per_s"] > 0
    enc = rows["encode_dataset_bf16"]["results"]
    assert enc["images_per_s"] > 0 and 0.5 <= enc["code_agreement_with_fp32"] <= 1.0
    feed = report["data_feed"]
    assert feed["vqvae_trainer_images_per_s"] == rows["vqvae_trainer_bf16_cl_fused"]["results"]["images_per_s"]
    assert any(k.endswith("_keeps_up") for k in feed)


@pytest.mark.parametrize(
    ("args", "setting", "word"),
    [
        (("--sections", "nope"), "--sections", "nope"),
        (("--threads", "-1"), "--threads", "-1"),
        (("--section-budget-s", "0"), "--section-budget-s", "> 0"),
    ],
)
def test_bad_argument_is_a_one_line_error(args, setting, word):
    code, _, err = _run("--tiny", *args)
    err = err.strip()
    assert code == 2 and err.startswith(f"brainvq: error: {setting}:") and len(err.splitlines()) == 1 and word in err


def test_failed_check_is_a_one_line_error(monkeypatch, tmp_path):
    from brainvq_monai.apps import benchmark

    report = {"sections": {"sampling": [{"case": "x", "check": {"passed": False}}]}}
    monkeypatch.setattr(benchmark, "run_benchmark", lambda *a, **k: report)
    monkeypatch.setattr(benchmark, "format_report", lambda r: "table")
    out = tmp_path / "bench.json"
    code, _, err = _run("--tiny", "--json", str(out))
    assert code == 1
    assert err.strip() == "brainvq: error: benchmark: correctness checks failed: sampling/x"
    assert json.loads(out.read_text()) == report  # written before the failure is reported


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_paths_run_unchanged(tmp_path):
    """Every CUDA code path of the benchmark (bf16, channels-last, fused, compile, CUDA graphs, peak memory)."""
    out = tmp_path / "gpu.json"
    code, stdout, stderr = _run("--tiny", "--device", "cuda", "--section-budget-s", "300", "--json", str(out))
    assert code == 0, stdout + stderr
    report = json.loads(out.read_text())
    assert "gpu" in report["device"] and report["section_budget_s"] == dict.fromkeys(report["sections"], 300.0)
    training = {r["case"]: r for r in report["sections"]["training"]}
    assert training["vqvae_trainer_bf16_cl_fused"]["results"]["peak_gib"] > 0

"""The benchmark's measurement discipline: pinned threads, interleaved timing, spreads, time budgets, bf16 detection.

Small and fast: fake timed functions and a fake clock stand in for real work, except where a section runs at its
tiny sizes to show the planning end to end.
"""

from __future__ import annotations

import io
import math
from contextlib import redirect_stderr

import pytest
import torch

from brainvq_monai.apps.benchmark import hardware, report, sampling, training
from brainvq_monai.apps.benchmark.budget import Budget, choose_size, headline
from brainvq_monai.apps.benchmark.timing import paired, plan_repeats, spread, time_interleaved
from brainvq_monai.utils.errors import BrainVQInputError

NO_BF16 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n"
AVX512_BF16 = "processor\t: 0\nmodel name\t: AMD EPYC 9654\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"


class FakeClock:
    """A clock that only moves when a fake timed function says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, name: str, seconds: float, log: list[str]):
        def fn() -> str:
            log.append(name)
            self.now += seconds
            return name

        return fn


# ------------------------------------------------------------------------------------------------------ threads
def test_threads_pinned_recorded_and_restored():
    before = torch.get_num_threads()
    with hardware.pinned_threads(before + 1) as record:
        assert torch.get_num_threads() == before + 1
        interop = torch.get_num_interop_threads()
        assert record == {"torch_threads": before + 1, "interop_threads": interop, "requested": before + 1}
    assert torch.get_num_threads() == before
    with hardware.pinned_threads(0) as record:  # 0: torch's count left as it is
        assert record["torch_threads"] == before and record["requested"] == 0
    with pytest.raises(BrainVQInputError, match="--threads"):
        with hardware.pinned_threads(-2):
            pass


def test_run_benchmark_pins_and_records_the_requested_threads(monkeypatch):
    before, seen = torch.get_num_threads(), []

    def fake_section(name, dev, mode, seed, seconds, bf16):  # what a section sees while it runs
        seen.append((name, torch.get_num_threads(), seconds, bf16["usable"]))
        return [], 0.5

    monkeypatch.setattr(report, "_run_section", fake_section)
    with redirect_stderr(io.StringIO()):
        out = report.run_benchmark("cpu", quick=True, sections=["sampling", "scale3d"], threads=3, cpuinfo=NO_BF16)
    assert seen == [("sampling", 3, 80.0, False), ("scale3d", 3, 60.0, False)]
    assert out["threads"]["torch_threads"] == 3 and out["device"]["torch_threads"] == 3
    assert out["threads"]["interop_threads"] == torch.get_num_interop_threads()
    assert out["hardware"]["cpu_model"] == "AMD EPYC 7B13" and out["hardware"]["bf16"]["usable"] is False
    assert torch.get_num_threads() == before


# ------------------------------------------------------------------------------------------------- interleaving
def test_reference_and_ours_are_timed_interleaved():
    clock, log = FakeClock(), []
    calls = [("reference", clock.work("reference", 2.0, log)), ("ours", clock.work("ours", 0.5, log))]
    rec = time_interleaved(calls, "cpu", max_repeats=3, warmup={"reference": 0}, clock=clock)
    assert log == ["ours"] + ["reference", "ours"] * 3  # ours' warm-up, then ref, ours, ref, ours, ...
    assert rec.times == {"reference": [2.0, 2.0, 2.0], "ours": [0.5, 0.5, 0.5]}
    assert rec.repeats == 3 and rec.warmup_seconds == {"ours": 0.5} and rec.outputs["reference"] == "reference"


def test_repeats_stop_at_the_time_budget():
    clock, log = FakeClock(), []
    calls = [("reference", clock.work("reference", 10.0, log)), ("ours", clock.work("ours", 1.0, log))]
    rec = time_interleaved(calls, "cpu", max_repeats=5, available_s=25.0, clock=clock)
    assert rec.planned_repeats == 1  # warm-ups took 11 s: one 11 s repeat fits the 14 s left
    assert rec.repeats == 1 and clock.now == 22.0  # a second repeat would end at 33 s > 25 s
    assert rec.short_note(3) == "only 1 repeat(s): the next would have overrun the time budget"
    # a repeat too slow for the budget still runs once: a figure, never an empty row
    rec = time_interleaved(
        calls, "cpu", max_repeats=5, available_s=1.0, warmup=0, estimates={"reference": 50.0}, clock=clock
    )
    assert rec.repeats == 1 and rec.planned_repeats == 1


def test_plan_repeats():
    assert plan_repeats(10.0, 35.0, 5) == 3
    assert plan_repeats(10.0, 500.0, 5) == 5
    assert plan_repeats(10.0, 5.0, 5) == 1
    assert plan_repeats(0.0, 5.0, 4) == 4 and plan_repeats(1.0, math.inf, 4) == 4


def test_spread_and_paired_ratio():
    s = spread([3.0, 1.0, 2.0, 10.0])
    assert (s["min"], s["max"], s["median"], s["n"]) == (1.0, 10.0, 2.5, 4)
    assert s["q1"] == pytest.approx(1.75) and s["q3"] == pytest.approx(4.75) and s["values"] == [3.0, 1.0, 2.0, 10.0]
    p = paired([4.0, 2.0, 9.0], [1.0, 1.0, 3.0])  # per-repeat ratios 4, 2, 3
    assert p["speedup"] == 3.0 and p["seconds_reference"] == 4.0 and p["seconds_ours"] == 1.0 and p["repeats"] == 3
    assert (p["spread"]["speedup"]["min"], p["spread"]["speedup"]["max"]) == (2.0, 4.0)
    assert p["speedup"] != p["seconds_reference"] / p["seconds_ours"]  # the median ratio, not a ratio of medians
    with pytest.raises(ValueError):
        paired([1.0], [1.0, 2.0])


# ------------------------------------------------------------------------------------------------------ budgets
def test_choose_size_shrinks_for_a_slow_reference():
    probed = []

    def cost(size: str) -> float:  # a slow reference: only the smallest size fits 30 s
        probed.append(size)
        return {"16x16": 100.0, "12x12": 40.0, "8x8": 5.0, "4x4": 1.0}[size]

    choice = choose_size(["16x16", "12x12", "8x8", "4x4"], cost, 30.0)
    assert choice.size == "8x8" and choice.index == 2 and choice.fits and probed == ["16x16", "12x12", "8x8"]
    note = choice.note()
    assert note.startswith("reduced from 16x16 to 8x8") and "estimated 100.0 s > 30.0 s" in note
    fast = choose_size(["16x16", "8x8"], lambda size: 1.0, 30.0)
    assert fast.size == "16x16" and fast.note() is None
    hopeless = choose_size(["16x16", "8x8"], lambda size: 99.0, 30.0)
    assert hopeless.size == "8x8" and not hopeless.fits and "smallest size" in hopeless.note()


def test_sampling_case_shrinks_when_the_reference_is_too_slow(monkeypatch):
    """A reference estimated at 1000 s at 6x6 makes the case run at 4x4 within its budget, and say so."""
    real = sampling.estimate_transformer_reference
    monkeypatch.setattr(
        sampling,
        "estimate_transformer_reference",
        lambda model, size, device: 1000.0 if size.tokens > 16 else real(model, size, device),
    )
    cfg = {"dim": 16, "depth": 1, "heads": 2, "num_embeddings": 16}
    ladder = [sampling.SampleSize((6, 6), 2), sampling.SampleSize((4, 4), 2)]
    (row,) = sampling._transformer_case("transformer_6x6", torch.device("cpu"), ladder, cfg, 2, 30.0, 0, 10.0)
    assert row["config"]["latent_shape"] == [4, 4] and row["config"]["planned"]["latent_shape"] == [6, 6]
    assert row["note"].startswith("reduced from 6x6, 2 samples to 4x4, 2 samples") and "estimated 3000" in row["note"]
    assert row["check"]["passed"] and row["results"]["repeats"] == 2


def test_budget_shares_and_validation():
    clock = FakeClock()
    budget = Budget("sampling", 90.0, clock=clock, quiet=True)
    clock.now = 30.0
    assert budget.remaining() == 60.0 and budget.share(1, 2) == 30.0 and budget.share(0.5, 1.0) == 30.0
    clock.now = 100.0
    assert budget.remaining() == 0.0
    with pytest.raises(BrainVQInputError, match="--section-budget-s"):
        Budget("sampling", 0.0)
    with pytest.raises(BrainVQInputError, match="--section-budget-s"):
        report.run_benchmark("cpu", tiny=True, sections=["sampling"], section_budget_s=-1.0)


def test_default_budgets_fit_quick_cpu_in_four_minutes():
    quick = report.SECTION_BUDGET_S[("cpu", "quick")]
    assert set(quick) == set(report.SECTIONS) and sum(quick.values()) <= 240.0
    assert report._budgets(torch.device("cuda"), "quick", ["sampling"], 42.0) == {"sampling": 42.0}


# ----------------------------------------------------------------------------------------------------- progress
def test_progress_lines_per_row():
    clock = FakeClock()
    budget = Budget("sampling", 80.0, clock=clock)
    row = {"case": "transformer_12x12", "results": {"speedup": 10.5, "spread": {"speedup": spread([9.0, 10.5, 11.0])}}}
    err = io.StringIO()
    with redirect_stderr(err):
        budget.log("start")
        clock.now = 12.0
        budget.rows_done([row, {"case": "x", "results": {"images_per_s": None}, "note": "skipped: no bf16"}])
    assert err.getvalue().splitlines() == [
        "brainvq benchmark: sampling [0/80 s]: start",
        "brainvq benchmark: sampling [12/80 s]: transformer_12x12 done in 12.0 s: speedup 10.50x (9.00-11.00 over 3 repeats)",
        "brainvq benchmark: sampling [12/80 s]: x done in 12.0 s: skipped",
    ]
    assert headline({"results": {"seconds_per_step": 1.5}}) == "1.5 s/step"


# --------------------------------------------------------------------------------------------------------- bf16
def test_bf16_detection_from_cpuinfo(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    none = hardware.bf16_support("cpu", NO_BF16)
    assert none["usable"] is False and not none["amx_bf16"] and not none["avx512_bf16"]
    assert "no bf16 units" in none["reason"] and none["aten_cpu_capability"]
    assert hardware.bf16_support("cpu", AVX512_BF16)["usable"] is True
    assert hardware.bf16_support("cpu", "")["usable"] is False  # no /proc/cpuinfo (e.g. macOS): not assumed
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = hardware.bf16_support("cpu", AVX512_BF16)
    assert capped["usable"] is False and "ONEDNN_MAX_CPU_ISA=AVX2" in capped["reason"]
    assert hardware.cpu_model(NO_BF16) == "AMD EPYC 7B13" and "avx2" in hardware.cpu_flags(NO_BF16)


def test_training_skips_bf16_rows_without_bf16_units(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    bf16 = hardware.bf16_support("cpu", NO_BF16)
    rows = {r["case"]: r for r in training.run(torch.device("cpu"), quick=False, tiny=True, seed=0, bf16=bf16)}
    skipped = [case for case, row in rows.items() if "bf16" in case]
    assert set(skipped) == {
        "vqvae_trainer_bf16", "vqvae_trainer_bf16_cl", "vqvae_trainer_bf16_cl_fused",
        "prior_transformer_trainer_bf16", "prior_pixelcnn_trainer_bf16", "encode_dataset_bf16",
    }  # fmt: skip
    for case in skipped:
        assert rows[case]["note"].startswith("skipped: this CPU has no bf16 units"), case
        assert rows[case]["results"]["speedup"] is None
    for case in ("vqvae_trainer_fp32", "prior_transformer_trainer_fp32", "prior_pixelcnn_trainer_fp32"):
        assert rows[case]["results"]["repeats"] == 2, case
    assert rows["encode_dataset_fp32"]["results"]["images_per_s"] > 0
    feed = report.data_feed({"training": list(rows.values()), "pipeline": []})
    assert feed == {}  # no pipeline section: nothing to compare
    pipeline = [{"case": "codes", "config": {"role": "prior_feed"}, "results": {"samples_per_s": 1e9}}]
    feed = report.data_feed({"training": list(rows.values()), "pipeline": pipeline})
    assert feed["vqvae_trainer_case"] == "vqvae_trainer_fp32" and feed["prior_trainer_case"].endswith("_fp32")
    assert feed["codes_keeps_up"] is True
    assert "skipped: this CPU has no bf16 units" in training.format_rows(list(rows.values()))

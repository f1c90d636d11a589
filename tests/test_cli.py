"""The command line end to end: demo-data -> datalist on every layout, and `brainvq demo` with tiny settings."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_DEMO
from monai.data import load_decathlon_datalist

from brainvq_monai.cli import main

pytestmark = pytest.mark.slow


def _cohort(demo_cohort):
    return json.loads((demo_cohort / "demo_cohort.json").read_text())


@pytest.mark.parametrize("fmt", ["oasis", "adni", "nifti"])
def test_datalist_of_the_demo_cohort(fmt, demo_cohort, tmp_path, capsys):
    root = demo_cohort / "nifti" if fmt == "nifti" else demo_cohort
    out = tmp_path / f"{fmt}.json"
    assert main(["datalist", "--format", fmt, "--root", str(root), "--out", str(out), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "training" in printed and "validation" in printed and "test" in printed
    datalist = json.loads(out.read_text())
    cohort = _cohort(demo_cohort)["participants"]
    layout_id = {
        "oasis": lambda p: p["oasis"]["id"].split("_")[1],
        "adni": lambda p: p["adni"]["id"],
        "nifti": lambda p: p["nifti"]["id"],
    }[fmt]
    group = {layout_id(p): p["group"] for p in cohort}
    seen: dict[str, str] = {}
    for split in ("training", "validation", "test"):
        items = load_decathlon_datalist(str(out), data_list_key=split) if datalist[split] else []
        for it in items:
            assert seen.setdefault(it["subject"], split) == split  # leak-free: one split per subject
            if fmt != "oasis":
                assert it["label"] == (1 if group[it["subject"]] == "AD" else 0)
    assert set(seen) == set(group)  # every subject listed
    slices = _cohort(demo_cohort)["slices_per_subject"]
    n_items = sum(len(datalist[s]) for s in ("training", "validation", "test"))
    if fmt in ("oasis", "adni"):
        assert n_items == slices * len(group)
        if fmt == "oasis":  # OASIS keeps the dataset's own folders
            split_name = {"train": "training", "validate": "validation", "test": "test"}
            assert all(seen[p["oasis"]["id"].split("_")[1]] == split_name[p["oasis"]["split"]] for p in cohort)
        else:  # ADNI test stays test; validation comes out of train
            assert all((seen[p["adni"]["id"]] == "test") == (p["adni"]["split"] == "test") for p in cohort)
    else:
        assert n_items == len(group)
    assert datalist["labels"] == ({} if fmt == "oasis" else {"0": "NC", "1": "AD"})


def test_brainvq_demo_end_to_end(tmp_path, monkeypatch, capsys):
    """The README's main command, with tiny settings: data, VQ-VAE, prior, metrics.json, samples, TensorBoard."""
    from brainvq_monai.apps import demo

    tiny = {**TINY_DEMO, "vqvae_epochs": 1, "prior_epochs": 1, "num_samples": 2}
    monkeypatch.setattr(demo, "DEMO_SETTINGS", {**demo.DEMO_SETTINGS, **tiny})
    out = tmp_path / "demo_out"
    assert main(["demo", "--out", str(out), "--subjects", "6", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"tensorboard --logdir {out / 'tensorboard'}" in printed and "test SSIM" in printed
    summary = json.loads((out / "demo_summary.json").read_text())
    assert {"train_vqvae", "train_prior", "evaluate", "inference"} <= set(summary["seconds"])
    assert (out / "models" / "model_autoencoder.pt").is_file() and (out / "models" / "model.pt").is_file()
    assert {"reconstruction", "prior"} <= set(json.loads((out / "metrics.json").read_text()))
    assert len(list((out / "samples").glob("sample_*.png"))) == 4  # 2 per class
    assert any((out / "tensorboard" / "vqvae").iterdir()) and any((out / "tensorboard" / "prior_transformer").iterdir())
    assert (out / "data" / "demo_cohort.json").is_file()
    report = (out / "report.md").read_text()
    assert "metrics.json" in report and (out / "report" / "reconstructions.png").is_file()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert (
        main(["datalist", "--format", "adni", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "x.json")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("brainvq: error:") and "nope" in err and len(err.splitlines()) == 1
    assert main(["demo", "--out", str(tmp_path / "d"), "--subjects", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "subjects" in err and len(err.splitlines()) == 1


def test_every_command_is_a_subcommand_of_brainvq(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    printed = capsys.readouterr().out
    for command in ("demo-data", "demo", "report", "datalist", "compare", "anomaly", "benchmark", "fault-injection"):
        assert command in printed
    assert "generation-eval" in printed


def test_fault_injection_reports_failed_cases_in_one_line(tmp_path, monkeypatch, capsys):
    from brainvq_monai.apps import fault_injection

    case = {"bundle": "2D", "trainer": "vqvae", "final_weights_equal": True, "best_weights_equal": False}
    record = {"cases": [{**case, "interruptions": [{"all_checkpoints_load": True}]}]}
    calls = []
    monkeypatch.setattr(fault_injection, "run_campaign", lambda *a: calls.append(a) or record)
    monkeypatch.setattr(fault_injection, "render_campaign", lambda r: "tables")
    out = tmp_path / "fi.json"
    assert main(["fault-injection", "--out", str(tmp_path), "--dims", "2", "--kills", "1", "--json", str(out)]) == 1
    assert calls == [(str(tmp_path), [2], ["vqvae", "prior"], 1, 100, 0)]
    captured = capsys.readouterr()
    assert captured.out.strip() == "tables" and json.loads(out.read_text()) == record
    assert captured.err.strip() == "brainvq: error: fault injection: the guarantees failed for 2D vqvae"
    record["cases"][0]["best_weights_equal"] = True
    assert main(["fault-injection", "--out", str(tmp_path)]) == 0


def test_generation_eval_error_is_one_line(tmp_path, capsys):
    assert main(["generation-eval", "--run", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("brainvq: error:") and "run folder not found" in err and len(err.splitlines()) == 1

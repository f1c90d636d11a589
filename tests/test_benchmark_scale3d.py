"""Benchmark section ``scale3d`` (3D transformer prior and VQ-VAE memory / step time) in its tiny test mode."""

from __future__ import annotations

import json

import pytest
import torch

from brainvq_monai.apps.benchmark import scale3d


@pytest.fixture(scope="module")
def cpu_rows():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return scale3d.run(torch.device("cpu"), quick=False, tiny=True, seed=0)
    finally:
        torch.set_num_threads(threads)


def _by_case(rows):
    return {row["case"]: row for row in rows}


def test_rows_cases_and_fields(cpu_rows):
    json.dumps(cpu_rows)  # JSON-able
    rows = _by_case(cpu_rows)
    assert len(rows) == len(cpu_rows)  # case names are unique
    lengths = (2 * 3 * 2 + 1, 3 * 4 * 3 + 1)
    expected = {f"transformer_{n}_{v}" for n in lengths for v in scale3d.VARIANTS}
    expected |= {f"checkpoint_{n}_{w}" for n in lengths for w in ("ours", "monai")}
    expected |= {"vqvae3d_32x32x32", "vqvae3d_32x32x32_ckpt"}
    assert set(rows) == expected
    for row in cpu_rows:
        assert row["section"] == "scale3d" and "tiny" in row["config"]["mode"]
    for n in lengths:
        for variant in scale3d.VARIANTS:
            row = rows[f"transformer_{n}_{variant}"]
            res, cfg = row["results"], row["config"]
            assert cfg["seq_len"] == n and cfg["batch"] == 2 and cfg["dtype"] == "fp32"
            assert cfg["activation_checkpointing"] is (variant == "ours_ckpt")
            assert res["oom"] is False and res["seconds_per_step"] > 0
            assert res["tokens_per_s"] == pytest.approx(2 * n / res["seconds_per_step"])
            assert res["peak_memory_gib"] is None and "CUDA only" in row["note"]
            assert res["saved_activation_bytes"] > 0
        # identical weights and data: every variant has the same loss after the same single step (fp32)
        losses = [rows[f"transformer_{n}_{v}"]["results"]["loss_last_step"] for v in scale3d.VARIANTS]
        assert max(losses) - min(losses) < 1e-4


def test_checkpoint_sizes_and_equivalence(cpu_rows):
    rows = _by_case(cpu_rows)
    for n in (13, 37):
        ours, monai = rows[f"checkpoint_{n}_ours"]["results"], rows[f"checkpoint_{n}_monai"]
        assert ours["mask_bytes"] == 0
        depth = monai["config"]["attn_layers_depth"]
        assert monai["results"]["mask_bytes"] == 4 * depth * n * n
        assert monai["results"]["checkpoint_bytes"] - ours["checkpoint_bytes"] >= monai["results"]["mask_bytes"]
        assert monai["check"]["passed"] and monai["check"]["max_abs_diff"] < 1e-4


def test_saved_activation_bytes_ordering(cpu_rows):
    rows = _by_case(cpu_rows)

    def saved(case):
        return rows[case]["results"]["saved_activation_bytes"]

    for n in (13, 37):
        assert saved(f"transformer_{n}_ours_ckpt") < saved(f"transformer_{n}_ours") / 2
        assert saved(f"transformer_{n}_monai") > saved(f"transformer_{n}_ours")  # MONAI keeps n x n matrices
    assert saved("vqvae3d_32x32x32_ckpt") < saved("vqvae3d_32x32x32")
    vq = rows["vqvae3d_32x32x32"]
    assert vq["config"]["latent"] == [2, 2, 2] and vq["results"]["volumes_per_s"] > 0


def test_format_rows_shows_every_case(cpu_rows):
    table = scale3d.format_rows(cpu_rows)
    lines = table.splitlines()
    assert len(lines) == len(cpu_rows) + 2
    for row, line in zip(cpu_rows, lines[2:]):
        assert line.startswith(row["case"])
    assert "check ok" in table and "FAILED" not in table


def test_out_of_memory_is_a_result(monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")

    monkeypatch.setattr(scale3d, "time_fn", oom)
    rows = scale3d.run(torch.device("cpu"), quick=False, tiny=True, seed=0)
    steps = [row for row in rows if not row["case"].startswith("checkpoint")]
    assert steps and all(row["results"]["oom"] is True for row in steps)
    assert all(row["results"]["seconds_per_step"] is None and "out of memory" in row["note"] for row in steps)
    assert scale3d._oom_safe(oom, torch.device("cpu"))[1].startswith("CUDA out of memory")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_paths():
    rows = _by_case(scale3d.run(torch.device("cuda"), quick=False, tiny=True, seed=0))
    for case in ("transformer_13_ours", "transformer_37_ours_ckpt", "transformer_37_monai_flash", "vqvae3d_32x32x32"):
        res = rows[case]["results"]
        assert res["oom"] is False and res["peak_memory_gib"] > 0
        assert rows[case]["config"]["dtype"] == "bf16 autocast"
    assert rows["vqvae3d_32x32x32"]["config"]["memory_format"] == "channels_last_3d"
    # the largest-batch search (CUDA full mode) on a tiny model: everything up to the cap fits
    torch.manual_seed(0)
    ref = scale3d.CausalTransformer(17, 13, 32, 2, 4)
    model = scale3d._build("ours_ckpt", ref, torch.device("cuda"))
    assert scale3d._largest_batch(model, 2, 8, 13, 16, torch.device("cuda"), 0) == (8, None)

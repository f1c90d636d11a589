"""scripts/benchmark.py runs end to end in its tiny test mode and writes a complete JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "benchmark.py")


def test_benchmark_tiny_writes_json(tmp_path):
    out = tmp_path / "bench" / "report.json"
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--tiny", "--device", "cpu", "--seed", "3", "--threads", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["mode"] == "tiny" and report["seed"] == 3
    assert report["device"]["device"] == "cpu" and report["device"]["cpu"]
    for key in ("python", "torch", "monai"):
        assert report["versions"][key]
    assert report["date"][:2] == "20"
    cases = {c["case"]: c for c in report["cases"]}
    assert "transformer_4x4" in cases
    try:
        import brainvq_monai.networks.nets.gated_pixelcnn  # noqa: F401

        assert "pixelcnn_6x6" in cases
    except ImportError:
        pass
    for case in cases.values():
        assert case["seconds_reference"] > 0 and case["seconds_ours"] > 0
        assert abs(case["speedup"] - case["seconds_reference"] / case["seconds_ours"]) < 1e-9
        assert case["check"]["passed"] is True
    assert cases["transformer_4x4"]["check"]["max_abs_diff"] < 1e-4
    assert cases["transformer_4x4"]["reference"].startswith("monai.VQVAETransformerInferer")
    # the printed table names every case
    for name in cases:
        assert name in proc.stdout

#!/usr/bin/env python
"""brainvq_monai benchmark: sampling, training, data pipeline and 3D scale, side by side with MONAI's references.

Sections (``brainvq_monai/apps/benchmark/``):

* ``sampling``: exact KV-cached transformer / cached PixelCNN sampling vs MONAI's ``VQVAETransformerInferer.sample``
  and the naive loop;
* ``training``: VQ-VAE training images/s (MONAI tutorial loop vs our trainer with bf16, channels-last, fused Adam,
  ``torch.compile``), prior training tokens/s from cached codes, code-encoding throughput;
* ``pipeline``: samples/s of the training data pipeline (caching, workers, batched on-device augmentation, codes
  loader), reported next to what the trainers consume;
* ``scale3d``: step time, peak GPU memory and checkpoint size of the 3D VQ-VAE at 160x224x160 and of the transformer
  prior (512 wide, 24 layers, 16 heads) at 1,401 and 9,601 tokens, next to MONAI's ``DecoderOnlyTransformer``.

Every figure is measured on the device named in the report; what a device cannot measure (peak GPU memory on a CPU)
is left empty. The script exits 1 if a correctness check fails, 2 on bad arguments.

Usage::

    python scripts/benchmark.py --device cpu --quick --json bench_cpu.json   # < 5 minutes on 2 CPU cores
    python scripts/benchmark.py --device cuda --json bench_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from brainvq_monai.apps.benchmark.report import SECTIONS, failed_checks, format_report, run_benchmark
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (CPU: < 5 minutes)")
    parser.add_argument("--json", default=None, help="write the report to this JSON file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, data and samplers")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--sections", nargs="+", default=None, metavar="NAME", help=f"run only these ({', '.join(SECTIONS)})"
    )
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # test-suite mode
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        report = run_benchmark(args.device, quick=args.quick, tiny=args.tiny, seed=args.seed, sections=args.sections)
    except BrainVQInputError as err:
        print(f"benchmark: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    failed = failed_checks(report)
    if failed:
        print(f"benchmark: correctness checks failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Fault-injection campaign: interrupts the bundles' training runs at random points and checks the resume.

See ``brainvq_monai/apps/fault_injection.py``. Usage::

    python scripts/fault_injection.py --out fi_runs --json docs/fault_injection_runs/cpu_2026-12-01.json
"""

from __future__ import annotations

import argparse
import sys

from brainvq_monai.apps.fault_injection import render_campaign, run_campaign
from brainvq_monai.utils.io import atomic_write_json

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="working folder (demo cohort and run folders)")
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3], help="bundles (default 2 3)")
    parser.add_argument("--trainers", nargs="+", default=["vqvae", "prior"], help="vqvae and/or prior")
    parser.add_argument("--kills", type=int, default=5, help="interruptions per case (default 5)")
    parser.add_argument("--epochs", type=int, default=100, help="epochs per run (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random choices (default 0)")
    parser.add_argument("--json", default=None, help="also write the record here")
    args = parser.parse_args(argv)
    record = run_campaign(args.out, args.dims, args.trainers, args.kills, args.epochs, args.seed)
    print(render_campaign(record))
    if args.json:
        atomic_write_json(args.json, record)
    ok = all(c["final_weights_equal"] and c["best_weights_equal"] for c in record["cases"])
    ok = ok and all(ev["all_checkpoints_load"] for c in record["cases"] for ev in c["interruptions"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

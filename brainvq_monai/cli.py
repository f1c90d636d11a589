"""The ``brainvq`` command line.

Sub-commands report an error as one line on stderr (``brainvq: error: <file or setting>: <reason>``), never with a
traceback unless ``BRAINVQ_DEBUG=1``, and exit with status 2 for bad input, 1 for a run that failed otherwise and
130 when interrupted (see :mod:`brainvq_monai.utils.errors`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from brainvq_monai.utils.errors import (
    BrainVQInputError,
    exit_now,
    find_brainvq_error,  # noqa: F401 - re-exported (the tests and callers import it from here)
    quiet_library_tracebacks,
    report_error,
)

__all__ = ["main", "build_parser", "find_brainvq_error"]


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from brainvq_monai.data.demo import make_demo_cohort

    summary = make_demo_cohort(
        args.out,
        subjects=args.subjects,
        seed=args.seed,
        slices_per_subject=args.slices,
        slice_spacing=args.slice_spacing,
    )
    print(summary)
    return 0


def _cmd_datalist(args: argparse.Namespace) -> int:
    from brainvq_monai.data.datalist import build_datalist, format_summary, write_datalist

    datalist = build_datalist(
        args.format,
        args.root,
        val_fraction=args.val_fraction,
        seed=args.seed,
        slices=args.slices,
        strict=args.strict,
    )
    write_datalist(datalist, args.out)
    print(format_summary(datalist))
    print(f"wrote {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from brainvq_monai.apps.demo import run_demo

    summary = run_demo(
        args.out,
        subjects=args.subjects,
        seed=args.seed,
        prior=args.prior,
        settings={} if args.amp is None else {"amp": args.amp},
    )
    rec = summary["results"].get("reconstruction", {}).get("metrics", {})
    nll = summary["results"].get("prior", {}).get("metrics", {})
    print(f"demo finished in {summary['seconds']['total']:.0f} s")
    if rec:
        print(
            f"  test SSIM {rec.get('test_ssim', float('nan')):.3f}, PSNR {rec.get('test_psnr', float('nan')):.2f} dB, "
            f"codes used {rec.get('test_codes_used', 0):.0f}, perplexity {rec.get('test_perplexity', 0):.1f}"
        )
    if nll:
        print(f"  prior test NLL {nll.get('test_nll', float('nan')):.3f} nats/token")
    for key in ("checkpoints", "metrics", "samples", "tensorboard", "report"):
        if key in summary:
            print(f"  {key:<12} {summary[key]}")
    print(f"  tensorboard --logdir {summary['tensorboard']}")
    return 0


def _cmd_ablation(args: argparse.Namespace) -> int:
    from pathlib import Path

    from brainvq_monai.apps.ablation import ABLATION_FILE, ABLATION_ROWS, bundle_row, render_ablation, run_ablation

    out = Path(args.out)
    if args.render_only:
        import json

        record_file = out / ABLATION_FILE
        if not record_file.is_file():
            raise BrainVQInputError(record_file, "no ablation record: run brainvq ablation --out DIR first")
        record = json.loads(record_file.read_text())
    else:
        rows, only = ABLATION_ROWS, args.rows
        if args.bundle_row is not None:
            extra = bundle_row(args.bundle_row)
            rows, only = (*rows, extra), (None if only is None else [*only, extra.key])
        record = run_ablation(out, rows=rows, seed=args.seed, only=only)
    grids = {k: f"{k}/report/samples.png" for k, r in record["rows"].items() if r.get("grid")}
    (out / "ablation.md").write_text(render_ablation(record, grids))
    print(f"wrote {out / 'ablation.md'} and {out / ABLATION_FILE}")
    return 0


def _cmd_seeds(args: argparse.Namespace) -> int:
    from pathlib import Path

    from brainvq_monai.apps.ablation import render_seeds, run_seeds

    settings = {} if args.amp is None else {"amp": args.amp}
    record = run_seeds(args.out, seeds=args.seeds, settings=settings, prior=args.prior)
    out = Path(args.out) / "seeds.md"
    out.write_text(render_seeds(record))
    print(render_seeds(record))
    print(f"wrote {out} and {Path(args.out) / 'seeds.json'}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from brainvq_monai.apps.report import make_report

    path = make_report(args.run, generation=not args.no_generation, device=args.device, render_only=args.render_only)
    print(f"wrote {path} (figures in {path.parent / 'report'})")
    return 0


def _cmd_bundle_path(args: argparse.Namespace) -> int:
    from brainvq_monai.bundle.utils import default_bundle_root

    print(default_bundle_root(args.name))
    return 0


def _cmd_export_bundle(args: argparse.Namespace) -> int:
    from brainvq_monai.bundle.export import export_bundle
    from brainvq_monai.bundle.layout import config_list_arg

    summary = export_bundle(args.run, args.out, version=args.version)
    print(f"wrote the bundle {summary['bundle']}")
    for name, digest in summary["weights"].items():
        print(f"  {name}  md5 {digest}")
    print("sample from it (no data needed):")
    print(f"  cd {summary['bundle']} && python -m monai.bundle run --config_file configs/inference.json")
    print(f'evaluate or fine-tune: --config_file "{config_list_arg("evaluate")}" (see docs/README.md)')
    print("publishing: fill in each url of large_files.yml")
    return 0


# run outputs a bundle folder of a checkout may hold (see .gitignore): never copied by init-bundle
_RUN_OUTPUT_DIRS = ("runs", "data")
_RUN_OUTPUT_SUFFIXES = (".pt", ".pth", ".ts")


def _cmd_init_bundle(args: argparse.Namespace) -> int:
    import os
    import shutil
    from pathlib import Path

    from brainvq_monai.bundle.layout import config_list_arg
    from brainvq_monai.bundle.utils import default_bundle_root

    source = Path(default_bundle_root(args.name))
    dest = Path(os.path.abspath(args.dir))
    if dest.exists() and not dest.is_dir():
        raise BrainVQInputError(dest, "is a file; init-bundle needs a new or empty folder")
    if dest.resolve().is_relative_to(source.resolve()):
        raise BrainVQInputError(dest, f"is inside the bundle {source}; choose a folder outside it")
    if dest.is_dir() and any(dest.iterdir()):
        raise BrainVQInputError(
            dest, "is not empty; init-bundle copies only into a new or empty folder (nothing copied)"
        )

    def skip(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == source
        return {
            n
            for n in names
            if n == "__pycache__" or (top and n in _RUN_OUTPUT_DIRS) or n.endswith(_RUN_OUTPUT_SUFFIXES)
        }

    shutil.copytree(source, dest, ignore=skip, dirs_exist_ok=True)
    print(f"copied bundle {args.name} to {dest}")
    print("next, from that folder (bundle_root is then the copy: its runs/, models/ and data/ stay there):")
    print(f'  cd {dest} && python -m monai.bundle run --config_file "{config_list_arg("train_vqvae")}"')
    print(f"  the configs, their order and options: see {dest / 'docs' / 'README.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Builds the ``brainvq`` argument parser.

    Returns:
        the parser, with one sub-parser per command.
    """
    parser = argparse.ArgumentParser(prog="brainvq", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="synthesise a demo cohort (OASIS, ADNI and NIfTI layouts) from MNI152")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--subjects", type=int, default=20, help="number of subjects (default 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--slices", type=int, default=20, help="axial slices per subject in the 2D layouts (default 20)")
    p.add_argument(
        "--slice-spacing", type=int, default=1, help="axial planes (mm) between consecutive slices (default 1)"
    )
    p.set_defaults(func=_cmd_demo_data)

    p = sub.add_parser(
        "demo", help="run the whole pipeline (data, VQ-VAE, prior, evaluation, samples) on the demo cohort"
    )
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--subjects", type=int, default=None, help="demo cohort size (default: the demo settings')")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--prior", choices=["transformer", "pixelcnn"], default="transformer", help="prior to train")
    p.add_argument(
        "--amp",
        choices=["auto", "on", "off"],
        default=None,
        help="bf16 autocast: auto = where the CPU has bf16 units (AMX / AVX-512 BF16) or on a GPU; off = float32 "
        "(default: the demo settings')",
    )
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "ablation", help="run the quality ablation of the demo settings (one change per row) and write ablation.md"
    )
    p.add_argument("--out", required=True, help="ablation folder (one run folder per row, ablation.json)")
    p.add_argument("--rows", nargs="+", default=None, help="run only these rows (keys); the others keep their figures")
    p.add_argument("--seed", type=int, default=0, help="seed of every row (default 0)")
    p.add_argument("--render-only", action="store_true", help="only write ablation.md from ablation.json")
    p.add_argument(
        "--bundle-row",
        type=float,
        default=None,
        metavar="SECONDS",
        help="also run a row with the 2D bundle's own defaults (128 px), SECONDS per training stage",
    )
    p.set_defaults(func=_cmd_ablation)

    p = sub.add_parser("seeds", help="run the demo with several seeds and tabulate the spread of every headline figure")
    p.add_argument("--out", required=True, help="folder (one demo run per seed, seeds.json, seeds.md)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--prior", choices=["transformer", "pixelcnn"], default="transformer", help="prior to train")
    p.add_argument("--amp", choices=["auto", "on", "off"], default=None, help="bf16 autocast (see brainvq demo)")
    p.set_defaults(func=_cmd_seeds)

    p = sub.add_parser("report", help="write report.md and figures (curves, grids, codebook, metrics) for a run")
    p.add_argument("--run", required=True, help="run folder (brainvq demo --out DIR)")
    p.add_argument(
        "--no-generation",
        action="store_true",
        help="do not compute generation_metrics.json when it is missing (the table then says it was not computed)",
    )
    p.add_argument("--device", default=None, help="torch device for the models (default: cuda if available, else cpu)")
    p.add_argument("--render-only", action="store_true", help="redraw report.md and figures from report.json only")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("bundle-path", help="print the folder of a MONAI bundle this package ships")
    p.add_argument("name", help="bundle name, e.g. brain_vqvae_2d (an unknown name lists the bundles)")
    p.set_defaults(func=_cmd_bundle_path)

    p = sub.add_parser("init-bundle", help="copy a MONAI bundle this package ships into a new or empty folder")
    p.add_argument("name", help="bundle name, e.g. brain_vqvae_2d (an unknown name lists the bundles)")
    p.add_argument("dir", help="destination folder: new or empty (files there are never overwritten)")
    p.set_defaults(func=_cmd_init_bundle)

    p = sub.add_parser(
        "export-bundle", help="write a self-contained MONAI bundle (configs, models, metrics) from a finished run"
    )
    p.add_argument("--run", required=True, help="the run folder (brainvq demo output, or a bundle trained in place)")
    p.add_argument("--out", required=True, help="the new bundle folder (must not exist or be empty)")
    p.add_argument("--version", default=None, help="the bundle version (default: the source bundle's)")
    p.set_defaults(func=_cmd_export_bundle)
    p = sub.add_parser("datalist", help="write a leak-free MONAI datalist for an OASIS, ADNI or NIfTI folder")
    p.add_argument("--format", required=True, choices=["oasis", "adni", "nifti"])
    p.add_argument("--root", required=True, help="dataset root folder (read only)")
    p.add_argument("--out", required=True, help="datalist JSON file to write")
    p.add_argument("--val-fraction", type=float, default=0.2, help="fraction of subjects held out for validation")
    p.add_argument("--seed", type=int, default=0, help="seed of the subject split")
    p.add_argument("--slices", choices=["axial"], default=None, help="NIfTI only: list the axial slices holding brain")
    p.add_argument("--strict", action="store_true", help="fail on any unreadable file instead of skipping it")
    p.set_defaults(func=_cmd_datalist)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``brainvq`` console script.

    Args:
        argv: arguments (defaults to ``sys.argv[1:]``). Called without them (the console script), a failed command
            ends the process at once with its exit status (see :func:`~brainvq_monai.utils.errors.exit_now`).

    Returns:
        the process exit status.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    quiet_library_tracebacks()
    try:
        return func(args)
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - every failure is one line (BRAINVQ_DEBUG: traceback)
        code = report_error(err)  # with BRAINVQ_DEBUG set, the traceback comes first
        if argv is None:
            exit_now(code)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

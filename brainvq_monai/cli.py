"""The ``brainvq`` command line.

Sub-commands report bad input as one line on stderr (``brainvq: error: <file or setting>: <reason>``) and exit
with status 2, never with a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from brainvq_monai.utils.errors import BrainVQError

__all__ = ["main", "build_parser", "find_brainvq_error"]


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from brainvq_monai.data.demo import make_demo_cohort

    summary = make_demo_cohort(args.out, subjects=args.subjects, seed=args.seed, slices_per_subject=args.slices)
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


def find_brainvq_error(err: BaseException | None) -> BrainVQError | None:
    """The :class:`BrainVQError` behind ``err``, following ``__cause__``/``__context__`` (MONAI's ``Compose`` and
    Ignite re-raise transform errors wrapped in ``RuntimeError``).

    Args:
        err: the exception raised.

    Returns:
        the first ``BrainVQError`` in the chain, or ``None``.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, BrainVQError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _cmd_demo(args: argparse.Namespace) -> int:
    from brainvq_monai.apps.demo import run_demo

    summary = run_demo(args.out, subjects=args.subjects, seed=args.seed, prior=args.prior)
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


def _cmd_report(args: argparse.Namespace) -> int:
    from brainvq_monai.apps.report import make_report

    path = make_report(args.run, generation=not args.no_generation, device=args.device)
    print(f"wrote {path} (figures in {path.parent / 'report'})")
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
    p.set_defaults(func=_cmd_demo_data)

    p = sub.add_parser(
        "demo", help="run the whole pipeline (data, VQ-VAE, prior, evaluation, samples) on the demo cohort"
    )
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--subjects", type=int, default=20, help="demo cohort size (default 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--prior", choices=["transformer", "pixelcnn"], default="transformer", help="prior to train")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("report", help="write report.md and figures (curves, grids, codebook, metrics) for a run")
    p.add_argument("--run", required=True, help="run folder (brainvq demo --out DIR)")
    p.add_argument(
        "--no-generation",
        action="store_true",
        help="do not compute generation_metrics.json when it is missing (the table then says it was not computed)",
    )
    p.add_argument("--device", default=None, help="torch device for the models (default: cuda if available, else cpu)")
    p.set_defaults(func=_cmd_report)

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
        argv: arguments (defaults to ``sys.argv[1:]``).

    Returns:
        the process exit status.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except Exception as err:  # noqa: BLE001 - bad input anywhere (even wrapped by MONAI's Compose) is one line
        cause = find_brainvq_error(err)
        if cause is None:
            raise
        print(f"brainvq: error: {cause}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("brainvq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

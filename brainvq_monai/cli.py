"""The ``brainvq`` command line.

Sub-commands report an error as one line on stderr (``brainvq: error: <file or setting>: <reason>``), never with a
traceback unless ``BRAINVQ_DEBUG=1``, and exit with status 2 for bad input, 1 for a run that failed otherwise and
130 when interrupted (see :mod:`brainvq_monai.utils.errors`).

Each sub-command is a handler registered with :func:`_command` together with its arguments: it calls a library
function (``brainvq_monai.apps``, ``brainvq_monai.bundle``, ``brainvq_monai.data``) and prints what it made.
:func:`main` parses the arguments, applies ``--threads`` and reports any error in the one way above.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from brainvq_monai.utils.errors import (
    BrainVQError,
    BrainVQInputError,
    exit_now,
    find_brainvq_error,  # noqa: F401 - re-exported (the tests and callers import it from here)
    quiet_library_tracebacks,
    report_error,
)

__all__ = ["main", "build_parser", "find_brainvq_error"]

_Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class _Arg:
    """The arguments of one ``ArgumentParser.add_argument`` call."""

    flags: tuple[str, ...]
    options: dict[str, Any]


@dataclass(frozen=True)
class _Command:
    """A sub-command: its name, one-line help, arguments and handler."""

    name: str
    help: str
    args: tuple[_Arg, ...]
    func: _Handler


_COMMANDS: list[_Command] = []


def _arg(*flags: str, **options: Any) -> _Arg:
    return _Arg(flags, options)


def _command(name: str, help: str, *args: _Arg) -> Callable[[_Handler], _Handler]:
    """Registers the decorated handler as the sub-command ``name`` with ``args`` (in the order of registration)."""

    def register(func: _Handler) -> _Handler:
        _COMMANDS.append(_Command(name, help, args, func))
        return func

    return register


def _write_json(path: Any, data: Any) -> None:
    from brainvq_monai.utils.io import atomic_write_json

    atomic_write_json(path, data)


# arguments shared by several sub-commands
_OUT = _arg("--out", required=True, help="output folder (created)")
_SEED = _arg("--seed", type=int, default=0, help="random seed (default 0)")
_PRIOR = _arg(
    "--prior",
    choices=["transformer", "pixelcnn", "dcgan"],
    default="transformer",
    help="prior to train (default transformer)",
)
_BUNDLE_NAME = _arg("name", help="bundle name, e.g. brain_vqvae_2d (an unknown name lists the bundles)")
_DEVICE = _arg("--device", default="cpu", help="cpu or cuda (default: cpu)")
_THREADS = _arg("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
_TINY = _arg("--tiny", action="store_true", help=argparse.SUPPRESS)  # the test suite's seconds-long mode


@_command(
    "demo-data",
    "synthesise a demo cohort (OASIS, ADNI and NIfTI layouts) from MNI152",
    _OUT,
    _arg("--subjects", type=int, default=20, help="number of subjects (default 20)"),
    _SEED,
    _arg("--slices", type=int, default=20, help="axial slices per subject in the 2D layouts (default 20)"),
    _arg("--slice-spacing", type=int, default=1, help="axial planes (mm) between consecutive slices (default 1)"),
)
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


@_command(
    "demo",
    "run the whole pipeline (data, VQ-VAE, prior, evaluation, samples) on the demo cohort",
    _OUT,
    _arg("--subjects", type=int, default=None, help="demo cohort size (default: the demo settings')"),
    _SEED,
    _PRIOR,
    _arg(
        "--amp",
        choices=["auto", "on", "off"],
        default=None,
        help="bf16 autocast: auto = where the CPU has bf16 units (AMX / AVX-512 BF16) or on a GPU; off = float32 "
        "(default: the demo settings')",
    ),
)
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
    if "test_nll" in nll:
        print(f"  prior test NLL {nll['test_nll']:.3f} nats/token")
    elif "test_code_js" in nll:
        print(f"  prior: no likelihood (adversarial); generated vs test codes JS {nll['test_code_js']:.3f} bits")
    for key in ("checkpoints", "metrics", "samples", "tensorboard", "report"):
        if key in summary:
            print(f"  {key:<12} {summary[key]}")
    print(f"  tensorboard --logdir {summary['tensorboard']}")
    return 0


@_command(
    "ablation",
    "run the quality ablation of the demo settings (one change per row) and write ablation.md",
    _arg("--out", required=True, help="ablation folder (one run folder per row, ablation.json)"),
    _arg("--rows", nargs="+", default=None, help="run only these rows (keys); the others keep their figures"),
    _arg("--seed", type=int, default=0, help="seed of every row (default 0)"),
    _arg("--render-only", action="store_true", help="only write ablation.md from ablation.json"),
    _arg(
        "--bundle-row",
        type=float,
        default=None,
        metavar="SECONDS",
        help="also run a row with the 2D bundle's own defaults (128 px), SECONDS per training stage",
    ),
)
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


@_command(
    "seeds",
    "run the demo with several seeds and tabulate the spread of every headline figure",
    _arg("--out", required=True, help="folder (one demo run per seed, seeds.json, seeds.md)"),
    _arg("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)"),
    _PRIOR,
    _arg("--amp", choices=["auto", "on", "off"], default=None, help="bf16 autocast (see brainvq demo)"),
)
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


@_command(
    "report",
    "write report.md and figures (curves, grids, codebook, metrics) for a run",
    _arg("--run", required=True, help="run folder (brainvq demo --out DIR)"),
    _arg(
        "--no-generation",
        action="store_true",
        help="do not compute generation_metrics.json when it is missing (the table then says it was not computed)",
    ),
    _arg("--device", default=None, help="torch device for the models (default: cuda if available, else cpu)"),
    _arg("--render-only", action="store_true", help="redraw report.md and figures from report.json only"),
)
def _cmd_report(args: argparse.Namespace) -> int:
    from brainvq_monai.apps.report import make_report

    path = make_report(args.run, generation=not args.no_generation, device=args.device, render_only=args.render_only)
    print(f"wrote {path} (figures in {path.parent / 'report'})")
    return 0


@_command("bundle-path", "print the folder of a MONAI bundle this package ships", _BUNDLE_NAME)
def _cmd_bundle_path(args: argparse.Namespace) -> int:
    from brainvq_monai.bundle.utils import default_bundle_root

    print(default_bundle_root(args.name))
    return 0


@_command(
    "init-bundle",
    "copy a MONAI bundle this package ships into a new or empty folder",
    _BUNDLE_NAME,
    _arg("dir", help="destination folder: new or empty (files there are never overwritten)"),
)
def _cmd_init_bundle(args: argparse.Namespace) -> int:
    from brainvq_monai.bundle.copy import init_bundle
    from brainvq_monai.bundle.layout import config_list_arg

    dest = init_bundle(args.name, args.dir)
    print(f"copied bundle {args.name} to {dest}")
    print("next, from that folder (bundle_root is then the copy: its runs/, models/ and data/ stay there):")
    print(f'  cd {dest} && python -m monai.bundle run --config_file "{config_list_arg("train_vqvae")}"')
    print(f"  the configs, their order and options: see {dest / 'docs' / 'README.md'}")
    return 0


@_command(
    "export-bundle",
    "write a self-contained MONAI bundle (configs, models, metrics) from a finished run",
    _arg("--run", required=True, help="the run folder (brainvq demo output, or a bundle trained in place)"),
    _arg("--out", required=True, help="the new bundle folder (must not exist or be empty)"),
    _arg("--version", default=None, help="the bundle version (default: the source bundle's)"),
)
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


@_command(
    "datalist",
    "write a leak-free MONAI datalist for an OASIS, ADNI or NIfTI folder",
    _arg("--format", required=True, choices=["oasis", "adni", "nifti"]),
    _arg("--root", required=True, help="dataset root folder (read only)"),
    _arg("--out", required=True, help="datalist JSON file to write"),
    _arg("--val-fraction", type=float, default=0.2, help="fraction of subjects held out for validation"),
    _arg("--seed", type=int, default=0, help="seed of the subject split"),
    _arg("--slices", choices=["axial"], default=None, help="NIfTI only: list the axial slices holding brain"),
    _arg("--strict", action="store_true", help="fail on any unreadable file instead of skipping it"),
)
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


@_command(
    "compare",
    "head-to-heads on the demo cohort: our VQ-VAE vs MONAI's VQVAE, the Gated PixelCNN vs the transformer prior",
    _arg("--quick", action="store_true", help="64x64, shrunk channels, fewer steps (a CPU, minutes)"),
    _DEVICE,
    _arg("--out", default="compare_run", help="working folder (demo cohort under OUT/data)"),
    _arg("--run", default=None, help="compare the priors on this run's data and VQ-VAE (2D or 3D bundle run)"),
    _arg("--json", default=None, help="write the report to this JSON file (default: OUT/compare.json)"),
    _arg("--seed", type=int, default=0, help="seed of data, weights, batches and samplers"),
    _THREADS,
    _TINY,
)
def _cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from brainvq_monai.apps.compare import format_table, run_compare

    mode = "tiny" if args.tiny else ("quick" if args.quick else "full")
    report = run_compare(
        args.out, mode=mode, device=args.device, seed=args.seed, command=args.command_line, run=args.run
    )
    table = format_table(report)
    print(table)
    path = Path(args.json) if args.json else Path(args.out) / "compare.json"
    _write_json(path, {**report, "table": table})
    print(f"compare: report written to {path}", file=sys.stderr)
    return 0


@_command(
    "anomaly",
    "anomaly maps of a run's test split under the normal class: scores, AUROC, a figure and a results page",
    _arg("--run", required=True, help="run folder (brainvq demo --out DIR, or a bundle run)"),
    _arg("--out", default=None, help="output folder of the maps (default RUN/anomaly)"),
    _arg("--quantile", type=float, default=0.95, help="validation-NC NLL quantile of the threshold (default 0.95)"),
    _arg("--region", type=float, nargs=2, default=(0.3, 0.7), help="central box, axis fractions (default 0.3 0.7)"),
    _arg("--figure", default=None, help="figure PNG path, e.g. docs/anomaly_maps.png"),
    _arg("--markdown", default=None, help="results page path, e.g. docs/anomaly.md"),
    _arg("--seed", type=int, default=0, help="seed of the healing draws (default 0)"),
    _arg("--batch-size", type=int, default=None, help="test images per batch (default: the run config's)"),
    _DEVICE,
)
def _cmd_anomaly(args: argparse.Namespace) -> int:
    from brainvq_monai.apps.anomaly import format_auroc, run_anomaly

    results = run_anomaly(
        args.run, args.out, args.quantile, args.region, args.figure, args.markdown, args.seed, args.device,
        args.batch_size, command=args.command_line,
    )  # fmt: skip
    print(format_auroc(results))
    print(f"wrote {results['scores']} and {results['results_file']}")
    return 0


@_command(
    "benchmark",
    "sampling, training, data pipeline and 3D scale, side by side with MONAI's references",
    _DEVICE,
    _arg("--quick", action="store_true", help="smaller sizes and fewer repeats (CPU: < 5 minutes on 2 cores)"),
    _arg("--json", default=None, help="write the report to this JSON file"),
    _arg("--seed", type=int, default=0, help="seed of the weights, data and samplers"),
    _arg(
        "--threads",
        dest="bench_threads",
        type=int,
        default=1,
        help="torch intra-op threads for the whole run, recorded in the report (default 1: reference and ours then "
        "compete for one core each and their ratios stay stable on a shared machine; with more threads than free "
        "cores small-tensor work such as MONAI's reference samplers waits on the scheduler and the ratios measure "
        "that contention; 0 = torch's default)",
    ),
    _arg(
        "--section-budget-s",
        type=float,
        default=None,
        metavar="SECONDS",
        help="time budget of each section, on any device: sizes shrink and repeats drop to fit it (default: CPU "
        "--quick sampling 80, training 50, pipeline 45, scale3d 60; CPU full 600; CUDA --quick 150, full 600)",
    ),
    _arg(
        "--sections",
        nargs="+",
        default=None,
        metavar="NAME",
        help="run only these (sampling training pipeline scale3d)",
    ),
    _TINY,
)
def _cmd_benchmark(args: argparse.Namespace) -> int:
    from brainvq_monai.apps.benchmark import failed_checks, format_report, run_benchmark

    report = run_benchmark(
        args.device,
        quick=args.quick,
        tiny=args.tiny,
        seed=args.seed,
        sections=args.sections,
        threads=args.bench_threads,
        section_budget_s=args.section_budget_s,
    )
    print(format_report(report))
    if args.json:
        _write_json(args.json, report)
    failed = failed_checks(report)
    if failed:
        raise BrainVQError(f"benchmark: correctness checks failed: {', '.join(failed)}")
    return 0


@_command(
    "fault-injection",
    "interrupt the bundles' training runs at random points and check that they resume to the same weights",
    _arg("--out", required=True, help="working folder (demo cohort and run folders)"),
    _arg("--dims", type=int, nargs="+", choices=[2, 3], default=[2, 3], help="bundles (default 2 3)"),
    _arg(
        "--trainers",
        nargs="+",
        choices=["vqvae", "prior"],
        default=["vqvae", "prior"],
        help="vqvae and/or prior (default: both)",
    ),
    _arg("--kills", type=int, default=5, help="interruptions per case (default 5)"),
    _arg("--epochs", type=int, default=100, help="epochs per run (default 100)"),
    _arg("--seed", type=int, default=0, help="seed of the random choices (default 0)"),
    _arg("--json", default=None, help="also write the record here"),
)
def _cmd_fault_injection(args: argparse.Namespace) -> int:
    from brainvq_monai.apps.fault_injection import campaign_failures, render_campaign, run_campaign

    record = run_campaign(args.out, args.dims, args.trainers, args.kills, args.epochs, args.seed)
    print(render_campaign(record))
    if args.json:
        _write_json(args.json, record)
    failures = campaign_failures(record)
    if failures:
        raise BrainVQError(f"fault injection: the guarantees failed for {', '.join(failures)}")
    return 0


@_command(
    "generation-eval",
    "sample a run's prior and score the samples (realism, diversity, memorisation) against its test split",
    _arg("--run", required=True, help="run folder (brainvq demo --out DIR, or a bundle run)"),
    _arg("--samples", type=int, default=100, help="samples per class (default 100)"),
    _arg("--seed", type=int, default=0, help="seed of the feature net, samples and bootstrap (default 0)"),
    _arg("--retrain", action="store_true", help="retrain the feature net"),
)
def _cmd_generation_eval(args: argparse.Namespace) -> int:
    from brainvq_monai.apps.generation_eval import run_generation_eval

    result = run_generation_eval(args.run, args.samples, args.seed, retrain_feature_net=args.retrain)
    print(f"wrote {result['file']}")
    return 0


def _step_timeouts(pairs: Sequence[str] | None) -> dict[str, float]:
    """``NAME=SECONDS`` pairs of ``--step-timeout`` as ``{name: seconds}``."""
    out: dict[str, float] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise BrainVQInputError("--step-timeout", f"expected NAME=SECONDS, got {pair!r}")
    return out


@_command(
    "selfcheck",
    "check every GPU path in one time-bounded run (CUDA tests, benchmark, 2D bundle train/eval/sample) and write "
    "selfcheck.json and selfcheck.md; exit 3 without CUDA",
    _arg("--device", default="cuda", help="cuda or cuda:N (default cuda)"),
    _arg("--out", default="gpu_check", help="result folder: selfcheck.json, selfcheck.md, logs/ (default gpu_check)"),
    _arg("--work", default=None, help="working folder: demo cohort, bundle run, checkpoints (default OUT/work)"),
    _arg("--total-s", type=float, default=480.0, help="bound of the whole run in seconds (default 480)"),
    _arg("--train-s", type=float, default=25.0, help="time budget of each bundle training run (default 25)"),
    _arg("--subjects", type=int, default=60, help="demo cohort size (default 60, the bundle's)"),
    _arg("--steps", nargs="+", default=None, metavar="NAME", help="run only these steps (default: all, in order)"),
    _arg("--step-timeout", nargs="+", default=None, metavar="NAME=SECONDS", help="replace a step's timeout"),
    _arg("--keep-going", action="store_true", help="after a failure, still run the steps that do not need it"),
    _arg("--dry-run", action="store_true", help="on a CPU: resolve every step (no training, no CUDA), exit 0"),
    _TINY,
)
def _cmd_selfcheck(args: argparse.Namespace) -> int:
    from brainvq_monai.apps.selfcheck import SelfCheckSettings, run_selfcheck

    settings = SelfCheckSettings(
        out=args.out,
        work=args.work,
        device=args.device,
        total_s=args.total_s,
        train_s=args.train_s,
        subjects=args.subjects,
        steps=tuple(args.steps) if args.steps else None,
        timeouts=_step_timeouts(args.step_timeout),
        keep_going=args.keep_going,
        dry_run=args.dry_run,
        tiny=args.tiny,
        command=args.command_line,
    )
    record = run_selfcheck(settings, build_parser())
    for name, step in record["steps"].items():
        print(f"  {name:<20} {step['status']:<9} {step.get('seconds', 0):6.0f} s  {step.get('detail', '')}")
    print(record["message"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Builds the ``brainvq`` argument parser.

    Returns:
        the parser, with one sub-parser per command.
    """
    parser = argparse.ArgumentParser(prog="brainvq", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in _COMMANDS:
        p = sub.add_parser(command.name, help=command.help)
        for arg in command.args:
            p.add_argument(*arg.flags, **arg.options)
        p.set_defaults(func=command.func)
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
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(words)
    args.command_line = shlex.join(["brainvq", *words])  # recorded by the commands that write a report
    func: Callable[[argparse.Namespace], int] = args.func
    quiet_library_tracebacks()
    try:
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        return func(args)
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - every failure is one line (BRAINVQ_DEBUG: traceback)
        code = report_error(err)  # with BRAINVQ_DEBUG set, the traceback comes first
        if argv is None:
            exit_now(code)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

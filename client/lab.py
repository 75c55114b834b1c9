"""`stsfl`: the helper CLI for everything that is neither the server nor a site client
(synthetic cohorts, config checks, baselines, the one-machine demo)."""

from __future__ import annotations

import argparse

from stsfl.common.config.check import CONFIG_KINDS, check_config_file
from stsfl.common.console import console, run_cli


def _cmd_check_config(args: argparse.Namespace) -> int:
    check_config_file(args.path, args.kind)
    console.print(f"{args.path}: valid {args.kind} configuration")
    return 0


def _cmd_baselines(args: argparse.Namespace) -> int:
    # Imported here: torch, lifelines and scikit-survival are slow to import for the other commands.
    from pathlib import Path

    from rich.console import Console

    from stsfl.common.config import load_preset, load_schema

    from .baselines import ALL_MODELS, report_table, run_baselines, write_report

    preset = load_preset(args.preset)
    train_cfg = preset.train
    if args.epochs:
        train_cfg = train_cfg.model_copy(update={"epochs": args.epochs})
    truth = Path(args.truth) if args.truth else next(
        (Path(p) / "ground_truth.csv" for p in args.sites if (Path(p) / "ground_truth.csv").is_file()), None
    )
    report = run_baselines(
        args.sites, preset, load_schema(args.schema), mode=args.mode, site=args.site,
        models=args.models or ALL_MODELS, train_cfg=train_cfg, truth_csv=truth,
        horizons=args.horizons, n_boot=args.n_boot, seed=args.seed, progress=not args.quiet,
    )
    Console().print(report_table(report, f"test C-index, {args.mode}, preset {preset.name} (n test = {report.n_test})"))
    path = write_report(report, Path(args.out))
    console.print(f"report written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stsfl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate a YAML configuration file")
    check.add_argument("kind", choices=sorted(CONFIG_KINDS))
    check.add_argument("path")
    check.set_defaults(func=_cmd_check_config)

    base = sub.add_parser("baselines", help="fit the comparison models on one split and report test C-indices")
    base.add_argument("sites", nargs="+", help="site YAMLs, site folders, or a cohort folder of site folders")
    base.add_argument("--preset", default="cpu-small", help="model preset name or YAML (default: cpu-small)")
    base.add_argument("--schema", default=None, help="clinical schema YAML (default: the bundled one)")
    base.add_argument("--mode", choices=["pooled", "local"], default="pooled")
    base.add_argument("--site", default=None, help="the centre for --mode local (default: the first)")
    base.add_argument("--models", nargs="*", default=None, help="subset of models (default: all)")
    base.add_argument("--epochs", type=int, default=None, help="override the preset's train.epochs")
    base.add_argument("--truth", default=None, help="ground_truth.csv of a synthetic cohort (default: found beside the sites)")
    base.add_argument("--horizons", type=float, nargs="*", default=[365.0, 730.0, 1825.0], help="td-AUC horizons (days)")
    base.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples for the confidence intervals")
    base.add_argument("--seed", type=int, default=0)
    base.add_argument("--out", default="baselines.json", help="JSON report path")
    base.add_argument("--quiet", action="store_true", help="no progress bars")
    base.set_defaults(func=_cmd_baselines)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_cli(lambda: args.func(args))


if __name__ == "__main__":
    main()

"""`stsfl`: the helper CLI for everything that is neither the server nor a site client
(synthetic cohorts, config checks, baselines, the one-machine demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stsfl.common.config import parse_config
from stsfl.common.config.check import CONFIG_KINDS, check_config_file
from stsfl.common.console import console, run_cli

DEMO_COHORT = Path("data/synthetic")


def _cmd_check_config(args: argparse.Namespace) -> int:
    check_config_file(args.path, args.kind)
    console.print(f"{args.path}: valid {args.kind} configuration")
    return 0


def _synth_config(args: argparse.Namespace):
    """The synth config of --config / --tiny with the command-line overrides applied and validated."""
    from stsfl.common.synthetic import SynthConfig, load_synth_config

    config = load_synth_config(args.config, tiny=args.tiny)
    overrides = {
        key: value
        for key, value in {
            "centers": args.centers, "seed": args.seed, "patients_min": args.patients_min,
            "patients_max": args.patients_max, "workers": args.workers,
        }.items()
        if value is not None
    }
    if not overrides:
        return config
    source = f"{args.config or ('configs/synth-tiny.yaml' if args.tiny else 'configs/synth.yaml')} + command line"
    return parse_config(config.model_dump(mode="json") | overrides, SynthConfig, source)


def _print_cohort(cohort: dict, out: Path) -> None:
    from stsfl.common.synthetic.summary import summary_table

    console.print(summary_table(cohort))
    console.print(
        f"{out}: {cohort['pooled']['patients']} patients in {len(cohort['centres'])} centres, "
        f"{cohort['disk_bytes'] / 1e6:.0f} MB, generated in {cohort['seconds']:.0f} s; "
        f"site configs: {out}/<centre>/site.yaml, ground truth: {out}/ground_truth.csv"
    )


def _cmd_synth(args: argparse.Namespace) -> int:
    from stsfl.common.synthetic import generate_cohort

    cohort = generate_cohort(_synth_config(args), args.out)
    _print_cohort(cohort, args.out)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from stsfl.common.synthetic import generate_cohort, load_synth_config, read_cohort

    config = load_synth_config()
    cohort = read_cohort(DEMO_COHORT)
    if cohort is not None and cohort.get("settings_hash") == config.settings_hash():
        console.print(f"{DEMO_COHORT}: the default cohort is already there (same settings and seed); not regenerated")
    else:
        cohort = generate_cohort(config, DEMO_COHORT)
    _print_cohort(cohort, DEMO_COHORT)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stsfl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate a YAML configuration file")
    check.add_argument("kind", choices=sorted(CONFIG_KINDS))
    check.add_argument("path")
    check.set_defaults(func=_cmd_check_config)

    synth = sub.add_parser("synth", help="generate a synthetic multi-centre STS cohort (site folders + ground truth)")
    synth.add_argument("--out", type=Path, required=True, help="output folder (a previous cohort there is replaced)")
    synth.add_argument("--config", help="synth YAML (default: configs/synth.yaml)")
    synth.add_argument("--tiny", action="store_true", help="the tiny test preset configs/synth-tiny.yaml")
    synth.add_argument("--centers", type=int, help="number of centres")
    synth.add_argument("--seed", type=int)
    synth.add_argument("--patients-min", type=int, help="fewest patients of a centre")
    synth.add_argument("--patients-max", type=int, help="most patients of a centre")
    synth.add_argument("--workers", type=int, help="worker processes (the output does not depend on it)")
    synth.set_defaults(func=_cmd_synth)

    demo = sub.add_parser("demo", help=f"the main job on the embedded default: the default cohort in {DEMO_COHORT}")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_cli(lambda: args.func(args))


if __name__ == "__main__":
    main()

"""`stsfl`: the helper CLI for everything that is neither the server nor a site client
(synthetic cohorts, config checks, baselines, the one-machine demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stsfl.common.config import parse_config
from stsfl.common.config.check import CONFIG_KINDS, check_config_file
from stsfl.common.config.loader import bundled_path
from stsfl.common.console import UserError, console, run_cli

DEMO_COHORT = Path("data/synthetic")
DEMO_SYNTH = "synth-demo.yaml"  # configs/: the default cohort's hospitals, sized for the demo
DEMO_PRESET = "cpu-demo"  # configs/presets/: cpu-small with a cheaper N4


def _cmd_check_config(args: argparse.Namespace) -> int:
    check_config_file(args.path, args.kind)
    console.print(f"{args.path}: valid {args.kind} configuration")
    return 0


def _cmd_schema_draft(args: argparse.Namespace) -> int:
    from stsfl.client.data.schema_draft import draft_schema, render_draft

    out = args.out or args.csv.with_name("schema.draft.yaml")
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; give --out PATH or --force to replace it")
    draft = draft_schema(args.csv, args.max_categories)
    out.write_text(render_draft(draft, args.csv), encoding="utf-8")
    console.print(
        f"{out}: {len(draft.data['variables'])} variables, {len(draft.data['endpoints'])} endpoints, "
        f"{len(draft.left_out)} columns left out - every guess is marked `# REVIEW:`",
        highlight=False,
    )
    return 0


def _cmd_baselines(args: argparse.Namespace) -> int:
    # Imported here: torch, lifelines and scikit-survival are slow to import for the other commands.
    from rich.console import Console

    from stsfl.client.lab.baselines import ALL_MODELS, report_table, run_baselines, write_report
    from stsfl.common.config import load_preset, load_schema

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    preset = load_preset(args.preset)
    train_cfg = preset.train
    if args.epochs:
        train_cfg = train_cfg.model_copy(update={"epochs": args.epochs})
    truth = (
        Path(args.truth)
        if args.truth
        else next((Path(p) / "ground_truth.csv" for p in args.sites if (Path(p) / "ground_truth.csv").is_file()), None)
    )
    report = run_baselines(
        args.sites,
        preset,
        load_schema(args.schema),
        mode=args.mode,
        site=args.site,
        models=args.models or ALL_MODELS,
        train_cfg=train_cfg,
        truth_csv=truth,
        horizons=args.horizons,
        n_boot=args.n_boot,
        seed=args.seed,
        progress=not args.quiet,
    )
    Console().print(report_table(report, f"test C-index, {args.mode}, preset {preset.name} (n test = {report.n_test})"))
    path = write_report(report, Path(args.out))
    console.print(f"report written to {path}")
    return 0


def _synth_config(args: argparse.Namespace):
    """The synth config of --config / --tiny with the command-line overrides applied and validated."""
    from stsfl.client.lab.synthetic import SynthConfig, load_synth_config

    config = load_synth_config(args.config, tiny=args.tiny)
    overrides = {
        key: value
        for key, value in {
            "centers": args.centers,
            "seed": args.seed,
            "patients_min": args.patients_min,
            "patients_max": args.patients_max,
            "workers": args.workers,
        }.items()
        if value is not None
    }
    if not overrides:
        return config
    source = f"{args.config or ('configs/synth-tiny.yaml' if args.tiny else 'configs/synth.yaml')} + command line"
    return parse_config(config.model_dump(mode="json") | overrides, SynthConfig, source)


def _print_cohort(cohort: dict, out: Path) -> None:
    from stsfl.client.lab.synthetic.summary import summary_table

    console.print(summary_table(cohort))
    console.print(
        f"{out}: {cohort['pooled']['patients']} patients in {len(cohort['centres'])} centres, "
        f"{cohort['disk_bytes'] / 1e6:.0f} MB, generated in {cohort['seconds']:.0f} s; "
        f"site configs: {out}/<centre>/site.yaml, ground truth: {out}/ground_truth.csv"
    )


def _cmd_synth(args: argparse.Namespace) -> int:
    from stsfl.client.lab.synthetic import generate_cohort

    cohort = generate_cohort(_synth_config(args), args.out)
    _print_cohort(cohort, args.out)
    return 0


def demo_cohort(tiny: bool) -> tuple[Path, dict]:
    """The demo's cohort folder and its description: generated unless the folder already holds
    one with the same settings and seed (a second `make demo` reuses it)."""
    from stsfl.client.lab.synthetic import generate_cohort, load_synth_config, read_cohort

    cohort_dir = DEMO_COHORT.with_name(DEMO_COHORT.name + "-tiny") if tiny else DEMO_COHORT
    config = load_synth_config(None if tiny else bundled_path(DEMO_SYNTH), tiny=tiny)
    cohort = read_cohort(cohort_dir)
    if cohort is not None and cohort.get("settings_hash") == config.settings_hash():
        console.print(f"{cohort_dir}: the cohort is already there (same settings and seed); not regenerated")
        return cohort_dir, cohort
    return cohort_dir, generate_cohort(config, cohort_dir)


def _cmd_demo(args: argparse.Namespace) -> int:
    """Synthetic cohort -> every site preprocessed -> a real local federation (one SuperNode
    process per centre, the last centre held out) -> the results folder, its report and one table."""
    from stsfl.client.lab.demo_federation import prepare_demo_sites, run_demo_federation
    from stsfl.client.lab.demo_summary import demo_table

    cohort_dir, cohort = demo_cohort(args.tiny)
    _print_cohort(cohort, cohort_dir)
    prepare_demo_sites(sorted(cohort_dir.glob("*/site.yaml")), DEMO_PRESET)
    summary = run_demo_federation(cohort_dir, args.results, DEMO_PRESET, rounds=args.rounds)
    console.print(
        f"federation done: selected round {summary['selected_round']} of {summary['rounds']} "
        f"({summary['selection']}); results in {args.results}"
    )
    if summary.get("cross_site"):
        console.print(f"cross-site validation: {args.results / 'cross_site.csv'} and cross_site.png")
    console.print(demo_table(summary, cohort, args.results))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stsfl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate a YAML configuration file")
    check.add_argument("kind", choices=sorted(CONFIG_KINDS))
    check.add_argument("path")
    check.set_defaults(func=_cmd_check_config)

    schema = sub.add_parser("schema", help="clinical schema helpers")
    schema_sub = schema.add_subparsers(dest="schema_command", required=True)
    draft = schema_sub.add_parser(
        "draft", help="guess a schema draft from a hospital's clinical CSV (every guess marked for review)"
    )
    draft.add_argument("csv", type=Path, help="the clinical table (one row per patient)")
    draft.add_argument("--out", type=Path, default=None, help="draft YAML to write (default: schema.draft.yaml beside the CSV)")
    draft.add_argument("--max-categories", type=int, default=20, help="a text column with more values is left out (default 20)")
    draft.add_argument("--force", action="store_true", help="replace an existing --out file")
    draft.set_defaults(func=_cmd_schema_draft)

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
    base.add_argument("--threads", type=int, default=None, help="torch intra-op threads (1 is fastest on a busy machine)")
    base.add_argument("--quiet", action="store_true", help="no progress bars")
    base.set_defaults(func=_cmd_baselines)

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

    demo = sub.add_parser(
        "demo", help=f"the main job on the embedded default: the cohort of configs/{DEMO_SYNTH} in {DEMO_COHORT}"
    )
    demo.add_argument("--tiny", action="store_true", help="the tiny cohort (configs/synth-tiny.yaml), for a quick check")
    demo.add_argument("--rounds", type=int, default=10, help="federated rounds (default 10)")
    demo.add_argument("--results", type=Path, default=Path("results/demo"), help="results folder (default results/demo)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_cli(lambda: args.func(args))


if __name__ == "__main__":
    main()

"""`sts-client`: a hospital site's command (validate its data, join a federation, predict)."""

from __future__ import annotations

import argparse
import logging

from pathlib import Path

from stsfl.common.config import SiteConfig, load_config, load_preset
from stsfl.common.console import console, run_cli


def _cmd_check_config(args: argparse.Namespace) -> int:
    site = load_config(args.site, SiteConfig)
    console.print(f"{args.site}: valid site configuration for site {site.name!r}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    """Check (and preprocess into the cache) the whole site; exit 1 when it cannot train at all."""
    from rich.console import Console

    from .problems import SiteUnusableError
    from .site_prepare import prepare_site
    from .site_report import print_report, problems_table, summarise, training_blockers

    out = Console(soft_wrap=True, width=max(Console().width, 120))
    logging.getLogger("stsfl.site").setLevel(logging.ERROR)  # the problem table below shows them all
    site = load_config(args.site, SiteConfig)
    preset = load_preset(args.preset)
    try:
        prepared = prepare_site(site, Path(args.site), preset, policy="skip")
    except SiteUnusableError as err:
        out.print(problems_table(err.problems))
        out.print(f"[bold red]the site cannot train:[/] site {site.name}: clinical table unusable")
        return 1
    summary = summarise(prepared)
    blockers = training_blockers(summary, prepared.problems, site.bad_patient_policy)
    print_report(out, prepared, summary, blockers)
    if args.preview:
        from .site_preview import write_crop_preview

        shown = write_crop_preview(prepared, Path(args.preview))
        out.print(f"crop preview of {shown} patients: {args.preview}")
    return 1 if blockers else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sts-client", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-config", help="validate the site YAML")
    check.add_argument("--site", required=True)
    check.set_defaults(func=_cmd_check_config)
    validate = sub.add_parser("validate", help="check the site's data without training (and fill the preprocessing cache)")
    validate.add_argument("--site", required=True, help="site YAML")
    validate.add_argument("--preset", default="cpu-small", help="model preset whose preprocessing to apply (name or YAML)")
    validate.add_argument("--preview", metavar="PNG", help="also write a PNG of the preprocessed MRI crops")
    validate.set_defaults(func=_cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_cli(lambda: args.func(args))


if __name__ == "__main__":
    main()

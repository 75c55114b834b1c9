"""`sts-client`: a hospital site's command (validate its data, join a federation, predict)."""

from __future__ import annotations

import argparse

from stsfl.common.config import SiteConfig, load_config
from stsfl.common.console import console, run_cli


def _cmd_check_config(args: argparse.Namespace) -> int:
    site = load_config(args.site, SiteConfig)
    console.print(f"{args.site}: valid site configuration for site {site.name!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sts-client", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-config", help="validate the site YAML")
    check.add_argument("--site", required=True)
    check.set_defaults(func=_cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_cli(lambda: args.func(args))


if __name__ == "__main__":
    main()

"""`sts-server`: the coordinator's command (start a federation, resume it, report on it)."""

from __future__ import annotations

import argparse

from stsfl.common.config import FederationConfig, load_config
from stsfl.common.console import console, run_cli


def _cmd_check_config(args: argparse.Namespace) -> int:
    fed = load_config(args.config, FederationConfig)
    console.print(f"{args.config}: valid federation configuration ({len(fed.sites)} sites, {fed.strategy})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sts-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-config", help="validate the federation YAML")
    check.add_argument("--config", required=True)
    check.set_defaults(func=_cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_cli(lambda: args.func(args))


if __name__ == "__main__":
    main()

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stsfl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate a YAML configuration file")
    check.add_argument("kind", choices=sorted(CONFIG_KINDS))
    check.add_argument("path")
    check.set_defaults(func=_cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_cli(lambda: args.func(args))


if __name__ == "__main__":
    main()

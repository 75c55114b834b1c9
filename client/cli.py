"""`sts-client`: a hospital site's command.

    sts-client --site site.yaml --server HOST:PORT    join a federation (runs until Ctrl-C)
    sts-client check-config --site site.yaml          validate the site YAML

Joining starts a Flower SuperNode for this site. The SuperNode carries node-config
`site-name` (the YAML's `name`) and `site-config` (the YAML's absolute path); our ClientApp
reads its data through them. The SuperNode's output goes to the screen and to
<log-dir>/sts-client-<site>.log.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from stsfl.common.config import SiteConfig, load_config
from stsfl.common.console import UserError, console, run_cli
from stsfl.common.fed_protocol import NODE_SITE_CONFIG, NODE_SITE_NAME
from stsfl.common.flower_procs import flower_env, free_port, supernode_command


def site_node_config(site_yaml: Path) -> dict[str, str]:
    """The SuperNode's node-config for a site YAML (validated first)."""
    site = load_config(site_yaml, SiteConfig)
    return {NODE_SITE_NAME: site.name, NODE_SITE_CONFIG: str(Path(site_yaml).resolve())}


def _cmd_join(args: argparse.Namespace) -> int:
    if not args.site or not args.server:
        raise UserError("give --site site.yaml and --server HOST:PORT")
    node_config = site_node_config(Path(args.site))
    if ":" not in args.server:
        raise UserError(f"--server {args.server!r}: expected HOST:PORT of the coordinator's SuperLink")
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"sts-client-{node_config[NODE_SITE_NAME]}.log"
    cmd = supernode_command(args.server, node_config, args.port or free_port())
    console.print(f"site {node_config[NODE_SITE_NAME]} joining {args.server} (log: {log_path})")
    # SIGTERM must stop the SuperNode too: turn it into SystemExit so the `finally` below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    proc = subprocess.Popen(
        cmd, env=flower_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        with open(log_path, "a", encoding="utf-8") as log:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                sys.stderr.write(line)
        return proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)


def _cmd_check_config(args: argparse.Namespace) -> int:
    site = load_config(args.site, SiteConfig)
    console.print(f"{args.site}: valid site configuration for site {site.name!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sts-client", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site", help="site YAML")
    parser.add_argument("--server", help="HOST:PORT of the coordinator's SuperLink")
    parser.add_argument("--port", type=int, default=0, help="local port of the SuperNode's ClientApp API (default: free)")
    parser.add_argument("--log-dir", default="logs", help="where sts-client-<site>.log goes (default: ./logs)")
    parser.set_defaults(func=_cmd_join)
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check-config", help="validate the site YAML")
    check.add_argument("--site", required=True)
    check.set_defaults(func=_cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_cli(lambda: args.func(args))


if __name__ == "__main__":
    main()

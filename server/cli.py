"""`sts-server`: the coordinator's command.

    sts-server --config federation.yaml [--results DIR] [--host H] [--port P]   start a federation
    sts-server --config federation.yaml --loco                        leave-one-centre-out (one federation per centre)
    sts-server --config federation.yaml --simulate                    all sites on this machine
    sts-server --resume RESULTS_DIR [--simulate]                      continue a stopped one
    sts-server check-config --config federation.yaml                  validate the YAML
    sts-server export --results RESULTS_DIR --out MODEL.zip           the model file for the sites
    sts-server report RESULTS_DIR [--baselines FILE]                  (re)write RESULTS_DIR/report.html

Starting a federation: a SuperLink on the configured host and port (a free port when 0) logging
to <results>/superlink.log; our ServerApp submitted with `flwr run --stream`; its progress lines
(round, sites responding, losses, held-out C-index) on screen and everything in
<results>/server.log; the SuperLink is stopped at the end, also on errors and Ctrl-C; then the
run report (<results>/report.html, see stsfl.server.reports.report).
With --simulate the SuperLink runs Flower's simulation engine, one virtual SuperNode per site
(site YAMLs from the federation YAML's `simulation` section; see stsfl.server.federation.simulation).
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from pathlib import Path

from stsfl.common.certificates import CertificateError, check_server_certificate, load_site_public_key
from stsfl.common.config import ConfigError, FederationConfig, load_config
from stsfl.common.config.security import ServerTls, server_tls
from stsfl.common.console import UserError, console, print_progress, run_cli
from stsfl.common.flower_procs import flower_env, free_port, warn_insecure
from stsfl.common.site_metrics import describe_metrics
from stsfl.server.federation.loco import run_loco_command
from stsfl.server.federation.simulation import plan_simulation
from stsfl.server.federation.superlink import flwr_run_command, register_site_keys, start_superlink, write_connection

CONNECTION = "stsfl"
PROGRESS_PREFIX = "[stsfl] "
SUBMIT_ATTEMPTS = 5


def run_federation(
    config_path: Path,
    results_dir: Path | None = None,
    port: int | None = None,
    resume: bool = False,
    task_poll_interval: float | None = None,
    echo=None,
    simulate: bool = False,
    host: str | None = None,
) -> dict:
    """Run (or resume) one federation end to end; returns the summary (results/summary.json).

    `echo(line)` receives the progress lines (default: print them on the console).
    `simulate`: every site as a virtual SuperNode of Flower's simulation engine on this machine."""
    config_path = Path(config_path).resolve()
    fed = load_config(config_path, FederationConfig)
    if fed.mode == "loco":
        raise UserError(f"{config_path}: mode: loco is one federation per centre: run it with `sts-server --config`")
    results = Path(results_dir or fed.results_dir).resolve()
    if resume and not (results / "checkpoint.npz").is_file():
        raise UserError(f"{results}: no checkpoint.npz, nothing to resume")
    plan = plan_simulation(fed, config_path) if simulate else None
    tls = None if plan else superlink_tls(fed, config_path)
    results.mkdir(parents=True, exist_ok=True)
    echo = echo or print_progress
    host = host or fed.network.host
    port = port if port is not None else fed.network.port
    port = port or free_port(host)
    flwr_home = results / ".flwr"
    env = flower_env(flwr_home, task_poll_interval)
    env = plan.env(env) if plan else env
    link = start_superlink(host, port, results / "superlink.log", env, simulation=plan is not None, tls=tls)
    try:
        write_connection(flwr_home, CONNECTION, f"{host}:{port}", tls.ca_cert if tls else None)
        if tls:
            register_site_keys(tls.site_keys, CONNECTION, env)
        secured = f"TLS, {len(tls.site_keys)} registered sites" if tls else "INSECURE" if not plan else "simulation"
        echo(f"SuperLink listening on {host}:{port} ({secured}; log: {results / 'superlink.log'})")
        echo(plan.describe() if plan else f"sites join with: sts-client --site <site.yaml> --server {host}:{port}")
        run_config = {"federation-config": str(config_path), "results-dir": str(results), "resume": resume}
        run_config.update(plan.run_config() if plan else {})
        cmd = flwr_run_command(CONNECTION, run_config, federation_config=plan.federation_config() if plan else None)
        _stream(cmd, env, results / "server.log", echo)
    finally:
        link.stop()
    status = _read_json(results / "status.json")
    if status.get("phase") != "done":
        raise UserError(
            f"the federation did not finish (phase {status.get('phase', 'unknown')!r}): "
            f"{status.get('error', 'see ' + str(results / 'server.log'))}"
        )
    _write_report(results, echo)
    return _read_json(results / "summary.json")


def superlink_tls(fed: FederationConfig, config_path: Path) -> ServerTls | None:
    """The SuperLink's certificates and the registered site keys from the YAML's `security` block,
    checked before anything starts (files exist, certificates in date and from the CA); None with a
    WARNING when the YAML says `insecure: true`."""
    tls = server_tls(fed.security, fed.sites, config_path)
    if tls is None:
        warn_insecure(config_path, "the SuperLink accepts connections")
        return None
    try:
        check_server_certificate(tls.ca_cert, tls.server_cert, tls.server_key)
        for key in tls.site_keys.values():
            load_site_public_key(key)
    except CertificateError as err:
        raise ConfigError(f"{config_path}: security: {err}") from None
    return tls


def _write_report(results: Path, echo) -> None:
    """The run report; a failure there is reported, never lost results (they are all written)."""
    from stsfl.server.reports.report import build_report

    try:
        echo(f"report: {build_report(results)}")
    except Exception as exc:  # noqa: BLE001 - the run is done; say how to retry instead of failing it
        echo(f"report not written ({type(exc).__name__}: {exc}); retry with: sts-server report {results}")


def _stream(cmd: list[str], env: dict, log_path: Path, echo) -> bool:
    """Run `flwr run --stream`: every line to the log file, our progress lines to `echo`.
    Returns whether the SuperLink accepted the run."""
    started = False
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace"
        )  # flwr prints emoji; LANG may be C
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                started = started or "Successfully started run" in line
                if PROGRESS_PREFIX in line:
                    echo(line.split(PROGRESS_PREFIX, 1)[1].rstrip())
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    return started


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _print_summary(summary: dict) -> None:
    console.print(f"selected round {summary['selected_round']} ({summary['selection']})")
    for site, metrics in (summary.get("holdout_selected") or {}).items():
        if metrics:
            console.print(f"held-out {site}: {describe_metrics(metrics)}")
    if summary.get("cross_site"):
        console.print(f"cross-site validation matrix: {summary['cross_site']['file']} (+ .json, .png)")


def _cmd_run(args: argparse.Namespace) -> int:
    run = functools.partial(run_federation, simulate=args.simulate, host=args.host)
    if args.resume:
        results = Path(args.resume)
        if load_config(results / "federation.yaml", FederationConfig).mode == "loco":
            return run_loco_command(results / "federation.yaml", results, args.port, False, run)
        summary = run(results / "federation.yaml", results, args.port, resume=True)
    else:
        if not args.config:
            raise UserError("give --config federation.yaml (or --resume RESULTS_DIR)")
        results = Path(args.results) if args.results else None
        if args.loco or load_config(args.config, FederationConfig).mode == "loco":
            return run_loco_command(Path(args.config), results, args.port, args.loco, run)
        summary = run(Path(args.config), results, args.port)
    _print_summary(summary)
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    from rich.table import Table

    from stsfl.common.config.federation import POOLED_ONLY
    from stsfl.common.tasks import task_spec

    fed = load_config(args.config, FederationConfig)
    console.print(f"{args.config}: valid federation configuration ({len(fed.sites)} sites, {fed.strategy}, {fed.rounds} rounds)")
    table = Table(title="training recipe the sites run (train:)")
    for column in ("key", "value", "from"):
        table.add_column(column)
    for key, value, source in fed.recipe.table(skip=POOLED_ONLY | task_spec(fed.task).recipe_unused):
        table.add_row(key, str(value), source)
    console.print(table)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from stsfl.server.export_model import export_from_results

    path = export_from_results(Path(args.results), Path(args.out), site_baselines=args.site_baselines)
    console.print(f"model file: {path} (sites predict with: sts-client predict --site site.yaml --model {path} ...)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from stsfl.server.reports.report import build_report

    console.print(f"report: {build_report(Path(args.results_dir), args.baselines)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sts-server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="federation YAML")
    parser.add_argument("--resume", metavar="RESULTS_DIR", help="continue the run in this results folder")
    parser.add_argument("--results", help="results folder (default: results_dir of the YAML)")
    parser.add_argument("--port", type=int, help="SuperLink port (default: network.port of the YAML; 0 = free)")
    parser.add_argument("--loco", action="store_true", help="leave-one-centre-out: one federation per centre (= mode: loco)")
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="run every site on this machine with Flower's simulation engine (site YAMLs: simulation.site_configs)",
    )
    parser.add_argument(
        "--host", help="SuperLink address to listen on (default: network.host of the YAML), e.g. 0.0.0.0 inside a container"
    )
    parser.set_defaults(func=_cmd_run)
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check-config", help="validate the federation YAML")
    check.add_argument("--config", required=True)
    check.set_defaults(func=_cmd_check_config)
    export = sub.add_parser(
        "export",
        help="write the model file of a finished federation (weights, preprocessing, schema, statistics, baseline hazard)",
    )
    export.add_argument("--results", required=True, help="the federation's results folder")
    export.add_argument("--out", required=True, help="model file to write (e.g. model.stsfl.zip)")
    export.add_argument(
        "--site-baselines",
        action="store_true",
        help="also carry each training site's own baseline hazard (its monthly event counts)",
    )
    export.set_defaults(func=_cmd_export)
    report = sub.add_parser("report", help="write the run report (report.html + PNGs) of a results folder")
    report.add_argument("results_dir", metavar="RESULTS_DIR")
    report.add_argument(
        "--baselines", help="a `stsfl baselines` JSON for the comparison table (default: RESULTS_DIR/baselines.json when there)"
    )
    report.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_cli(lambda: args.func(args))


if __name__ == "__main__":
    main(sys.argv[1:])

"""`sts-client`: a hospital site's command.

    sts-client --site site.yaml --server HOST:PORT    join a federation (runs until Ctrl-C)
    sts-client check-config --site site.yaml          validate the site YAML
    sts-client validate --site site.yaml              check (and preprocess) the site data
    sts-client predict --site site.yaml --model MODEL (--patient PID ... | --patients DIR) [--out DIR]
                                                      absolute risks, one HTML page per patient + CSV
    sts-client recalibrate --site site.yaml --model MODEL [--out DIR]
                                                      the site's own baselines and slopes, no training

Joining starts a Flower SuperNode for this site and, beside it, the site worker
(stsfl.client.federation.site_worker: one process that imports torch and prepares the site's data once and
handles every message the per-message ClientApp processes hand it over a Unix socket; when it
dies it is started again). The SuperNode carries node-config `site-name` (the YAML's `name`),
`site-config` (the YAML's absolute path) and `worker-dir` (the worker's socket folder, in the
site's state folder); `--no-worker` leaves the worker out, each ClientApp process then handles
its message itself. The SuperNode's and the worker's output go to <log-dir>/sts-client-<site>.log;
the screen shows the runs, each round's local training and where the site's outputs are
(stsfl.client.federation.operator_screen). When the SuperNode exits (its SuperLink went away: the run ended,
or the coordinator restarted to resume it), a new one is started, so a site stays joined; the
screen then says once that it waits for the coordinator.

The connection uses TLS (the YAML's security.ca_cert verifies the SuperLink) and the site signs
in with its key (security.auth_key) unless the YAML says `security.insecure: true`. When the
SuperLink refuses the site (certificate expired or not from our CA, key not registered),
sts-client stops with the reason instead of retrying; a key not registered is retried for
--registration-wait seconds first (the coordinator registers the keys just after starting).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from stsfl.client.federation.operator_screen import OperatorScreen
from stsfl.client.federation.supernode import supernode_command, supernode_refusal
from stsfl.client.federation.worker_supervisor import WorkerSupervisor, site_worker_dir
from stsfl.common.certificates import CertificateError, load_site_private_key
from stsfl.common.config import ConfigError, SiteConfig, load_config, load_preset
from stsfl.common.config.security import SiteTls, site_tls
from stsfl.common.console import UserError, console, run_cli
from stsfl.common.fed_protocol import NODE_SITE_CONFIG, NODE_SITE_NAME, NODE_WORKER_DIR
from stsfl.common.flower_procs import flower_env, free_port, warn_insecure

RECONNECT_DELAY_S = 2.0
RECENT_OUTPUT_CHARS = 20_000


def site_node_config(site_yaml: Path) -> dict[str, str]:
    """The SuperNode's node-config for a site YAML (validated first)."""
    site = load_config(site_yaml, SiteConfig)
    return {NODE_SITE_NAME: site.name, NODE_SITE_CONFIG: str(Path(site_yaml).resolve())}


def site_security(site_yaml: Path) -> SiteTls | None:
    """The site's TLS files (checked: they exist, the key is one Flower reads), or None with a
    WARNING when the YAML says `security.insecure: true`."""
    tls = site_tls(load_config(site_yaml, SiteConfig).security, site_yaml)
    if tls is None:
        warn_insecure(site_yaml, "this site connects")
        return None
    try:
        load_site_private_key(tls.auth_key)
    except CertificateError as err:
        raise ConfigError(f"{site_yaml}: security.auth_key: {err}") from None
    return tls


def refusal_message(kind: str, site_yaml: Path, tls: SiteTls, server: str) -> str:
    """What the operator should do about a refusal (`stsfl.client.federation.supernode.supernode_refusal`)."""
    return {
        "expired": f"the SuperLink at {server} presents an expired certificate: the coordinator must renew it "
        "(deploy/make_certs.py server); nothing to change at this site",
        "wrong-ca": f"the SuperLink at {server} presents a certificate that the CA in {site_yaml}: security.ca_cert "
        f"({tls.ca_cert}) does not vouch for: wrong CA file, or a server that is not the coordinator's",
        "unregistered": f"the SuperLink at {server} does not know this site's key ({site_yaml}: security.auth_key "
        f"= {tls.auth_key}): send the PUBLIC key {tls.auth_key.with_suffix('.pub')} to the coordinator "
        "to be registered (docs/site-operator.md, 'Joining securely')",
        "key-invalid": f"{site_yaml}: security.auth_key: {tls.auth_key} is not a key Flower can read",
    }[kind]


def _cmd_join(args: argparse.Namespace) -> int:
    if not args.site or not args.server:
        raise UserError("give --site site.yaml and --server HOST:PORT")
    node_config = site_node_config(Path(args.site))
    tls = site_security(Path(args.site))
    if ":" not in args.server:
        raise UserError(f"--server {args.server!r}: expected HOST:PORT of the coordinator's SuperLink")
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"sts-client-{node_config[NODE_SITE_NAME]}.log"
    console.print(f"site {node_config[NODE_SITE_NAME]} joining {args.server} (log: {log_path})")
    # SIGTERM must stop the SuperNode and the worker too: turn it into SystemExit so the `finally`s run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    worker = None
    if args.worker:
        worker = _start_worker(Path(args.site), log_path)
        node_config[NODE_WORKER_DIR] = str(worker.folder)
    try:
        return _join_loop(args, node_config, tls, log_path, worker)
    finally:
        if worker is not None:
            worker.stop()


def _start_worker(site_yaml: Path, log_path: Path) -> WorkerSupervisor:
    """The site's worker process, in <site state folder>/worker."""
    folder = site_worker_dir(load_config(site_yaml, SiteConfig), site_yaml)
    worker = WorkerSupervisor(site_yaml, folder, log_path, say=lambda line: console.print(line, highlight=False))
    worker.start()
    return worker


def _join_loop(
    args: argparse.Namespace, node_config: dict[str, str], tls: SiteTls | None, log_path: Path, worker: WorkerSupervisor | None
) -> int:
    """Run SuperNodes until one is refused, or (with --no-reconnect) until the first one exits."""
    screen = OperatorScreen(args.server, log_path)
    tick = worker.check if worker else None
    unregistered_since = None
    log_path.touch()
    with open(log_path, "rb") as tail:  # one reader for every SuperNode: the worker's lines between them too
        tail.seek(0, os.SEEK_END)
        while True:
            # A fresh local port each time: a previous SuperNode's SuperExec may still be polling the old one.
            cmd = supernode_command(args.server, node_config, args.port or free_port(), tls=tls)
            code, output = _run_supernode(cmd, log_path, tail, screen, tick)
            refusal = supernode_refusal(output) if tls else None
            if refusal == "unregistered":
                # The coordinator registers the sites' keys just after its SuperLink starts: wait a little.
                unregistered_since = unregistered_since or time.monotonic()
                if time.monotonic() - unregistered_since < args.registration_wait:
                    refusal = None
            else:
                unregistered_since = None
            if refusal:
                raise UserError(
                    f"site {node_config[NODE_SITE_NAME]} refused: {refusal_message(refusal, Path(args.site), tls, args.server)}"
                )
            if not args.reconnect:
                return code
            # A SuperNode exits when its SuperLink goes away (the run ended, or the coordinator restarts to
            # resume it): start a new one, which registers again once the SuperLink is back.
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"SuperNode exited with code {code}; reconnecting to {args.server} in {RECONNECT_DELAY_S:.0f} s\n")
            screen.lost()
            time.sleep(RECONNECT_DELAY_S)


def _run_supernode(
    cmd: list[str], log_path: Path, tail: BinaryIO, screen: OperatorScreen, tick: Callable[[], None] | None = None
) -> tuple[int, str]:
    """Run one SuperNode to its end; its output goes to the log file, read back through `tail` for
    the screen. Returns its exit code and output. `tick` is called every half second (the worker's watch).

    The output goes to the file, not a pipe: the SuperNode's SuperExec child inherits the stream
    and can outlive it, so end-of-pipe would not tell that the SuperNode has exited."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=flower_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    recent = ""  # the end of its output: why a refused SuperNode exited is in its last lines
    try:
        while proc.poll() is None:
            time.sleep(0.5)
            if tick is not None:
                tick()
            chunk = tail.read().decode("utf-8", "replace")
            screen.feed(chunk)
            recent = (recent + chunk)[-RECENT_OUTPUT_CHARS:]
        chunk = tail.read().decode("utf-8", "replace")
        screen.feed(chunk)
        return proc.returncode, (recent + chunk)[-RECENT_OUTPUT_CHARS:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)


def _cmd_check_config(args: argparse.Namespace) -> int:
    site = load_config(args.site, SiteConfig)
    console.print(f"{args.site}: valid site configuration for site {site.name!r}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    """Check (and preprocess into the cache) the whole site; exit 1 when it cannot train at all."""
    from rich.console import Console

    from stsfl.client.data.site_prepare import prepare_site
    from stsfl.client.data.site_report import print_report, problems_table, summarise, training_blockers
    from stsfl.client.problems import SiteUnusableError

    out = Console(soft_wrap=True, width=max(Console().width, 120))
    logging.getLogger("stsfl.site").setLevel(logging.ERROR)  # the problem table below shows them all
    site = load_config(args.site, SiteConfig)
    if args.task == "linear-cox" or (args.task == "auto" and _is_tabular(site, Path(args.site))):
        from stsfl.client.data.tabular_validation import check_tabular_site, print_tabular_report

        summary = check_tabular_site(site, Path(args.site))
        print_tabular_report(out, summary)
        return 1 if summary.blockers else 0
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
        from stsfl.client.data.site_preview import write_crop_preview

        shown = write_crop_preview(prepared, Path(args.preview))
        out.print(f"crop preview of {shown} patients: {args.preview}")
    return 1 if blockers else 0


def _is_tabular(site: SiteConfig, site_yaml: Path) -> bool:
    """A tabular (task linear-cox) site: its CSV has the E and T columns of that contract."""
    import csv

    path = site.root_dir(site_yaml) / site.layout.clinical_csv
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError):
        return False  # the imaging check names the unreadable file
    return {"E", "T"} <= set(header)


def _cmd_predict(args: argparse.Namespace) -> int:
    """One HTML page per patient and predictions.csv (see stsfl.client.prediction.predict)."""
    from stsfl.client.prediction.predict import predict_patients

    if bool(args.patient) == bool(args.patients):
        raise UserError("give --patient PID (patients of this site) or --patients DIR (new patients), not both")
    predictions = predict_patients(
        Path(args.model),
        Path(args.site),
        Path(args.out),
        pids=args.patient or None,
        patients_dir=Path(args.patients) if args.patients else None,
        baseline_site=args.baseline_site,
        recalibration=Path(args.recalibration) if args.recalibration else None,
    )
    for p in predictions:
        # an endpoint with a competing event: its crude cumulative incidence ("cif")
        risks = "; ".join(
            f"{ep.name}{' cif' if ep.incidence else ''} "
            + ", ".join(
                f"{h:g}y {100 * r:.0f}%"
                for h, r in zip(ep.absolute.horizons_days / 365.25, (ep.incidence or ep.absolute).risk[0])
            )
            for ep in p.endpoints
        )
        note = f" (without {', '.join(m.split(':')[0] for m in p.missing)})" if p.missing else ""
        console.print(f"{p.pid}: {risks}{note}", highlight=False)
    console.print(f"pages and predictions.csv in {args.out}")
    return 0


def _cmd_recalibrate(args: argparse.Namespace) -> int:
    """The site's own baselines and calibration slopes for the model file (see stsfl.client.prediction.recalibrate_site)."""
    from stsfl.client.prediction.recalibrate_site import RECALIBRATION_FILE, recalibrate_site

    document = recalibrate_site(Path(args.model), Path(args.site), Path(args.out), folds=args.folds)
    for endpoint, entry in document["endpoints"].items():
        parts = [
            f"{float(h) / 365.25:g}y O/E {c['before']['observed_expected']:.2f} -> {c['after']['observed_expected']:.2f}"
            for h, c in entry["calibration"].items()
            if "before" in c
        ]
        console.print(
            f"{endpoint}: slope {entry['slope']:.2f}; " + ("; ".join(parts) or "too few events to judge"), highlight=False
        )
    console.print(f"{Path(args.out) / RECALIBRATION_FILE} and recalibration.html written (they stay at this site)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sts-client", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site", help="site YAML")
    parser.add_argument("--server", help="HOST:PORT of the coordinator's SuperLink")
    parser.add_argument("--port", type=int, default=0, help="local port of the SuperNode's ClientApp API (default: free)")
    parser.add_argument(
        "--no-reconnect",
        dest="reconnect",
        action="store_false",
        help="exit when the SuperNode exits instead of starting a new one",
    )
    parser.add_argument(
        "--registration-wait",
        type=float,
        default=60.0,
        metavar="S",
        help="how long to keep trying while the SuperLink does not know this site's key (default: 60 s)",
    )
    parser.add_argument("--log-dir", default="logs", help="where sts-client-<site>.log goes (default: ./logs)")
    parser.add_argument(
        "--no-worker",
        dest="worker",
        action="store_false",
        help="no site worker: every message is handled in its own ClientApp process (slower)",
    )
    parser.set_defaults(func=_cmd_join)
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check-config", help="validate the site YAML")
    check.add_argument("--site", required=True)
    check.set_defaults(func=_cmd_check_config)
    validate = sub.add_parser("validate", help="check the site's data without training (and fill the preprocessing cache)")
    validate.add_argument("--site", required=True, help="site YAML")
    validate.add_argument("--preset", default="cpu-small", help="model preset whose preprocessing to apply (name or YAML)")
    validate.add_argument("--preview", metavar="PNG", help="also write a PNG of the preprocessed MRI crops")
    validate.add_argument(
        "--task",
        choices=("auto", "multimodal", "linear-cox"),
        default="auto",
        help="what the site serves (auto: linear-cox when its CSV has E and T columns)",
    )
    validate.set_defaults(func=_cmd_validate)
    predict = sub.add_parser("predict", help="absolute risks at the horizons for patients of this site or new patients")
    predict.add_argument("--site", required=True, help="site YAML (its schema and preprocessing cache are used)")
    predict.add_argument("--model", required=True, help="model file from `sts-server export`")
    predict.add_argument("--patient", action="append", metavar="PID", help="a patient of this site (repeatable)")
    predict.add_argument("--patients", metavar="DIR", help="folder of new patients: clinical.csv (outcomes optional), mri/, wsi/")
    predict.add_argument("--out", default="predictions", help="output folder (default: ./predictions)")
    predict.add_argument(
        "--baseline-site", help="use this training site's own (stratified) baseline hazard instead of the pooled one"
    )
    predict.add_argument("--recalibration", help="this site's recalibration.json (sts-client recalibrate)")
    predict.set_defaults(func=_cmd_predict)
    recal = sub.add_parser("recalibrate", help="fit this site's own baselines and calibration slopes to a model file")
    recal.add_argument("--site", required=True, help="site YAML (patients with outcomes)")
    recal.add_argument("--model", required=True, help="model file from `sts-server export`")
    recal.add_argument("--out", default="recalibration", help="output folder (default: ./recalibration)")
    recal.add_argument("--folds", type=int, default=5, help="cross-fitting folds of the 'after' figures (default 5)")
    recal.set_defaults(func=_cmd_recalibrate)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_cli(lambda: args.func(args))


if __name__ == "__main__":
    main()

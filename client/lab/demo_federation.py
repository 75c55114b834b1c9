"""The demo's federation: a real local federation over a generated cohort's site folders.

Every site is preprocessed first, patients in parallel (`prepare_demo_sites`), so that the
sites' first message finds a warm cache. Then one `sts-server` process (SuperLink + our ServerApp) and one `sts-client` process per centre
(a SuperNode each), on loopback, the last centre held out; the coordinator's progress lines go
to the screen, every process logs under <results>/logs. Secured as a real federation: throwaway
certificates under <results>/certs (a CA, the SuperLink's certificate, a key pair per centre, every
centre registered) and site YAMLs under <results>/sites that point at them, each site with its
share of the machine's cores (`threads`: the sites share one machine here). Processes are started here as separate
programs (the helper CLI does not import the server package) and stopped by PID at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from stsfl.client.lab.local_certs import LocalCerts, make_local_certs, secured_site_yaml
from stsfl.common.config import SiteConfig, load_config, load_preset
from stsfl.common.console import UserError, console
from stsfl.common.flower_procs import FlowerProcess, flower_env, free_port, spawn

# Each message waits for the SuperNode's next look for work (Flower's default: every second).
DEMO_TASK_POLL_S = 0.1


def write_demo_federation(cohort_dir: Path, results: Path, preset: str, rounds: int, certs: LocalCerts) -> Path:
    """federation.yaml over the cohort's centres (sorted), the last one held out, the shipped
    training recipe, cross-site validation after the last round."""
    centres = sorted(p.parent.name for p in Path(cohort_dir).glob("*/site.yaml"))
    if len(centres) < 2:
        raise UserError(f"{cohort_dir}: a federation needs at least 2 centres with a site.yaml, found {len(centres)}")
    training = centres[:-1]
    config = {
        "name": "stsfl-demo",
        "task": "multimodal",
        "preset": preset,
        "sites": centres,
        "holdout": [centres[-1]],
        "strategy": "fedavg",
        "rounds": rounds,
        "eval_every": rounds,
        "cross_site": {"enabled": True, "local_epochs": 1},
        "min_sites": len(training),
        "round_timeout_s": 1800.0,
        "wait_for_sites_s": 600.0,
        "security": certs.federation_security(),
    }
    results.mkdir(parents=True, exist_ok=True)
    path = results / "federation.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def prepare_demo_sites(site_yamls: list[Path], preset: str) -> None:
    """Preprocess every site into its cache (patients in parallel, one process per core), with a
    progress bar: what each site would otherwise do inside its first message, one site at a time."""
    from stsfl.client.data.site_prepare import prepare_site

    loaded = load_preset(preset)
    for site_yaml in site_yamls:
        prepared = prepare_site(load_config(site_yaml, SiteConfig), site_yaml, loaded, policy="skip")
        console.print(
            f"site {prepared.name}: {len(prepared.patients)} patients preprocessed in {prepared.seconds['total']:.0f} s",
            highlight=False,
        )


def run_demo_federation(cohort_dir: Path, results: Path, preset: str, rounds: int) -> dict:
    """Run the federation to its end; returns summary.json's content."""
    site_yamls = sorted(Path(cohort_dir).glob("*/site.yaml"))
    certs = make_local_certs(results / "certs", [p.parent.name for p in site_yamls], name="stsfl-demo")
    config = write_demo_federation(cohort_dir, results, preset, rounds, certs)
    # The training sites train at the same time: one share of the cores each.
    threads = max(1, (os.cpu_count() or 1) // max(1, len(site_yamls) - 1))
    port = free_port()
    logs = results / "logs"
    env = flower_env(task_poll_interval=DEMO_TASK_POLL_S)
    clients: list[FlowerProcess] = []
    for site_yaml in site_yamls:
        centre = site_yaml.parent.name
        security = certs.site_security(centre)
        site_yaml = secured_site_yaml(site_yaml, results / "sites" / f"{centre}.yaml", security, threads=threads)
        cmd = [
            sys.executable,
            "-m",
            "stsfl.client.cli",
            "--site",
            str(site_yaml),
            "--server",
            f"127.0.0.1:{port}",
            "--log-dir",
            str(logs),
        ]
        clients.append(spawn("sts-client", cmd, logs / f"{centre}.out", env))
    console.print(
        f"federation: {len(clients)} sites on 127.0.0.1:{port} (TLS, certificates in {results / 'certs'}), logs in {logs}"
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "stsfl.server.cli", "--config", str(config), "--results", str(results), "--port", str(port)],
        env=env,
    )
    try:
        code = server.wait()
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(30)
        for client in clients:
            client.stop()
        time.sleep(0.5)
    if code != 0:
        raise UserError(f"the demo federation failed (sts-server exit {code}); see {results / 'server.log'}")
    return json.loads((results / "summary.json").read_text(encoding="utf-8"))

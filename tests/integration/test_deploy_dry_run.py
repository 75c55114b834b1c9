"""deploy/compose.yaml's dry run without containers: every service's start-up command (its image's
ENTRYPOINT + the service's command, parsed from the files; mounts laid out as folders, see
tests/deploy_files.py) runs as a process here against the tiny synthetic cohort, and the
coordinator finishes the federation and writes its results, report and TensorBoard store, over
TLS with every site authenticated (the certificate folder laid out as deploy/make_certs.py
federation --site ... writes it)."""

from __future__ import annotations

import json
import time

import pytest
from deploy_files import load_compose, service_command, site_services

from stsfl.client.lab.local_certs import make_local_certs
from stsfl.client.lab.synthetic import generate_cohort, load_synth_config
from stsfl.common.flower_procs import flower_env, free_port, spawn

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMEOUT_S = 900


def test_compose_services_run_a_federation(tmp_path):
    cohort = tmp_path / "cohort"
    generate_cohort(load_synth_config(None, tiny=True), cohort)
    sites = site_services(load_compose())
    make_local_certs(tmp_path / "certs", sites)
    compose = load_compose({"STSFL_COHORT": str(cohort), "STSFL_CERTS": str(tmp_path / "certs")})
    port = free_port()
    (coordinator,) = [n for n in compose["services"] if n not in sites]
    commands = {name: service_command(compose, name, tmp_path / "containers", port) for name in compose["services"]}
    procs = {}
    try:
        for name in [*sites, coordinator]:  # sites first: they keep retrying until the SuperLink is up
            cmd = commands[name]
            env = flower_env(cmd.root / "flwr-home", task_poll_interval=0.05)
            procs[name] = spawn(name, cmd.argv, tmp_path / "logs" / f"{name}.out", {**env, "HOME": str(cmd.root)})
        server = procs[coordinator].proc
        deadline = time.monotonic() + TIMEOUT_S
        while server.poll() is None and time.monotonic() < deadline:
            for name in sites:
                assert procs[name].alive(), f"site {name} exited: {procs[name].log_path.read_text()[-3000:]}"
            time.sleep(1)
        log = procs[coordinator].log_path.read_text()
        assert server.returncode == 0, f"sts-server exit {server.returncode}:\n{log[-4000:]}"
    finally:
        for proc in procs.values():
            proc.stop()
    results = commands[coordinator].root / "results"  # the `results` volume of the coordinator
    summary = json.loads((results / "summary.json").read_text())
    assert summary["holdout_sites"] == ["center_2"] and summary["rounds"] == 1
    assert 0.0 <= summary["holdout_selected"]["center_2"]["c-harrell-os"] <= 1.0
    assert (results / "report.html").is_file() and "report: " in log
    assert list((results / "tensorboard").glob("events.out.tfevents.*"))
    for name in sites:  # each site wrote its preprocessing cache into its own cache volume
        assert any((commands[name].root / "site" / "cache").rglob("*")), f"{name}: nothing in its cache volume"

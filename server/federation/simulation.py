"""`sts-server --simulate`: the whole federation on one machine, on Flower's simulation engine.

The same ServerApp and ClientApp as a real federation, the same results folder; only the
transport differs. `sts-server` starts a SuperLink in simulation mode (`flower-superlink
--simulation`) and submits the run with `flwr run --federation-config num-supernodes=N ...`
(the options Flower 1.41 recommends; `run_simulation()` and `options.*` connections are
deprecated). The engine creates one virtual SuperNode per site of the federation YAML, in the
order of `sites`; each has only a `partition-id` in its node-config, so the run config carries
`simulation-sites`, the list of (site name, site YAML) by partition id, from which our ClientApp
reads its site (stsfl.client.federation.site_identity). ClientApps run in Ray worker processes, at most
`cpus // cpus_per_site` at a time, each with `threads_per_site` torch threads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stsfl.common.config import FederationConfig, SiteConfig, load_config
from stsfl.common.console import UserError
from stsfl.common.fed_protocol import RUN_SIMULATION_SITES, RUN_SIMULATION_THREADS, to_json


@dataclass(frozen=True)
class SimulationPlan:
    """What `sts-server` passes to the SuperLink and `flwr run` to simulate one federation."""

    sites: list[tuple[str, str]]  # (site name, absolute site YAML) by partition id
    cpus: int
    cpus_per_site: int
    threads_per_site: int

    def run_config(self) -> dict[str, str | int]:
        return {RUN_SIMULATION_SITES: to_json(self.sites), RUN_SIMULATION_THREADS: self.threads_per_site}

    def federation_config(self) -> dict[str, int | bool]:
        """`flwr run --federation-config`: the simulation engine's size and Ray resources."""
        return {
            "num-supernodes": len(self.sites),
            "client-resources-num-cpus": self.cpus_per_site,
            "init-args-num-cpus": self.cpus,
            "init-args-log-to-driver": True,
        }

    def env(self, env: dict[str, str]) -> dict[str, str]:
        """Thread limits inherited by the simulation process and its Ray workers (BLAS, OpenMP)."""
        threads = str(self.threads_per_site)
        return {**env, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}

    def describe(self) -> str:
        at_once = max(self.cpus // self.cpus_per_site, 1)
        return (
            f"simulating {len(self.sites)} sites on this machine (Flower simulation engine, "
            f"{self.cpus} CPUs, up to {at_once} sites at a time, {self.threads_per_site} thread(s) each)"
        )


def plan_simulation(fed: FederationConfig, config_path: Path) -> SimulationPlan:
    """Check that every site of `fed` has a readable site YAML with its name; raise UserError
    naming the federation YAML, the site and the file otherwise."""
    sim = fed.simulation
    missing = [s for s in fed.sites if s not in sim.site_configs]
    if missing:
        raise UserError(
            f"{config_path}: simulation.site_configs: no site YAML for {', '.join(missing)}; --simulate needs one "
            "per site, e.g.\n  simulation:\n    site_configs:\n"
            + "".join(f"      {s}: path/to/{s}/site.yaml\n" for s in missing[:2])
        )
    sites = []
    for name in fed.sites:
        path = Path(sim.site_configs[name])
        path = (path if path.is_absolute() else Path(config_path).parent / path).resolve()
        if not path.is_file():
            raise UserError(f"{config_path}: simulation.site_configs.{name}: {path} does not exist")
        site = load_config(path, SiteConfig)
        if site.name != name:
            raise UserError(f"{config_path}: simulation.site_configs.{name}: {path} is site {site.name!r}, not {name!r}")
        sites.append((name, str(path)))
    cpus = sim.cpus or os.cpu_count() or 1
    if sim.cpus_per_site > cpus:
        raise UserError(f"{config_path}: simulation.cpus_per_site={sim.cpus_per_site} exceeds the {cpus} CPUs available")
    return SimulationPlan(sites, cpus, sim.cpus_per_site, sim.threads_per_site)

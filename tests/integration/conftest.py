"""Real Flower processes on loopback for the integration tests.

`federation` starts one `sts-client` per site (each runs a SuperNode; FLWR_HOME under tmp_path) that
connect to a SuperLink port chosen up front, secured with throwaway certificates (TLS + SuperNode
authentication, every site registered: `LocalFederation.certs`); the test then starts the coordinator (sts-server's
`run_federation`, in-process or as a subprocess) on that port. Everything a test starts is
stopped by PID at teardown. STSFL_TEST_CPU_LOAD=N runs N busy processes beside each module's
federations (tests/cpu_load.py: the runs on a loaded machine).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cpu_load import cpu_load

from stsfl.client.lab.local_certs import make_local_certs, secured_site_yaml
from stsfl.client.lab.tcga_brca import write_region_sites
from stsfl.common.flower_procs import FlowerProcess, flower_env, free_port, spawn

# SuperExec polls for work every 1 s by default; tests do not need to wait that long.
POLL_INTERVAL = 0.05


class LocalFederation:
    """A loopback federation under construction: SuperNodes by site, the port the SuperLink will use."""

    def __init__(self, root: Path, site_yamls: dict[str, Path]):
        self.root = root
        self.site_yamls = site_yamls
        self.port = free_port()
        self.env = flower_env(root / "flwr-home", POLL_INTERVAL)
        self.nodes: dict[str, FlowerProcess] = {}
        self.extra: list[subprocess.Popen] = []
        self.certs = make_local_certs(root / "certs", list(site_yamls))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_site(self, site: str, env: dict[str, str] | None = None) -> FlowerProcess:
        """`sts-client --site ... --server ...` (it restarts its SuperNode when the SuperLink restarts);
        `env`: variables added to this site's environment."""
        site_yaml = secured_site_yaml(self.site_yamls[site], self.root / "sites" / f"{site}.yaml", self.certs.site_security(site))
        cmd = [
            sys.executable,
            "-m",
            "stsfl.client.cli",
            "--site",
            str(site_yaml),
            "--server",
            self.address,
            "--log-dir",
            str(self.root / "logs"),
        ]
        node = spawn("sts-client", cmd, self.root / "logs" / f"{site}.out", {**self.env, **(env or {})})
        self.nodes[site] = node
        return node

    def stop_site(self, site: str) -> None:
        self.nodes.pop(site).stop()

    def write_federation(self, name: str, body: str) -> Path:
        path = self.root / f"{name}.yaml"
        security = yaml.safe_dump({"security": self.certs.federation_security()})
        path.write_text(
            f"name: {name}\ntask: linear-cox\nsites: [{', '.join(self.site_yamls)}]\n{body}{security}", encoding="utf-8"
        )
        return path

    def spawn_server(self, *args: str) -> subprocess.Popen:
        """`sts-server ...` as a separate process (its own session, so it can be killed with its SuperLink)."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "stsfl.server.cli", *args, "--port", str(self.port)],
            env=self.env,
            stdout=open(self.root / "logs" / f"sts-server-{len(self.extra)}.out", "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.extra.append(proc)
        return proc

    def server_log(self, proc: subprocess.Popen) -> Path:
        """The screen output of a process started by `spawn_server`."""
        return self.root / "logs" / f"sts-server-{self.extra.index(proc)}.out"

    def stop_all(self) -> None:
        for proc in self.extra:
            if proc.poll() is None:
                kill_tree(proc.pid)
                proc.wait(10)
        for node in self.nodes.values():
            node.stop()


def children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and its descendants (a crash of the coordinator, SuperLink included)."""
    for child in children(pid):
        kill_tree(child)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_until(predicate, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll `predicate`; fail at `timeout`, or as soon as `process` (e.g. sts-server) has exited without it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None and not predicate():
            tail = log.read_text(encoding="utf-8", errors="replace")[-3000:] if log is not None else ""
            raise AssertionError(f"the process exited (code {process.returncode}) before {what}\n{tail}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module", autouse=True)
def background_cpu_load():
    """STSFL_TEST_CPU_LOAD busy processes (default none) while the module's tests run."""
    with cpu_load(int(os.environ.get("STSFL_TEST_CPU_LOAD", "0") or 0)) as procs:
        yield procs


@pytest.fixture(scope="module")
def region_site_yamls(tcga_brca_dir, tmp_path_factory) -> dict[str, Path]:
    """Three real clinical-only sites: TCGA-BRCA regions 0, 1 (training) and 3 (held out)."""
    paths = write_region_sites(tcga_brca_dir, tmp_path_factory.mktemp("sites"), regions=[0, 1, 3])
    return {p.stem: p for p in paths}


def running_federation(site_yamls: dict[str, Path], root: Path, envs: dict[str, dict[str, str]] | None = None):
    """For fixtures (`yield from`): one SuperNode process per site (`envs`: extra environment of a
    site), connecting to the SuperLink port of `federation.port`; everything stopped at the end."""
    fed = LocalFederation(root, site_yamls)
    (root / "logs").mkdir()
    try:
        for site in site_yamls:
            fed.start_site(site, env=(envs or {}).get(site))
        yield fed
    finally:
        fed.stop_all()


@pytest.fixture
def federation(region_site_yamls, tmp_path):
    """One SuperNode process per site, connecting to the SuperLink port of `federation.port`."""
    yield from running_federation(region_site_yamls, tmp_path)

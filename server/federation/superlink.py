"""The coordinator's Flower processes: the SuperLink (TLS and SuperNode authentication), the site
keys it admits, the `flwr` connection and `flwr run` of our app (flwr 1.41 facts: stsfl.common.flower_procs)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from stsfl.common.config.security import ServerTls
from stsfl.common.console import UserError
from stsfl.common.flower_procs import FlowerProcess, flower_bin, spawn, toml_pairs, wait_for_free_port, wait_for_port


def start_superlink(
    host: str,
    port: int,
    log_path: Path,
    env: dict[str, str] | None = None,
    database: Path | None = None,
    startup_timeout: float = 60.0,
    simulation: bool = False,
    tls: ServerTls | None = None,
) -> FlowerProcess:
    """Start a SuperLink on host:port (its Fleet, Control and Runtime APIs share that one HTTP
    port in flwr 1.41) and wait until it listens: with `tls`, TLS and SuperNode authentication
    (register the site keys next, `register_site_keys`), without it insecure. `database` keeps
    its state on disk. `simulation`: runs go to Flower's simulation engine (virtual SuperNodes in
    this process group)."""
    cmd = [
        flower_bin("flower-superlink"),
        *_superlink_security_args(tls),
        "--disable-runtime-dependency-installation",
        "--host",
        host,
        "--port",
        str(port),
    ]
    if database is not None:
        cmd += ["--database", str(database)]
    if simulation:
        cmd.append("--simulation")
    # A previous SuperLink on this port (e.g. a coordinator that crashed and is being resumed) must
    # be gone first, or the readiness check below would talk to it.
    wait_for_free_port(host, port, startup_timeout)
    link = spawn("superlink", cmd, log_path, env)
    try:
        wait_for_port(host, port, startup_timeout, link.proc)
        time.sleep(0.5)
        if not link.alive():
            raise UserError("exited")
    except UserError:
        link.stop()
        raise UserError(f"the SuperLink did not start on {host}:{port}; see its log {log_path}") from None
    return link


def _superlink_security_args(tls: ServerTls | None) -> list[str]:
    if tls is None:
        return ["--insecure"]
    return [
        "--ssl-ca-certfile",
        str(tls.ca_cert),
        "--ssl-certfile",
        str(tls.server_cert),
        "--ssl-keyfile",
        str(tls.server_key),
        "--enable-supernode-auth",
    ]


def register_site_keys(site_keys: dict[str, Path], connection: str, env: dict[str, str] | None) -> None:
    """Register every site's public key with the running SuperLink of `connection` (its Control
    API), all at once: each `flwr` call is seconds of imports, and sites are refused until then."""
    procs = {
        site: subprocess.Popen(
            [flower_bin("flwr"), "supernode", "register", str(key), connection, "--name", site],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
        )  # flwr prints emoji; LANG may be C
        for site, key in site_keys.items()
    }
    failed = []
    for site, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            failed.append(f"{site} ({site_keys[site]}): {out.strip().splitlines()[-1] if out.strip() else proc.returncode}")
    if failed:
        raise UserError("the SuperLink did not accept the public key of site(s):\n  " + "\n  ".join(failed))


def write_connection(flwr_home: Path, name: str, control_address: str, root_certificates: Path | None = None) -> Path:
    """Write `$FLWR_HOME/config.toml` with one explicit connection `name` (the default): TLS
    verified with the CA certificate `root_certificates`, insecure without it."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    security = "insecure = true" if root_certificates is None else f"root-certificates = {json.dumps(str(root_certificates))}"
    path.write_text(
        f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\naddress = "{control_address}"\n{security}\n',
        encoding="utf-8",
    )
    return path


def app_dir() -> Path:
    """The Flower App directory (the one holding pyproject.toml with [tool.flwr.app])."""
    from importlib import resources

    # The distribution ships its pyproject next to the packages only in a source checkout;
    # the app directory is the repository root (parent of common/).
    root = Path(str(resources.files("stsfl.common"))).parent
    if not (root / "pyproject.toml").is_file():
        raise UserError(f"the Flower App (pyproject.toml with [tool.flwr.app]) is not at {root}")
    return root


def flwr_run_command(
    connection: str,
    run_config: dict[str, str | int | float | bool],
    stream: bool = True,
    federation_config: dict[str, str | int | float | bool] | None = None,
) -> list[str]:
    """`flwr run APP_DIR CONNECTION --run-config ...` for our app; `federation_config` sets the
    simulation engine's options (num-supernodes, client-resources-num-cpus, init-args-num-cpus, ...)."""
    cmd = [flower_bin("flwr"), "run", str(app_dir()), connection]
    if run_config:
        cmd += ["--run-config", toml_pairs(run_config)]
    if federation_config:
        cmd += ["--federation-config", toml_pairs(federation_config)]
    if stream:
        cmd.append("--stream")
    return cmd

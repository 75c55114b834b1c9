"""Start and stop the Flower processes of a federation (SuperLink, SuperNode) and submit runs.

Shared by `sts-server` (SuperLink + `flwr run`), `sts-client` (SuperNode), the demo and the
integration tests, so every launcher uses the same flags. Facts about flwr 1.41 this relies on:

- a SuperLink serves its Fleet, Control and Runtime APIs over HTTP on one port (`--port`;
  `--fleet-api-address` / `--control-api-address` are ignored), and spawns `flower-superexec`
  by name (so the venv's bin must be on PATH); it watches its parent and ends with it;
- runtime dependency installation (`uv sync` of the app's pyproject) is on by default for the
  SuperLink: we turn it off, the app's code is the `stsfl` package installed next to Flower;
- `flwr run APP_DIR CONNECTION` reads connections from `$FLWR_HOME/config.toml`; the connection
  named `local` would be a managed simulation, so we write an explicit one;
- TLS: the SuperLink needs `--ssl-ca-certfile/--ssl-certfile/--ssl-keyfile`, a SuperNode
  `--root-certificates CA`, a `flwr` connection `root-certificates = CA`. SuperNode authentication:
  the SuperLink runs with `--enable-supernode-auth` (it requires TLS) and admits only the public keys
  registered through its Control API (`flwr supernode register KEY.pub CONNECTION`; the registry
  lives in the SuperLink's state, so they are registered again at every start); a SuperNode signs
  its requests with `--auth-supernode-private-key` (OpenSSH EC key). A refused SuperNode exits with
  code 305 after logging why (see `supernode_refusal`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from stsfl.common.config.security import ServerTls, SiteTls
from stsfl.common.console import UserError

log = logging.getLogger("stsfl.security")


def warn_insecure(config_path: Path, what: str) -> None:
    """The WARNING every launcher logs when a YAML says `security.insecure: true`."""
    log.warning(
        "%s: security.insecure is true: %s without TLS and without SuperNode authentication; "
        "anyone who can reach it can read the traffic%s",
        config_path,
        what,
        " and join as a site" if what.startswith("the SuperLink") else "",
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def flower_bin(name: str) -> str:
    """Path of a Flower console script (`flower-superlink`, `flower-supernode`, `flwr`) of this venv."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise UserError(f"cannot find the Flower command {name!r}; is flwr installed in this environment?")
    return found


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def wait_for_free_port(host: str, port: int, timeout: float) -> None:
    """Block until host:port can be bound (e.g. a SuperLink that was just killed has let it go)."""
    deadline = time.monotonic() + timeout
    while not port_is_free(host, port):
        if time.monotonic() > deadline:
            raise UserError(f"port {port} on {host} is in use; stop what listens there or choose another port")
        time.sleep(0.2)


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Block until something accepts TCP connections on host:port; fail early if `proc` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise UserError(f"process {proc.args[0]} exited with code {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise UserError(f"nothing is listening on {host}:{port} after {timeout:.0f} s")


@dataclass
class FlowerProcess:
    """A Flower process we started: its Popen handle and log file. `stop()` ends it by PID."""

    name: str
    proc: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group we created (the process and the ClientApp/ServerApp
        subprocesses it spawned) and the groups its descendants started in their own sessions
        (SuperExec and, in simulation mode, flwr-simulation with its Ray processes, which outlive
        the SuperLink otherwise), then SIGKILL what is left after `timeout`."""
        if self.proc.poll() is not None:
            return
        groups = [self.proc.pid] + sorted(_descendant_groups(self.proc.pid) - {self.proc.pid})
        for group in groups:
            _signal_group(group, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        deadline = time.monotonic() + timeout
        for group in groups[1:]:
            while _group_alive(group) and time.monotonic() < deadline:
                time.sleep(0.2)
            _signal_group(group, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the process group at once (simulates a crash)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            self.proc.wait(5)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (read from /proc; empty without it)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _descendant_groups(pid: int) -> set[int]:
    """Process-group ids of every process below `pid`."""
    groups = set()
    for child in descendants(pid):
        try:
            groups.add(os.getpgid(child))
        except ProcessLookupError:
            continue
    return groups


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def spawn(name: str, cmd: list[str], log_path: Path, env: dict[str, str] | None) -> FlowerProcess:
    """Start `cmd` in a new session (so `stop()` reaches its whole process group), output to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns the descriptor for its lifetime
    # A new session: the process and its children form one group we can stop by PID.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    log.close()
    return FlowerProcess(name=name, proc=proc, log_path=log_path)


def flower_env(flwr_home: Path | None = None, task_poll_interval: float | None = None) -> dict[str, str]:
    """The environment for Flower processes: FLWR_HOME and, for tests, a faster SuperExec poll."""
    env = dict(os.environ)
    # The SuperLink and SuperNode spawn `flower-superexec` by name: this venv's bin must be on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    if task_poll_interval is not None:
        env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = str(task_poll_interval)
    return env


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


# What a refused SuperNode logs before it exits (flwr 1.41), most specific first.
REFUSALS = (
    ("expired", "certificate has expired"),
    ("wrong-ca", "CERTIFICATE_VERIFY_FAILED"),
    ("unregistered", "Failed to activate SuperNode"),
    ("key-invalid", "Unable to parse the private key file"),
)


def supernode_refusal(log_text: str) -> str | None:
    """Why the SuperLink refused a SuperNode, from its log: 'expired' (the SuperLink's
    certificate), 'wrong-ca' (the certificate is not from our CA, or names another host),
    'unregistered' (the site's key is not registered), 'key-invalid'; None when not refused."""
    for kind, marker in REFUSALS:
        if marker in log_text:
            return kind
    return None


def toml_pairs(values: dict[str, str | int | float | bool]) -> str:
    """`--node-config` / `--run-config` value: space-separated TOML `key=value` pairs.

    Flower splits the pairs with a regex that does not know escaped quotes, so a string holding
    `"` (e.g. JSON) travels as a TOML literal string ('...'), which cannot hold `'` or a newline."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            parts.append(f"{key}={'true' if value else 'false'}")
        elif isinstance(value, str) and '"' in value:
            if "'" in value or "\n" in value:
                raise UserError(f"{key}: a value with both quote kinds or a newline cannot be passed to Flower: {value!r}")
            parts.append(f"{key}='{value}'")
        else:  # a JSON string or number is a valid TOML basic string / number
            parts.append(f"{key}={json.dumps(value)}")
    return " ".join(parts)


def supernode_command(
    superlink: str, node_config: dict[str, str | int | float], port: int, host: str = "127.0.0.1", tls: SiteTls | None = None
) -> list[str]:
    """`flower-supernode` command for a SuperNode that connects to the Fleet API at `superlink`
    (HOST:PORT), with TLS and its authentication key when `tls` is given (insecure otherwise),
    and serves its ClientApp IO API on host:port."""
    security = (
        ["--insecure"]
        if tls is None
        else ["--root-certificates", str(tls.ca_cert), "--auth-supernode-private-key", str(tls.auth_key)]
    )
    return [
        flower_bin("flower-supernode"),
        *security,
        "--superlink",
        superlink,
        "--host",
        host,
        "--port",
        str(port),
        "--node-config",
        toml_pairs(node_config),
    ]


def start_supernode(
    superlink: str,
    node_config: dict[str, str | int | float],
    log_path: Path,
    env: dict[str, str] | None = None,
    port: int = 0,
    host: str = "127.0.0.1",
    tls: SiteTls | None = None,
) -> FlowerProcess:
    """Start a SuperNode in the background (log to `log_path`) and wait until its local API listens."""
    port = port or free_port(host)
    node = spawn("supernode", supernode_command(superlink, node_config, port, host, tls), log_path, env)
    wait_for_port(host, port, 60.0, node.proc)
    return node


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

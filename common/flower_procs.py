"""The plumbing both sides' Flower processes share: spawn and stop a process group, free ports,
the environment, Flower's TOML `key=value` arguments. The SuperLink and `flwr run` are the
coordinator's (stsfl.server.federation.superlink), the SuperNode the site's
(stsfl.client.federation.supernode). Facts about flwr 1.41 they rely on:

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
  code 305 after logging why (stsfl.client.federation.supernode.supernode_refusal).
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

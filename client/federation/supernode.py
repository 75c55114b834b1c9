"""The site's Flower process: the SuperNode command (TLS and its authentication key) and why a
SuperLink refused it (flwr 1.41 facts: stsfl.common.flower_procs)."""

from __future__ import annotations

from pathlib import Path

from stsfl.common.config.security import SiteTls
from stsfl.common.flower_procs import FlowerProcess, flower_bin, free_port, spawn, toml_pairs, wait_for_port

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

"""TLS and SuperNode authentication on real processes: one SuperLink with TLS + node auth (one
site registered), short-lived `sts-client`s against it. The registered site joins; a site whose
key is not registered, a site with another CA and a SuperLink whose certificate has expired are
refused, and sts-client says why and exits instead of retrying for ever."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stsfl.client.lab.local_certs import make_local_certs
from stsfl.common.certificates import Validity, make_ca, make_server_certificate
from stsfl.common.config.security import ServerTls
from stsfl.common.flower_procs import flower_env, free_port
from stsfl.server.federation.superlink import register_site_keys, start_superlink, write_connection

from .conftest import wait_until

pytestmark = pytest.mark.integration


def _site_yaml(root: Path, name: str, ca_cert: Path, auth_key: Path) -> Path:
    path = root / f"{name}.yaml"
    security = {"ca_cert": str(ca_cert), "auth_key": str(auth_key)}
    path.write_text(yaml.safe_dump({"name": name, "root": str(root), "security": security}), encoding="utf-8")
    return path


def _sts_client(site_yaml: Path, address: str, root: Path, env: dict) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "stsfl.client.cli",
        "--site",
        str(site_yaml),
        "--server",
        address,
        "--log-dir",
        str(root / "logs"),
        "--no-reconnect",
        "--registration-wait",
        "0",
    ]
    return subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,
    )


def _refusal(proc: subprocess.Popen) -> str:
    """sts-client's own error line (the SuperNode's output before it is echoed too)."""
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 2, err[-2000:]
    return err[err.index("error:") :] if "error:" in err else err[-2000:]


@pytest.fixture(scope="module")
def secured_link(tmp_path_factory):
    """A SuperLink with TLS + SuperNode authentication; only site `registered` has its key registered."""
    root = tmp_path_factory.mktemp("tls")
    certs = make_local_certs(root / "certs", ["registered", "stranger"])
    env = flower_env(root / "flwr-home")
    port = free_port()
    tls = ServerTls(certs.ca_cert, certs.server_cert, certs.server_key, {"registered": certs.site_keys["registered"][1]})
    link = start_superlink("127.0.0.1", port, root / "superlink.log", env, tls=tls)
    try:
        write_connection(root / "flwr-home", "test", f"127.0.0.1:{port}", certs.ca_cert)
        register_site_keys(tls.site_keys, "test", env)
        yield root, certs, f"127.0.0.1:{port}", env
    finally:
        link.stop()


def test_registered_site_joins_and_others_are_refused(secured_link):
    root, certs, address, env = secured_link
    other_ca, _ = make_ca(root / "other-ca", "someone else")
    joining = _sts_client(_site_yaml(root, "registered", certs.ca_cert, certs.site_keys["registered"][0]), address, root, env)
    stranger = _sts_client(_site_yaml(root, "stranger", certs.ca_cert, certs.site_keys["stranger"][0]), address, root, env)
    wrong_ca = _sts_client(_site_yaml(root, "wrong-ca", other_ca, certs.site_keys["registered"][0]), address, root, env)
    try:
        log = root / "logs" / "sts-client-registered.log"
        wait_until(lambda: log.is_file() and "SuperNode ID:" in log.read_text(), 60, "the registered site to join")
        assert joining.poll() is None
        assert "does not know this site's key" in _refusal(stranger)
        assert "does not vouch" in _refusal(wrong_ca)
    finally:
        for proc in (joining, stranger, wrong_ca):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)


def test_a_superlink_with_an_expired_certificate_is_refused(secured_link, tmp_path):
    root, certs, _, env = secured_link
    expired = make_server_certificate(tmp_path, certs.ca_cert, certs.ca_key, [], Validity.expired())
    tls = ServerTls(certs.ca_cert, *expired, {})
    port = free_port()
    link = start_superlink("127.0.0.1", port, tmp_path / "superlink.log", env, tls=tls)
    try:
        site = _site_yaml(tmp_path, "registered", certs.ca_cert, certs.site_keys["registered"][0])
        message = _refusal(_sts_client(site, f"127.0.0.1:{port}", tmp_path, env))
        assert "expired certificate" in message and "coordinator must renew it" in message
    finally:
        link.stop()

"""Certificates, site keys and the `security:` configuration (no processes; see
tests/integration/test_secure_transport.py for refusals on real SuperLinks and SuperNodes)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging

import pytest
import tomllib
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.cli.supernode.register import try_load_public_key

from stsfl.client.federation.supernode import supernode_command, supernode_refusal
from stsfl.client.lab.local_certs import make_local_certs, secured_site_yaml
from stsfl.common.certificates import (
    CertificateError,
    Validity,
    check_server_certificate,
    load_certificate,
    load_site_private_key,
    load_site_public_key,
    make_ca,
    make_server_certificate,
    make_site_keys,
)
from stsfl.common.config import ConfigError, FederationConfig, SiteConfig, load_config, parse_config
from stsfl.common.config.security import server_tls, site_tls
from stsfl.server.cli import run_federation, superlink_tls
from stsfl.server.federation.superlink import write_connection


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_local_certs(tmp_path_factory.mktemp("certs"), ["a", "b"])


def test_server_certificate_is_signed_by_the_ca_for_the_given_hosts(tmp_path):
    ca_cert, ca_key = make_ca(tmp_path, "fed")
    server_cert, _ = make_server_certificate(
        tmp_path, ca_cert, ca_key, ["coord.example.org", "10.0.0.5"], Validity.days_from_now(30)
    )
    ca, cert = load_certificate(ca_cert), load_certificate(server_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "coord.example.org"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.5")]
    days = (cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)).total_seconds() / 86400
    assert 29.9 < days < 30.1
    assert oct(server_cert.with_suffix(".key").stat().st_mode)[-3:] == "600"


def test_expired_and_foreign_certificates_are_detected(tmp_path, certs):
    expired_dir, other_dir = tmp_path / "expired", tmp_path / "other"
    expired_cert, expired_key = make_server_certificate(expired_dir, certs.ca_cert, certs.ca_key, [], Validity.expired())
    assert load_certificate(expired_cert).not_valid_after_utc < dt.datetime.now(dt.timezone.utc)
    with pytest.raises(CertificateError, match="expired on"):
        check_server_certificate(certs.ca_cert, expired_cert, expired_key)
    other_ca, _ = make_ca(other_dir, "other")
    with pytest.raises(CertificateError, match="not signed by the CA"):
        check_server_certificate(other_ca, certs.server_cert, certs.server_key)
    with pytest.raises(CertificateError, match="not the private key"):
        check_server_certificate(certs.ca_cert, certs.server_cert, expired_key)
    check_server_certificate(certs.ca_cert, certs.server_cert, certs.server_key)


def test_site_keys_are_what_flower_reads(tmp_path):
    private, public = make_site_keys(tmp_path, "centre-a")
    assert isinstance(load_site_private_key(private), ec.EllipticCurvePrivateKey)
    key = load_site_public_key(public)
    assert key.curve.name == "secp384r1"
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ") and public.read_text().strip().endswith("centre-a")
    assert try_load_public_key(public)  # flwr supernode register's own loader accepts it
    with pytest.raises(CertificateError, match="not an OpenSSH public key"):
        load_site_public_key(private)


def test_security_is_required_unless_insecure_and_names_the_key(tmp_path, certs):
    config = tmp_path / "federation.yaml"
    fed = parse_config({"sites": ["a", "b"]}, FederationConfig, str(config))
    with pytest.raises(ConfigError, match=r"federation.yaml: security.site_keys: no public key for site\(s\) a, b"):
        server_tls(fed.security, fed.sites, config)
    security = {**certs.federation_security(), "server_key": "missing/server.key"}
    fed = parse_config({"sites": ["a", "b"], "security": security}, FederationConfig, str(config))
    with pytest.raises(ConfigError, match=f"security.server_key: file {tmp_path}/missing/server.key does not exist"):
        server_tls(fed.security, fed.sites, config)
    with pytest.raises(ConfigError, match="security.site_keys names site"):
        parse_config({"sites": ["a"], "security": certs.federation_security()}, FederationConfig, str(config))
    with pytest.raises(ConfigError, match="security.ca_cert: required"):
        site_tls(parse_config({"name": "a", "root": "."}, SiteConfig, "site.yaml").security, tmp_path / "site.yaml")


def test_insecure_is_explicit_and_logs_a_warning(tmp_path, caplog):
    config = tmp_path / "federation.yaml"
    config.write_text("sites: [a]\nsecurity: {insecure: true}\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="stsfl.security"):
        assert superlink_tls(load_config(config, FederationConfig), config) is None
    assert "security.insecure is true" in caplog.text and "without TLS" in caplog.text
    assert supernode_command("h:1", {}, 2)[1] == "--insecure"


def test_relative_paths_follow_the_yaml_and_reach_the_launchers(tmp_path, certs):
    site_yaml = tmp_path / "site" / "site.yaml"
    site_yaml.parent.mkdir()
    site_yaml.write_text("name: a\nroot: data\n", encoding="utf-8")
    copy = secured_site_yaml(site_yaml, tmp_path / "copies" / "a.yaml", certs.site_security("a"))
    site = load_config(copy, SiteConfig)
    assert site.root == (site_yaml.parent / "data").resolve()
    tls = site_tls(site.security, copy)
    cmd = supernode_command("h:1", {}, 2, tls=tls)
    assert cmd[cmd.index("--root-certificates") + 1] == str(certs.ca_cert)
    assert cmd[cmd.index("--auth-supernode-private-key") + 1] == str(certs.site_keys["a"][0])
    connection = tomllib.loads(write_connection(tmp_path / "home", "c", "h:1", certs.ca_cert).read_text())
    assert connection["superlink"]["c"] == {"address": "h:1", "root-certificates": str(certs.ca_cert)}


def test_sts_server_refuses_an_expired_certificate_before_starting(tmp_path):
    certs = make_local_certs(tmp_path / "certs", ["a"])
    make_server_certificate(tmp_path / "certs", certs.ca_cert, certs.ca_key, [], Validity.expired())
    config = tmp_path / "federation.yaml"
    config.write_text(
        yaml.safe_dump({"task": "linear-cox", "sites": ["a"], "security": certs.federation_security()}), encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="security: .*server.crt: the certificate expired"):
        run_federation(config, tmp_path / "results")
    assert not (tmp_path / "results" / "superlink.log").exists()


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate has expired (_ssl.c:1006)", "expired"),
        ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate", "wrong-ca"),
        ("[code: 2004] Failed to activate SuperNode.", "unregistered"),
        ("WARNING :   Connection attempt failed, retrying in 0.33 seconds", None),
    ],
)
def test_refusals_are_told_apart_from_a_superlink_that_is_not_up_yet(line, kind):
    assert supernode_refusal(f"INFO : Starting Flower SuperNode\n{line}\n") == kind


def test_copies_of_the_federation_yaml_keep_finding_the_certificates(tmp_path, certs):
    """The results folder's copy (read by --resume) and the LOCO folds' YAMLs live elsewhere."""
    from stsfl.server.federation.loco import loco_config
    from stsfl.server.reports.results import ResultsFolder

    config = tmp_path / "fed" / "federation.yaml"
    config.parent.mkdir()
    (config.parent / "ca.crt").write_bytes(certs.ca_cert.read_bytes())
    config.write_text("sites: [a]\nsecurity:\n  ca_cert: ca.crt\n  site_keys: {a: /keys/a.pub}\n", encoding="utf-8")
    ResultsFolder(tmp_path / "results").copy_config(config)
    copy = load_config(tmp_path / "results" / "federation.yaml", FederationConfig)
    assert copy.security.ca_cert == config.parent.resolve() / "ca.crt"
    assert str(copy.security.site_keys["a"]) == "/keys/a.pub"
    data, _ = loco_config(config)
    assert data["security"]["ca_cert"] == str(config.parent.resolve() / "ca.crt")

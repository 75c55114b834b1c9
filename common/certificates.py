"""A federation's certificates and site keys (Python `cryptography`), in the formats Flower 1.41 reads.

- the federation CA: a self-signed certificate (`ca.crt`, PEM) and its key (`ca.key`, kept by the
  coordinator); every SuperNode and `flwr` verifies the SuperLink with `ca.crt`;
- the SuperLink's TLS certificate (`server.crt` + `server.key`, PEM), signed by the CA, with the
  coordinator's host names and IP addresses as subjectAltNames (127.0.0.1 and localhost always);
- one key pair per site for SuperNode authentication: an EC P-384 private key in OpenSSH format
  (`<site>.key`, `flower-supernode --auth-supernode-private-key`, never leaves the site) and its
  public key (`<site>.pub`, one `ecdsa-sha2-nistp384 ...` line) that the coordinator registers
  with `flwr supernode register` (Flower 1.41 accepts NIST EC curves only).

`check_server_certificate` is what `sts-server` runs before starting the SuperLink.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DAYS = 825  # the longest validity browsers accept for a server certificate
LOOPBACK = ("localhost", "127.0.0.1")


class CertificateError(ValueError):
    """A certificate or key that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Validity:
    """The period a certificate is valid for (UTC)."""

    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def days_from_now(cls, days: float) -> Validity:
        now = dt.datetime.now(dt.timezone.utc)
        # a minute in the past: clocks of the machines differ a little
        return cls(now - dt.timedelta(minutes=1), now + dt.timedelta(days=days))

    @classmethod
    def expired(cls) -> Validity:
        """Valid for a day that ended yesterday (to test that expired certificates are refused)."""
        now = dt.datetime.now(dt.timezone.utc)
        return cls(now - dt.timedelta(days=2), now - dt.timedelta(days=1))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def make_ca(out_dir: Path, name: str, validity: Validity | None = None) -> tuple[Path, Path]:
    """Write `ca.crt` and `ca.key` (P-256) into `out_dir`; returns their paths."""
    validity = validity or Validity.days_from_now(10 * 365)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{name} federation CA"))
        .issuer_name(_name(f"{name} federation CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity.not_before)
        .not_valid_after(validity.not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    out_dir = Path(out_dir)
    return (
        _write(out_dir / "ca.crt", cert.public_bytes(serialization.Encoding.PEM)),
        _write(out_dir / "ca.key", _pem_key(key), private=True),
    )


def subject_alt_names(hosts: list[str]) -> list[x509.GeneralName]:
    """DNS names and IP addresses for `hosts` plus localhost and 127.0.0.1, without repeats."""
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*LOOPBACK, *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_server_certificate(
    out_dir: Path, ca_cert: Path, ca_key: Path, hosts: list[str], validity: Validity | None = None
) -> tuple[Path, Path]:
    """Write `server.crt` and `server.key` (P-256) signed by the CA, SANs for `hosts` (+ loopback)."""
    validity = validity or Validity.days_from_now(DEFAULT_DAYS)
    ca = load_certificate(ca_cert)
    signer = serialization.load_pem_private_key(Path(ca_key).read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0] if hosts else LOOPBACK[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity.not_before)
        .not_valid_after(validity.not_after)
        .add_extension(x509.SubjectAlternativeName(subject_alt_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)
        .sign(signer, hashes.SHA256())
    )
    out_dir = Path(out_dir)
    return (
        _write(out_dir / "server.crt", cert.public_bytes(serialization.Encoding.PEM)),
        _write(out_dir / "server.key", _pem_key(key), private=True),
    )


def make_site_keys(out_dir: Path, site: str) -> tuple[Path, Path]:
    """Write the site's SuperNode key pair: `<site>.key` (OpenSSH private) and `<site>.pub` (OpenSSH public)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    out_dir = Path(out_dir)
    return (
        _write(out_dir / f"{site}.key", private, private=True),
        _write(out_dir / f"{site}.pub", public + f" {site}\n".encode()),
    )


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except OSError as err:
        raise CertificateError(f"{path}: cannot read ({err.strerror})") from None
    except ValueError:
        raise CertificateError(f"{path}: not a PEM certificate") from None


def load_site_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """A site's OpenSSH public key; raises CertificateError unless it is an EC key as Flower wants."""
    try:
        key = serialization.load_ssh_public_key(Path(path).read_bytes())
    except OSError as err:
        raise CertificateError(f"{path}: cannot read ({err.strerror})") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError(f"{path}: not an OpenSSH public key (make one with deploy/make_certs.py site-key)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertificateError(f"{path}: a {type(key).__name__}; Flower needs an EC (NIST P-256/384/521) key")
    return key


def load_site_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A site's OpenSSH private key (what `flower-supernode` reads); CertificateError otherwise."""
    try:
        key = serialization.load_ssh_private_key(Path(path).read_bytes(), password=None)
    except OSError as err:
        raise CertificateError(f"{path}: cannot read ({err.strerror})") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CertificateError(
            f"{path}: not an unencrypted OpenSSH private key (make one with deploy/make_certs.py site-key)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{path}: a {type(key).__name__}; Flower needs an EC (NIST P-256/384/521) key")
    return key


def check_validity(cert: x509.Certificate, path: Path, now: dt.datetime | None = None) -> None:
    """CertificateError when `cert` has expired or is not valid yet."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if now > cert.not_valid_after_utc:
        raise CertificateError(f"{path}: the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if now < cert.not_valid_before_utc:
        raise CertificateError(f"{path}: the certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")


def check_server_certificate(ca_cert: Path, server_cert: Path, server_key: Path) -> None:
    """What the SuperLink will serve must work: both certificates in date, the server certificate
    signed by the CA, the key belonging to it. Raises CertificateError naming the file."""
    ca, cert = load_certificate(ca_cert), load_certificate(server_cert)
    check_validity(ca, ca_cert)
    check_validity(cert, server_cert)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError(f"{server_cert}: not signed by the CA {ca_cert}") from None
    try:
        key = serialization.load_pem_private_key(Path(server_key).read_bytes(), password=None)
    except OSError as err:
        raise CertificateError(f"{server_key}: cannot read ({err.strerror})") from None
    except (ValueError, TypeError):
        raise CertificateError(f"{server_key}: not an unencrypted PEM private key") from None
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CertificateError(f"{server_key}: not the private key of {server_cert}")

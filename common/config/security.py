"""The `security:` blocks of the federation and site YAMLs: TLS and SuperNode authentication.

On by default: the coordinator's SuperLink serves TLS with a certificate of the federation CA and
admits only the sites whose public keys are listed; a site verifies the SuperLink with the CA
certificate and signs its requests with its private key. `insecure: true` turns both off (the
launchers log a warning). Relative paths are relative to the YAML file. The files are checked
when a process is about to start (`server_tls`, `site_tls`), not when the YAML is loaded, so
`--simulate` (no network) and `check-config` work without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stsfl.common.config.loader import ConfigError, StrictModel, absolute_file_paths


class FederationSecurity(StrictModel):
    """ca_cert / server_cert / server_key: the SuperLink's TLS files (PEM; deploy/make_certs.py
    federation). site_keys: site name -> that site's public key (OpenSSH `ecdsa-sha2-nistp384 ...`),
    registered with the SuperLink at start; only these sites can join."""

    insecure: bool = False
    ca_cert: Path | None = None
    server_cert: Path | None = None
    server_key: Path | None = None
    site_keys: dict[str, Path] = {}


class SiteSecurity(StrictModel):
    """ca_cert: the federation CA certificate (from the coordinator); auth_key: this site's private
    key (OpenSSH; deploy/make_certs.py site-key), whose .pub the coordinator registered."""

    insecure: bool = False
    ca_cert: Path | None = None
    auth_key: Path | None = None


@dataclass(frozen=True)
class ServerTls:
    """Absolute, existing files for `flower-superlink` (TLS + SuperNode authentication)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    site_keys: dict[str, Path]


@dataclass(frozen=True)
class SiteTls:
    """Absolute, existing files for `flower-supernode` (TLS + authentication)."""

    ca_cert: Path
    auth_key: Path


def _existing(config_path: Path, key: str, value: Path | None) -> Path:
    """`value` made absolute against the YAML's folder; ConfigError naming the key when unset or missing."""
    if value is None:
        raise ConfigError(
            f"{config_path}: {key}: required for a secured federation "
            "(see docs/coordinator.md, 'Site onboarding'; or set security.insecure: true)"
        )
    path = value if value.is_absolute() else Path(config_path).resolve().parent / value
    if not path.is_file():
        raise ConfigError(f"{config_path}: {key}: file {path} does not exist")
    return path.resolve()


def server_tls(security: FederationSecurity, sites: list[str], config_path: Path) -> ServerTls | None:
    """The SuperLink's files, or None when `insecure`; every site must have a key."""
    if security.insecure:
        return None
    missing = [s for s in sites if s not in security.site_keys]
    if missing:
        raise ConfigError(
            f"{config_path}: security.site_keys: no public key for site(s) {', '.join(missing)}; only registered sites can join"
        )
    return ServerTls(
        ca_cert=_existing(config_path, "security.ca_cert", security.ca_cert),
        server_cert=_existing(config_path, "security.server_cert", security.server_cert),
        server_key=_existing(config_path, "security.server_key", security.server_key),
        site_keys={s: _existing(config_path, f"security.site_keys.{s}", security.site_keys[s]) for s in sites},
    )


def site_tls(security: SiteSecurity, config_path: Path) -> SiteTls | None:
    """The SuperNode's files, or None when `insecure`."""
    if security.insecure:
        return None
    return SiteTls(
        ca_cert=_existing(config_path, "security.ca_cert", security.ca_cert),
        auth_key=_existing(config_path, "security.auth_key", security.auth_key),
    )


def absolute_security_paths(data: dict, config_path: Path) -> dict:
    """The federation YAML's data with the relative paths of its `security` block and its
    referenced files (`schema_file`) made absolute (against the YAML's folder), for copies written
    elsewhere (results folder, LOCO folds); `data` itself when there is nothing to change."""
    data = absolute_file_paths(data, config_path)
    security = data.get("security") if isinstance(data, dict) else None
    if not isinstance(security, dict):
        return data
    folder = Path(config_path).resolve().parent

    def absolute(value):
        return value if not isinstance(value, str) or Path(value).is_absolute() else str(folder / value)

    fixed = {key: absolute(value) for key, value in security.items() if key != "site_keys"}
    if isinstance(security.get("site_keys"), dict):
        fixed["site_keys"] = {site: absolute(value) for site, value in security["site_keys"].items()}
    return data if fixed == security else {**data, "security": fixed}

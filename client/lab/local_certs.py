"""Throwaway certificates for a federation on this machine (`stsfl demo`, the integration tests).

A CA, a SuperLink certificate for 127.0.0.1/localhost and one key pair per site in one folder,
plus the `security:` blocks that point the federation YAML and the site YAMLs at them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stsfl.common.certificates import make_ca, make_server_certificate, make_site_keys


@dataclass(frozen=True)
class LocalCerts:
    """Paths of the files `make_local_certs` wrote (all absolute)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    site_keys: dict[str, tuple[Path, Path]]  # site -> (private key, public key)

    def federation_security(self) -> dict[str, Any]:
        """The federation YAML's `security:` block (every site registered)."""
        return {
            "ca_cert": str(self.ca_cert),
            "server_cert": str(self.server_cert),
            "server_key": str(self.server_key),
            "site_keys": {site: str(pub) for site, (_, pub) in self.site_keys.items()},
        }

    def site_security(self, site: str) -> dict[str, Any]:
        """Site `site`'s `security:` block."""
        return {"ca_cert": str(self.ca_cert), "auth_key": str(self.site_keys[site][0])}


def make_local_certs(out_dir: Path, sites: list[str], name: str = "local") -> LocalCerts:
    """CA, SuperLink certificate (loopback) and site key pairs under `out_dir` (milliseconds: EC keys)."""
    out_dir = Path(out_dir).resolve()
    ca_cert, ca_key = make_ca(out_dir, name)
    server_cert, server_key = make_server_certificate(out_dir, ca_cert, ca_key, hosts=[])
    return LocalCerts(ca_cert, ca_key, server_cert, server_key, {site: make_site_keys(out_dir / "sites", site) for site in sites})


def secured_site_yaml(site_yaml: Path, out_path: Path, security: dict[str, Any], threads: int | None = None) -> Path:
    """A copy of `site_yaml` at `out_path` with `security` (and `threads`, when given) set; its
    relative paths (root, schema, cache) made absolute so that they still point where the original's did."""
    site_yaml = Path(site_yaml).resolve()
    data = yaml.safe_load(site_yaml.read_text(encoding="utf-8")) or {}
    for key in ("root", "schema_file", "cache_dir"):
        if data.get(key) is not None and not Path(data[key]).is_absolute():
            data[key] = str((site_yaml.parent / data[key]).resolve())
    out_path.parent.mkdir(parents=True, exist_ok=True)
    data = {**data, "security": security} | ({"threads": threads} if threads else {})
    out_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out_path

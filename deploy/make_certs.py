#!/usr/bin/env python3
"""Certificates and keys of a federation (TLS + SuperNode authentication, Flower 1.41).

Coordinator, once:
    python deploy/make_certs.py federation --out certs --name my-federation --host coordinator.example.org --host 10.0.0.5
        certs/ca.crt      the federation CA certificate: give it to every site
        certs/ca.key      the CA's key: keep it offline, it signs new server certificates
        certs/server.crt  the SuperLink's certificate (SANs: the --host values, localhost, 127.0.0.1)
        certs/server.key  its key (stays on the coordinator)
    python deploy/make_certs.py server --out certs --ca certs --host ...   renew server.crt/.key with the same CA
    (`federation --site NAME ...` also makes site key pairs under certs/sites/, for a dry run on one host)
Each site, once:
    python deploy/make_certs.py site-key --out keys --site sarcoma-centre-a
        keys/sarcoma-centre-a.key  the site's private key: never leaves the site
        keys/sarcoma-centre-a.pub  its public key: send it to the coordinator (security.site_keys)

`--expired` (server) writes a certificate that has already expired, to test that sites refuse it.
See docs/coordinator.md and docs/site-operator.md, 'Site onboarding'.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stsfl.common.certificates import Validity, make_ca, make_server_certificate, make_site_keys


def _server(args: argparse.Namespace, ca_dir: Path) -> list[Path]:
    validity = Validity.expired() if args.expired else Validity.days_from_now(args.days)
    return list(make_server_certificate(Path(args.out), ca_dir / "ca.crt", ca_dir / "ca.key", args.host, validity))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make_certs.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fed = sub.add_parser("federation", help="CA + SuperLink certificate (coordinator)")
    fed.add_argument("--name", default="stsfl", help="federation name (in the CA's common name)")
    fed.add_argument(
        "--site",
        action="append",
        default=[],
        help="also make this site's key pair under OUT/sites/ (a dry run on one host; in a federation each site makes its own)",
    )
    server = sub.add_parser("server", help="a new SuperLink certificate from an existing CA (coordinator)")
    server.add_argument("--ca", required=True, help="folder holding ca.crt and ca.key")
    for p in (fed, server):
        p.add_argument("--out", required=True, help="output folder")
        p.add_argument(
            "--host",
            action="append",
            default=[],
            help="a DNS name or IP address sites use to reach the "
            "SuperLink (repeatable; localhost and 127.0.0.1 are always included)",
        )
        p.add_argument("--days", type=float, default=825, help="validity of the server certificate (default 825 days)")
        p.add_argument("--expired", action="store_true", help="write an already expired server certificate (tests)")
    site = sub.add_parser("site-key", help="a site's key pair for SuperNode authentication (site)")
    site.add_argument("--out", required=True, help="output folder")
    site.add_argument("--site", required=True, help="the site's name (as in the federation YAML's sites)")
    args = parser.parse_args(argv)
    if args.command == "federation":
        written = list(make_ca(Path(args.out), args.name)) + _server(args, Path(args.out))
        for site in args.site:
            written += make_site_keys(Path(args.out) / "sites", site)
    elif args.command == "server":
        written = _server(args, Path(args.ca))
    else:
        written = list(make_site_keys(Path(args.out), args.site))
    for path in written:
        print(path.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())

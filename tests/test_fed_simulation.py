"""Simulation mode without processes: the federation YAML's `simulation` section, the checks of
`sts-server --simulate`, what it passes to Flower, and how a virtual node finds its site."""

from __future__ import annotations

import pytest

from stsfl.client.federation.site_identity import site_identity
from stsfl.common.config import ConfigError, FederationConfig, load_config
from stsfl.common.console import UserError
from stsfl.common.fed_protocol import from_json
from stsfl.common.flower_procs import toml_pairs
from stsfl.server.federation.simulation import plan_simulation


def _write(tmp_path, body: str):
    path = tmp_path / "federation.yaml"
    path.write_text("sites: [a, b, c]\nholdout: [c]\n" + body)
    return path


def _site(tmp_path, folder: str, name: str):
    path = tmp_path / folder / "site.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"name: {name}\nroot: .\n")
    return path


def test_plan_resolves_site_yamls_relative_to_the_federation_yaml(tmp_path):
    for name in "abc":
        _site(tmp_path, f"sites/{name}", name)
    config = _write(
        tmp_path,
        "simulation:\n  site_configs: {a: sites/a/site.yaml, b: sites/b/site.yaml, "
        "c: sites/c/site.yaml}\n  cpus: 2\n  threads_per_site: 1\n",
    )
    plan = plan_simulation(load_config(config, FederationConfig), config)
    assert plan.sites == [(n, str((tmp_path / "sites" / n / "site.yaml").resolve())) for n in "abc"]
    assert plan.federation_config() == {
        "num-supernodes": 3,
        "client-resources-num-cpus": 1,
        "init-args-num-cpus": 2,
        "init-args-log-to-driver": True,
    }
    assert plan.env({})["OMP_NUM_THREADS"] == "1"
    # The site list survives Flower's --run-config parser (no escaped quotes: a TOML literal string).
    from flwr.common.config import parse_config_args

    parsed = parse_config_args([toml_pairs(plan.run_config())])
    assert [tuple(s) for s in from_json(parsed["simulation-sites"])] == plan.sites
    assert parsed["simulation-threads"] == 1


def test_plan_names_the_site_without_a_yaml(tmp_path):
    _site(tmp_path, "a", "a")
    config = _write(tmp_path, "simulation:\n  site_configs: {a: a/site.yaml}\n")
    with pytest.raises(UserError, match=r"simulation.site_configs: no site YAML for b, c"):
        plan_simulation(load_config(config, FederationConfig), config)


def test_plan_refuses_a_missing_file_and_a_site_yaml_of_another_site(tmp_path):
    _site(tmp_path, "a", "a")
    _site(tmp_path, "b", "a")  # b's YAML names site a
    config = _write(tmp_path, "simulation:\n  site_configs: {a: a/site.yaml, b: b/site.yaml, c: nowhere.yaml}\n")
    fed = load_config(config, FederationConfig)
    with pytest.raises(UserError, match=r"site_configs.b: .*b/site.yaml is site 'a', not 'b'"):
        plan_simulation(fed, config)
    _site(tmp_path, "b", "b")
    with pytest.raises(UserError, match=r"site_configs.c: .*nowhere.yaml does not exist"):
        plan_simulation(fed, config)


def test_config_refuses_unknown_sites_and_too_many_cpus_per_site(tmp_path):
    with pytest.raises(ConfigError, match=r"names site\(s\) d that are not listed"):
        load_config(_write(tmp_path, "simulation:\n  site_configs: {d: x.yaml}\n"), FederationConfig)
    with pytest.raises(ConfigError, match=r"simulation.cpus_per_site=3 exceeds cpus=2|cpus_per_site=3 exceeds cpus=2"):
        load_config(_write(tmp_path, "simulation: {cpus: 2, cpus_per_site: 3}\n"), FederationConfig)


def test_a_node_finds_its_site_from_node_config_or_partition_id():
    assert site_identity({"site-name": "a", "site-config": "/s/a.yaml"}, {}) == ("a", "/s/a.yaml")
    run_config = {"simulation-sites": '[["a", "/s/a.yaml"], ["b", "/s/b.yaml"]]'}
    assert site_identity({"partition-id": 1, "num-partitions": 2}, run_config) == ("b", "/s/b.yaml")
    with pytest.raises(ValueError, match="simulated node 2 has no site"):
        site_identity({"partition-id": 2}, run_config)
    with pytest.raises(ValueError, match="lacks 'site-name'"):
        site_identity({"partition-id": 0}, {"simulation-sites": ""})

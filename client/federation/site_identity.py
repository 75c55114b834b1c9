"""Which site a SuperNode serves: its node-config, or its place in a simulation's site list."""

from __future__ import annotations

from stsfl.common.fed_protocol import NODE_PARTITION_ID, NODE_SITE_CONFIG, NODE_SITE_NAME, RUN_SIMULATION_SITES, from_json


def site_identity(node_config: dict, run_config: dict) -> tuple[str, str]:
    """(site name, site YAML) of this node: from `sts-client`'s node-config, or, for a virtual
    SuperNode of the simulation engine, the run config's site list at its partition id."""
    if NODE_SITE_NAME in node_config:
        return str(node_config[NODE_SITE_NAME]), str(node_config[NODE_SITE_CONFIG])
    sites = from_json(str(run_config.get(RUN_SIMULATION_SITES) or "[]"))
    if NODE_PARTITION_ID in node_config and sites:
        partition = int(node_config[NODE_PARTITION_ID])
        if not 0 <= partition < len(sites):
            raise ValueError(f"simulated node {partition} has no site: the run lists {len(sites)} sites")
        name, site_yaml = sites[partition]
        return str(name), str(site_yaml)
    raise ValueError(
        f"this SuperNode has no site: its node-config lacks {NODE_SITE_NAME!r} and {NODE_SITE_CONFIG!r} "
        "(start it with `sts-client --site site.yaml --server HOST:PORT`)"
    )

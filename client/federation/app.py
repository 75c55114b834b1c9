"""Our Flower ClientApp (component `stsfl.client.federation.app:app` in pyproject's [tool.flwr.app]).

The SuperNode runs it in a fresh process for every message, so this module imports only Flower
and the protocol constants. Under `sts-client` the node-config names the folder of the site's
worker (`worker-dir`): the message goes there over a Unix socket (stsfl.client.federation.worker_channel)
and the worker, which imported torch and prepared the site's data once, runs the handlers of
stsfl.client.federation.site_app and answers. Where there is no worker - the virtual SuperNodes of
`sts-server --simulate`, the in-process tests - the handlers run in this process, as a message
always did before the worker existed (each message pays the imports and the data set-up then).

The site is identified by the SuperNode's node-config (`site-name`, `site-config` = path of the
site YAML). A virtual SuperNode of Flower's simulation engine has only a `partition-id`: it
indexes the run config's `simulation-sites` list (the server wrote it from the federation YAML).
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from stsfl.common.fed_protocol import (
    NODE_PARTITION_ID,
    NODE_SITE_CONFIG,
    NODE_SITE_NAME,
    NODE_WORKER_DIR,
    RUN_SIMULATION_SITES,
    from_json,
)


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


class SiteClientApp(ClientApp):
    """A ClientApp that hands every message to the site worker when the node has one, and to
    the handlers of stsfl.client.federation.site_app in this process otherwise."""

    def __call__(self, message: Message, context: Context) -> Message:
        folder = context.node_config.get(NODE_WORKER_DIR)
        if not folder:
            from stsfl.client.federation.site_app import site_app

            return site_app(message, context)
        from stsfl.client.federation.worker_channel import forward

        site, _ = site_identity(context.node_config, context.run_config)
        reply, after = forward(message, context, Path(str(folder)), site)
        context.state = after.state  # what the handlers kept (SecAgg+ keys) goes back to the SuperNode
        return reply


app = SiteClientApp()

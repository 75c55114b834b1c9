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

from stsfl.client.federation.site_identity import site_identity
from stsfl.common.fed_protocol import NODE_WORKER_DIR


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

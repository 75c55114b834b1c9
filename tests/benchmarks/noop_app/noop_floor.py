"""The no-op app of bench_fed_systems.py (see pyproject.toml): what a round costs in Flower alone.

ServerApp: waits for `sites` nodes, then `rounds` times sends every node a train message holding
`values` float32 numbers and waits for all replies; writes the seconds of each round to `out`
(JSON), collecting replies as the coordinator does (stsfl.server.federation.prompt_grid). ClientApp: replies
with the numbers it got. Imports only Flower, numpy and that grid.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from stsfl.server.federation.prompt_grid import PromptGrid

server = ServerApp()
client = ClientApp()


@client.train()
def echo(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"arrays": msg.content["arrays"]}), reply_to=msg)


@server.main()
def rounds(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    sites, timeout = int(cfg["sites"]), float(cfg["timeout-s"])
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < sites:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(nodes)} of {sites} nodes connected after {timeout:.0f} s")
        time.sleep(0.2)
    arrays = ArrayRecord({"w": Array(np.zeros(int(cfg["values"]), dtype=np.float32))})
    seconds = []
    for server_round in range(1, int(cfg["rounds"]) + 1):
        t0 = time.monotonic()
        messages = [
            Message(
                RecordDict({"arrays": arrays}),
                dst_node_id=node,
                message_type="train",
                group_id=str(server_round),
                ttl=timeout + 60,
            )
            for node in nodes
        ]
        replies = list(PromptGrid(grid).send_and_receive(messages, timeout=timeout))
        failed = [r.error.reason for r in replies if r.has_error()]
        if len(replies) < len(nodes) or failed:
            raise RuntimeError(f"round {server_round}: {len(replies)} of {len(nodes)} replies; errors: {failed}")
        seconds.append(time.monotonic() - t0)
    Path(str(cfg["out"])).write_text(json.dumps({"sites": len(nodes), "round_s": seconds}))

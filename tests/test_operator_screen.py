"""The site operator's screen under `sts-client`: lines recorded from a real site's log (a run,
the coordinator going away between runs, SuperNode restarts) reduce to the worker's lines and one
line per connection change."""

from __future__ import annotations

from pathlib import Path

from stsfl.client.federation.operator_screen import OperatorScreen

LOG = """\x1b[92mINFO \x1b[0m:      Starting Flower SuperNode
INFO:     Uvicorn running on http://127.0.0.1:35777 (Press CTRL+C to quit)
\x1b[92mINFO \x1b[0m:      SuperNode ID: 11428383181393751336
\x1b[92mINFO \x1b[0m:      Starting Flower SuperExec
21:34:24 site worker: site region_0 ready (pid 27247)
\x1b[92mINFO \x1b[0m:      [RUN 6781129277267009675, ROUND 1]
\x1b[92mINFO \x1b[0m:      Receiving: train message (ID: ccafa2ffee654b74530fec9a0e3c5c98affea271b71f64c2325de05e9dcf2ad7)
\x1b[92mINFO \x1b[0m:      Start `flwr-clientapp` process
21:35:46 site worker: round 1: trained 5 local epoch(s), loss 3.0574 in 8.3 s
\x1b[93mWARNING \x1b[0m:   Evaluation took longer than expected
21:36:02 site worker: run 6781129277267009675 ended; this site's outputs: /data/site/.stsfl/outputs/demo
\x1b[93mWARNING \x1b[0m:   Connection attempt failed, retrying in 0.74 seconds
\x1b[93mWARNING \x1b[0m:   Connection attempt failed, retrying in 1.79 seconds
\x1b[92mINFO \x1b[0m:      SuperNode terminated gracefully.
"""
RESTART = """\x1b[92mINFO \x1b[0m:      Starting Flower SuperNode
\x1b[91mERROR \x1b[0m:     Exit Code: 305
Failed to initialize the connection to the SuperLink.
[code: 2004] Failed to activate SuperNode.
Traceback (most recent call last):
KeyboardInterrupt
"""


def test_the_screen_keeps_the_runs_and_one_line_per_connection_change():
    shown: list[str] = []
    screen = OperatorScreen("10.0.0.5:9092", Path("logs/sts-client-region_0.log"), shown.append)
    half = len(LOG) // 2  # chunks end anywhere, not at line ends
    screen.feed(LOG[:half])
    screen.feed(LOG[half:])
    for _ in range(3):  # sts-client restarts the SuperNode every few seconds while the SuperLink is away
        screen.lost()
        screen.feed(RESTART)
    screen.feed(LOG.splitlines(keepends=True)[2])
    assert "".join(shown).splitlines() == [
        "connected to the coordinator at 10.0.0.5:9092",
        "21:34:24 site worker: site region_0 ready (pid 27247)",
        "21:35:46 site worker: round 1: trained 5 local epoch(s), loss 3.0574 in 8.3 s",
        "WARNING :   Evaluation took longer than expected",
        "21:36:02 site worker: run 6781129277267009675 ended; this site's outputs: /data/site/.stsfl/outputs/demo",
        "waiting for the coordinator at 10.0.0.5:9092 (it runs a SuperLink while a run lasts); "
        "every attempt is in logs/sts-client-region_0.log",
        "connected to the coordinator at 10.0.0.5:9092",
    ]

"""Our Flower ServerApp (component `stsfl.server.app:app` in pyproject's [tool.flwr.app]).

`flwr run` (started by `sts-server`) runs it inside the SuperLink's ServerApp process. The run
config carries only where things are: `federation-config` (the coordinator's YAML),
`results-dir` and `resume`; everything else is read from the YAML, so one file says what a
federation is. Progress lines go to stdout, which `flwr run --stream` shows to the coordinator.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from stsfl.common.console import one_line_cause

app = ServerApp()


def _log(line: str) -> None:
    # one line each: `sts-server` shows only the lines with the prefix (a site's multi-line failure
    # reason, e.g. a remote traceback, becomes its cause)
    print(f"[stsfl] {one_line_cause(line)}", flush=True)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run one federation (or continue one) as described by the run config."""
    from stsfl.common.config import FederationConfig, load_config
    from stsfl.common.tasks import server_side
    from stsfl.server.federation.prompt_grid import PromptGrid
    from stsfl.server.orchestrator import Federation
    from stsfl.server.reports.results import ResultsFolder

    config_path = Path(str(context.run_config["federation-config"]))
    fed = load_config(config_path, FederationConfig)
    results_dir = Path(str(context.run_config.get("results-dir") or fed.results_dir))
    resume = bool(context.run_config.get("resume", False))
    try:
        federation = Federation(PromptGrid(grid), fed, config_path, results_dir, server_side(fed), log=_log, resume=resume)
        federation.run()
    except Exception as err:  # the coordinator reads status.json for the reason of a failed run
        ResultsFolder(results_dir).write_status("failed", error=f"{type(err).__name__}: {err}")
        _log(f"run failed: {err}")
        traceback.print_exc(file=sys.stdout)
        raise

"""What the coordinator reads on screen: the round line with its held-out metrics (through the real
console, where `[...]` would be markup) and a site's failure as its cause, in one line."""

from __future__ import annotations

from stsfl.common.config import FederationConfig
from stsfl.common.console import CAUSE_MAX_CHARS, console, one_line_cause, print_progress
from stsfl.server.phases.run_summary import progress_line

HELD_OUT = {"c-harrell-os": 0.712, "c-uno-os": 0.698, "eval-events-os": 14.0}


def test_the_round_line_shows_the_held_out_metrics_on_the_console(tmp_path):
    fed = FederationConfig(sites=["hospital_a", "hospital_b", "hospital_c"], holdout=["hospital_c"], rounds=10)
    record = {
        "round": 1,
        "sites_train": ["hospital_a", "hospital_b"],
        "train_sites": {
            "hospital_a": {"train-loss-fused": 5.9, "num-events": 3.0},
            "hospital_b": {"train-loss-fused": 5.9, "num-events": 3.0},
        },
        "selection_score": 2.6622,
        "evaluate_sites": {"hospital_c": HELD_OUT},
    }
    line = progress_line(fed, record)
    with console.capture() as captured:
        print_progress(line)
    shown = captured.get().strip()
    assert shown.endswith("held-out hospital_c [os: C 0.712, Uno 0.698, 14 events]")
    assert shown == line  # every character of the line reaches the screen
    assert shown.startswith("round 1/10 [#---------] | sites 2/2")  # the bar is text, not console markup


def test_a_remote_exception_becomes_its_cause_in_one_line():
    ray_reason = (
        "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'ray::ClientAppActor.run() (pid=7)\n"
        '  File "calibration_site.py", line 40, in calibrate\n    torch.cat(parts)\n'
        "RuntimeError: torch.cat(): expected a non-empty list of Tensors\n\n"
        "The above exception was the direct cause of the following exception:\n"
        "flwr.clientapp.client_app.ClientAppException: \nException ClientAppException occurred. Message: x'>"
    )
    assert one_line_cause(f"round 3: site a did not query: {ray_reason}") == (
        "round 3: site a did not query: RuntimeError: torch.cat(): expected a non-empty list of Tensors"
    )
    unusable = (
        "<class 'stsfl.client.problems.SiteUnusableError'>:<'site cannot be used:\n"
        "  file /srv/clinical.csv, column grade: required column missing'>"
    )
    assert one_line_cause(unusable) == (
        "SiteUnusableError: site cannot be used: file /srv/clinical.csv, column grade: required column missing"
    )
    long = one_line_cause("<class 'ValueError'>:<'" + "x" * 1000 + "'>")
    assert len(long) == CAUSE_MAX_CHARS and long.endswith("...")
    assert one_line_cause("round 2/3 | sites 2/2\n") == "round 2/3 | sites 2/2"  # plain lines stay as they are

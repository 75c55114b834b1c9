"""The site worker (stsfl.client.federation.site_worker) as real processes behind our ClientApp: whole
federations in one process (tests/inprocess_grid.py) whose messages go through the ClientApp's
forwarding path to one worker process per site answer exactly as the in-process handlers do, on
TCGA-BRCA regions (linear Cox) and on the tiny multimodal sites; a worker killed while it holds a
message makes that message fail with the site and the cause, and the next message is served by
the worker `sts-client`'s supervisor started again; the socket and token are the user's only; a
run's data is dropped when the next run starts."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 (fixture)
from site_builder import make_site

from stsfl.client.data.site_prepare import site_state_dir
from stsfl.client.federation.app import app
from stsfl.client.federation.site_worker import SiteWorker
from stsfl.client.federation.worker_channel import SOCKET_NAME, TOKEN_NAME, WorkerUnavailable, recv_frame, send_frames
from stsfl.client.federation.worker_supervisor import WorkerSupervisor, site_worker_dir
from stsfl.client.lab.tcga_brca import write_region_sites
from stsfl.common.config import SiteConfig, TrainConfig, load_config
from stsfl.common.fed_protocol import CONFIG, MSG_STATS, NODE_SITE_CONFIG, NODE_SITE_NAME, NODE_WORKER_DIR, STATS
from stsfl.common.messages import RunConfig

LINEAR_COX = """name: worker-linear
task: linear-cox
sites: [region_0, region_1, region_3]
holdout: [region_3]
rounds: 2
eval_every: 1
train: {epochs_per_round: 3, lr: 0.05, seed: 5}
cross_site: {enabled: true, local_epochs: 2}
"""
MULTIMODAL = """name: worker-multimodal
sites: [a, b]
rounds: 2
train: {epochs_per_round: 1}
validation_fraction: 0.34
weighting: patients
"""
WORKER_START_S = 240.0  # imports of torch and the task code, on a machine the other tests also load


@contextlib.contextmanager
def running_workers(site_yamls: dict[str, Path], root: Path):
    """One worker process per site (as sts-client starts them), each ready; stopped at the end."""
    workers = {site: WorkerSupervisor(path, root / f"w-{site}", root / f"worker-{site}.log") for site, path in site_yamls.items()}
    try:
        for worker in workers.values():
            worker.start()
        for worker in workers.values():
            wait_ready(worker, WORKER_START_S)
        yield workers
    finally:
        for worker in workers.values():
            worker.stop()


def wait_ready(worker: WorkerSupervisor, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (worker.folder / SOCKET_NAME).exists():
        worker.check()
        assert time.monotonic() < deadline, f"worker not ready after {timeout:.0f} s:\n{worker.log_path.read_text()[-3000:]}"
        time.sleep(0.2)


def through_workers(grid: InProcessGrid, workers: dict[str, WorkerSupervisor]) -> InProcessGrid:
    """The grid's nodes as sts-client starts them: with the folder of their site's worker."""
    for context in grid.contexts.values():
        context.node_config[NODE_WORKER_DIR] = str(workers[context.node_config[NODE_SITE_NAME]].folder)
    return grid


def assert_same_reply(direct: Message, forwarded: Message) -> None:
    """Same records, arrays equal byte for byte, metrics and configs equal (except the timings)."""
    kind = direct.metadata.message_type
    assert forwarded.metadata.message_type == kind
    assert forwarded.has_error() == direct.has_error(), f"{kind}: {forwarded.error if forwarded.has_error() else direct.error}"
    if direct.has_error():
        assert forwarded.error.reason == direct.error.reason
        return
    assert sorted(forwarded.content.keys()) == sorted(direct.content.keys()), kind
    for key, record in direct.content.items():
        other = forwarded.content[key]
        assert type(other) is type(record), f"{kind} {key}"
        if isinstance(record, ArrayRecord):
            assert list(other.keys()) == list(record.keys())
            for name, array in record.items():
                a, b = array.numpy(), other[name].numpy()
                assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), f"{kind} {key}/{name}"
        elif isinstance(record, MetricRecord):
            assert set(other) == set(record)
            assert {k: v for k, v in other.items() if not k.startswith("time-")} == {
                k: v for k, v in record.items() if not k.startswith("time-")
            }, f"{kind} {key}"
        else:
            assert dict(other) == dict(record), f"{kind} {key}"


@pytest.fixture(scope="module")
def region_sites(tcga_brca_dir, tmp_path_factory) -> dict[str, Path]:
    paths = write_region_sites(tcga_brca_dir, tmp_path_factory.mktemp("regions"), regions=[0, 1, 3])
    return {p.stem: p for p in paths}


@pytest.fixture(scope="module")
def tiny_sites(tmp_path_factory) -> dict[str, Path]:
    yamls = {}
    for i, name in enumerate(("a", "b")):
        site_yaml = make_site(tmp_path_factory.mktemp(name), n=6, slides=(i == 0))
        site_yaml.write_text(yaml.safe_dump({**yaml.safe_load(site_yaml.read_text()), "name": name}))
        yamls[name] = site_yaml
    return yamls


@pytest.mark.parametrize("cohort, body", [("region_sites", LINEAR_COX), ("tiny_sites", MULTIMODAL)])
def test_forwarded_messages_are_answered_as_in_process(cohort, body, request, tmp_path, server_identity):
    sites = request.getfixturevalue(cohort)
    config = tmp_path / "federation.yaml"
    config.write_text(body)
    direct = InProcessGrid(sites)
    summary = run_in_process(direct, config, tmp_path / "direct")
    with running_workers(sites, tmp_path) as workers:
        forwarded = through_workers(InProcessGrid(sites), workers)
        forwarded_summary = run_in_process(forwarded, config, tmp_path / "forwarded")
        logs = {site: w.log_path.read_text() for site, w in workers.items()}
    assert forwarded.sent == direct.sent and len(set(direct.sent)) >= 6, "every phase's message types"
    for a, b in zip(direct.replies, forwarded.replies):
        assert_same_reply(a, b)
    assert forwarded_summary == summary
    with np.load(tmp_path / "direct" / "model_final.npz") as a, np.load(tmp_path / "forwarded" / "model_final.npz") as b:
        assert all(a[k].tobytes() == b[k].tobytes() for k in a.files)
    for site, log in logs.items():  # what the site operator sees
        assert f"site {site} ready" in log and "started" in log and "ended; this site's outputs:" in log, log
        if site in summary["training_sites"]:
            assert "round 2: trained" in log and "loss" in log, log


def _stats_query(site: str, site_yaml: Path, folder: Path, run_id: int = 1) -> tuple[Message, Context]:
    cfg = RunConfig(federation="faults", task="linear-cox", recipe=TrainConfig(), run_seed=0, validation_fraction=0.2)
    msg = Message(RecordDict({CONFIG: cfg.to_record()}), dst_node_id=1, message_type=MSG_STATS)
    msg.metadata.__dict__["_message_id"] = f"m{time.monotonic_ns()}"
    context = Context(
        run_id=run_id,
        node_id=1,
        state=RecordDict(),
        run_config={},
        node_config={NODE_SITE_NAME: site, NODE_SITE_CONFIG: str(site_yaml), NODE_WORKER_DIR: str(folder)},
    )
    return msg, context


def test_a_dead_worker_fails_its_message_and_is_restarted(region_sites, tmp_path, server_identity):
    site = "region_0"
    with running_workers({site: region_sites[site]}, tmp_path) as workers:
        worker = workers[site]
        folder = worker.folder
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((folder / SOCKET_NAME).stat().st_mode) == 0o600
        assert stat.S_IMODE((folder / TOKEN_NAME).stat().st_mode) == 0o600
        # another process of this user that does not hold the token is refused
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(folder / SOCKET_NAME))
            send_frames(sock, b"guess")
            assert recv_frame(sock).startswith(b"wrong token")

        first_pid = worker.pid
        os.kill(first_pid, signal.SIGSTOP)  # it will hold the message without answering
        outcome: dict = {}

        def send() -> None:
            try:
                outcome["reply"] = app(*_stats_query(site, region_sites[site], folder))
            except WorkerUnavailable as exc:
                outcome["error"] = str(exc)

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(1.0)
        os.kill(first_pid, signal.SIGKILL)
        while sender.is_alive():  # sts-client's watch, as in its loop
            worker.check()
            time.sleep(0.2)
        assert "reply" not in outcome
        assert f"site {site}" in outcome["error"] and "'query.stats'" in outcome["error"]
        assert "killed by SIGKILL" in outcome["error"], outcome["error"]
        deadline = time.monotonic() + WORKER_START_S
        while worker.pid == first_pid or worker.proc.poll() is not None:
            worker.check()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        reply = app(*_stats_query(site, region_sites[site], folder))  # waits for the new worker's socket
        assert not reply.has_error() and STATS in reply.content
        assert worker.restarts == 1


def test_the_next_run_clears_the_previous_runs_data_and_a_second_worker_is_refused(region_sites, tmp_path, server_identity):
    site = "region_1"
    with running_workers({site: region_sites[site]}, tmp_path) as workers:
        folder = workers[site].folder
        for run_id in (7, 7, 8):
            assert not app(*_stats_query(site, region_sites[site], folder, run_id)).has_error()
        token = (folder / TOKEN_NAME).read_bytes()
        second = SiteWorker(load_config(region_sites[site], SiteConfig), region_sites[site], folder, app, dict)
        with pytest.raises(SystemExit, match=r"another site worker listens at .*\(give each site YAML its own cache_dir\)"):
            second.listen()  # a second site with the same state folder
        assert (folder / TOKEN_NAME).read_bytes() == token, "the running worker keeps its token"
        log = workers[site].log_path.read_text()
    assert log.count("run 7 (faults) started") == 1 and "run 7 is over: its data is cleared from memory" in log
    assert "run 8 (faults) started" in log


def test_worker_folder_is_in_the_site_state_folder(tmp_path):
    site_yaml = make_site(tmp_path / "site", n=1)
    site = load_config(site_yaml, SiteConfig)
    assert site_worker_dir(site, site_yaml) == site_state_dir(site, site_yaml) / "worker"
    site_yaml.write_text(yaml.safe_dump({**yaml.safe_load(site_yaml.read_text()), "cache_dir": "state"}))
    site = load_config(site_yaml, SiteConfig)
    assert site_worker_dir(site, site_yaml) == site_state_dir(site, site_yaml) / "worker" == site_yaml.parent / "state" / "worker"


def test_a_site_trains_with_the_threads_its_yaml_gives(region_sites, tmp_path):
    import torch

    from stsfl.client.federation.site_app import _site

    site_yaml = tmp_path / "region_0.yaml"
    site_yaml.write_text(yaml.safe_dump({**yaml.safe_load(region_sites["region_0"].read_text()), "threads": 1}))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        node = {NODE_SITE_NAME: "region_0", NODE_SITE_CONFIG: str(site_yaml)}
        task = _site(Context(run_id=1, node_id=1, state=RecordDict(), run_config={}, node_config=node))
        assert task.site.threads == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        SiteConfig.model_validate({"name": "x", "root": ".", "threads": 0})

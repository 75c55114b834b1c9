"""Systems figures of the federation: round time as sites are added, one `paper`-preset round split
into its parts, bytes per site and round against the float32 size of the parameters.

Three parts (`--parts`, each rewrites its own entry of the JSON and keeps the others):

- `real`: a SuperLink (TLS, every site's key registered, as `sts-server` starts it) and N
  `sts-client` processes on loopback (default N = 2, 4, 8; each with its site worker unless
  `--no-worker`), first the floor - a no-op app (tests/benchmarks/noop_app: its ClientApp echoes
  40 float32 values) for the same rounds on the same SuperLink and SuperNodes -, then the
  clinical-only linear Cox task on TCGA-BRCA region tables (regions are reused under new site
  names beyond six); per N: the steady-state round time of both, their ratio and difference (what
  our ClientApp adds to a message beyond a no-op one);
- `simulation`: the same federations on Flower's simulation engine (`sts-server --simulate`,
  2 CPUs, 1 thread per site), N = 2, 4, 8, 16;
- `paper`: one federation of real processes with the multimodal network of the `paper` preset
  (3D DenseNet-121 on 64^3 crops, 11.3 M parameters), 2 sites of the default synthetic cohort
  with their first `--paper-patients` patients each (all training, no validation split; MRI
  preprocessing without N4 to keep the cold cache short: it does not change the round), 1 local
  epoch = one batch, 2 rounds. One train round is split into
  * local training (the ClientApp's `train_local`, slowest site),
  * site data and model set-up (reading the preprocessed cache, building the network),
  * serialisation: state_dict -> ArrayRecord at the site, plus Flower's encoding of the
    parameters into its content-addressed objects (chunking, SHA-256 ids) and the decoding, once
    per direction (measured here on the same parameters),
  * transport and Flower overhead: the rest of the server's wait (ClientApp process start and
    imports, the SuperNodes' polling, the HTTP transfer),
  * aggregation (the server step).
  Bytes per site and round: the parameters' payload each way (`bytes-down`, `bytes-up` in the
  results), Flower's encoded size, against 4 bytes x number of values.

    python tests/benchmarks/bench_fed_systems.py [--parts real simulation paper] [--sites 2 4 8]
        [--sim-sites 2 4 8 16] [--rounds 4] [--cohort /tmp/synth-default] [--paper-patients 6]
        [--data DIR] [--transfer-dtype float16] [--no-worker] [--smoke]

TCGA-BRCA: `--data DIR` or $STSFL_TCGA_BRCA, else the repository's tests/data/tcga_brca (brca.csv,
centers.csv, train_test_split.csv). `--smoke`: the real part with 2 sites and 2 rounds (what the
test suite runs, tests/integration/test_bench_fed_systems.py). Prints tables and writes
tests/benchmarks/results/fed_systems.json. Timings are noisy on a shared 2-core machine (the load
average at the end of each part is recorded).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from stsfl.client.lab.local_certs import make_local_certs, secured_site_yaml
from stsfl.client.lab.tcga_brca import N_REGIONS, write_region_sites
from stsfl.common.config import FederationConfig, SiteConfig, load_config
from stsfl.common.flower_procs import flower_bin, flower_env, free_port, spawn, toml_pairs
from stsfl.server.cli import run_federation, superlink_tls
from stsfl.server.federation.superlink import flwr_run_command, register_site_keys, start_superlink, write_connection

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO / "tests" / "data" / "tcga_brca"
NOOP_APP = Path(__file__).parent / "noop_app"
RESULTS = Path(__file__).parent / "results" / "fed_systems.json"
POLL_INTERVAL = 0.05
CONNECTION = "bench"
RUN_TIMEOUT_S = 1800


def region_site_yamls(data: Path, root: Path, n_sites: int) -> list[Path]:
    """n_sites site YAMLs over the six region tables (site k uses region k mod 6), each with its own
    state folder (sites that share a region table must not share their worker's socket)."""
    regions = write_region_sites(data, root / "regions")
    out = []
    for k in range(n_sites):
        region = regions[k % N_REGIONS]
        path = root / f"site_{k}.yaml"
        path.write_text(
            yaml.safe_dump(
                {"name": f"site_{k}", "root": str(region.parent / region.stem), "cache_dir": str(root / "state" / f"site_{k}")}
            ),
            encoding="utf-8",
        )
        out.append(path)
    return out


def write_federation(path: Path, sites: list[Path], body: dict, simulate: bool, security: dict | None = None) -> Path:
    names = [load_config(p, SiteConfig).name for p in sites]
    config = {"sites": names, "min_sites": len(sites), "round_timeout_s": 900, "wait_for_sites_s": 600, **body}
    if simulate:
        config["simulation"] = {"site_configs": {n: str(p) for n, p in zip(names, sites)}, "cpus": 2, "threads_per_site": 1}
    if security:
        config["security"] = security
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


class Loopback:
    """A SuperLink and one `sts-client` per site on loopback, secured as in production (TLS, the
    sites' keys registered); `noop_rounds` and `federation` run an app on them (`flwr run`)."""

    def __init__(self, workdir: Path, site_yamls: list[Path], worker: bool, env_extra: dict | None):
        self.workdir, self.worker = workdir, worker
        self.names = [load_config(p, SiteConfig).name for p in site_yamls]
        self.certs = make_local_certs(workdir / "certs", self.names)
        self.site_yamls = [
            secured_site_yaml(p, workdir / "secured" / f"{n}.yaml", self.certs.site_security(n))
            for p, n in zip(site_yamls, self.names)
        ]
        self.env = {**flower_env(workdir / "flwr-home", POLL_INTERVAL), **(env_extra or {})}
        self.port = free_port()

    @contextlib.contextmanager
    def running(self, config: Path) -> Iterator[Loopback]:
        """The SuperLink (its certificates from the federation YAML `config`) and the sites, stopped at the end."""
        tls = superlink_tls(load_config(config, FederationConfig), config)
        link = start_superlink("127.0.0.1", self.port, self.workdir / "superlink.log", self.env, tls=tls)
        clients = []
        try:
            write_connection(self.workdir / "flwr-home", CONNECTION, f"127.0.0.1:{self.port}", tls.ca_cert)
            register_site_keys(tls.site_keys, CONNECTION, self.env)
            for path in self.site_yamls:
                cmd = [
                    sys.executable,
                    "-m",
                    "stsfl.client.cli",
                    "--site",
                    str(path),
                    "--server",
                    f"127.0.0.1:{self.port}",
                    "--log-dir",
                    str(self.workdir / "logs"),
                    *([] if self.worker else ["--no-worker"]),
                ]
                clients.append(spawn("sts-client", cmd, self.workdir / "logs" / f"{path.stem}.out", self.env))
            yield self
        finally:
            for client in clients:
                client.stop()
            link.stop()

    def _flwr_run(self, cmd: list[str], name: str) -> None:
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            code = subprocess.run(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S).returncode
        if code != 0:
            raise RuntimeError(f"{name}: flwr run exited with {code}; see {log}")

    def noop_rounds(self, rounds: int, values: int = 40) -> list[float]:
        """Seconds per round of the no-op app on these SuperNodes (the floor)."""
        out = self.workdir / "noop.json"
        config = {"sites": len(self.names), "rounds": rounds, "values": values, "timeout-s": 900, "out": str(out)}
        self._flwr_run(
            [flower_bin("flwr"), "run", str(NOOP_APP), CONNECTION, "--run-config", toml_pairs(config), "--stream"], "noop"
        )
        return json.loads(out.read_text())["round_s"]

    def federation(self, config: Path) -> list[dict]:
        """Our app with the federation YAML `config`; returns rounds.jsonl."""
        results = self.workdir / "results"
        self._flwr_run(
            flwr_run_command(CONNECTION, {"federation-config": str(config), "results-dir": str(results), "resume": False}),
            "federation",
        )
        status = json.loads((results / "status.json").read_text())
        if status.get("phase") != "done":
            raise RuntimeError(f"the federation did not finish: {status}; see {results / 'server.log'}")
        return [json.loads(line) for line in (results / "rounds.jsonl").read_text().splitlines()]


def run_simulated(config: Path, workdir: Path) -> list[dict]:
    """The federation on Flower's simulation engine; returns rounds.jsonl."""
    results = workdir / "results"
    run_federation(config, results, simulate=True, task_poll_interval=POLL_INTERVAL, echo=lambda _: None)
    return [json.loads(line) for line in (results / "rounds.jsonl").read_text().splitlines()]


def round_summary(history: list[dict]) -> dict:
    """Per round: wall time, server wait, slowest site's local work, aggregation, bytes."""
    per_round = []
    for record in history:
        sites = record["train_sites"].values()
        local = [m["time-load-s"] + m["time-train-s"] + m["time-serialise-s"] for m in sites]
        per_round.append(
            {
                "round_s": record["time_round_s"],
                "server_wait_s": record["time_wait_s"],
                "local_work_s_max": max(local),
                "aggregate_s": record["time_aggregate_s"],
                "bytes_down_per_site": next(iter(sites))["bytes-down"],
                "bytes_up_per_site": next(iter(sites))["bytes-up"],
                "float32_bytes": record["float32_bytes"],
            }
        )
    # Steady state: not the first round (simulated sites' worker processes import torch and the task
    # then) nor the last (it also holds the evaluation phase).
    train_rounds = per_round[1:-1] or per_round[:-1] or per_round
    return {
        "rounds": per_round,
        "first_round_s": per_round[0]["round_s"],
        "median_train_round_s": float(np.median([r["round_s"] for r in train_rounds])),
        # the train message wave and the aggregation: what the no-op floor's round is compared with
        "median_train_phase_s": float(np.median([r["server_wait_s"] + r["aggregate_s"] for r in train_rounds])),
        "median_local_work_s": float(np.median([r["local_work_s_max"] for r in per_round])),
        "median_aggregate_s": float(np.median([r["aggregate_s"] for r in per_round])),
    }


def scaling(
    data: Path,
    site_counts: list[int],
    rounds: int,
    simulate: bool,
    work: Path | None,
    worker: bool = True,
    transfer_dtype: str = "float32",
) -> list[dict]:
    """Per site count: our linear-Cox round times (real processes: next to the no-op floor on the same processes)."""
    out = []
    for n in site_counts:
        workdir = Path(tempfile.mkdtemp(prefix=f"systems-{n}-", dir=work))  # kept when the run fails (its logs)
        yamls = region_site_yamls(data, workdir, n)
        body = {
            "name": f"systems-{n}",
            "task": "linear-cox",
            "rounds": rounds,
            "eval_every": rounds,
            "transfer_dtype": transfer_dtype,
            "train": {"epochs_per_round": 1, "lr": 0.5, "optimizer": "sgd"},
        }
        start = time.perf_counter()
        if simulate:
            history = run_simulated(write_federation(workdir / "federation.yaml", yamls, body, True), workdir)
            floor = {}
        else:
            loopback = Loopback(workdir, yamls, worker, None)
            config = write_federation(
                workdir / "federation.yaml", loopback.site_yamls, body, False, loopback.certs.federation_security()
            )
            with loopback.running(config):
                floor_rounds = loopback.noop_rounds(rounds)
                history = loopback.federation(config)
            floor = floor_summary(floor_rounds)
        summary = round_summary(history)
        if floor:
            ours = summary["median_train_phase_s"]
            floor.update(
                {
                    "ratio_to_floor": ours / floor["median_noop_round_s"],
                    "added_per_message_s": ours - floor["median_noop_round_s"],
                }
            )
        out.append(
            {
                "sites": n,
                "worker": worker,
                "transfer_dtype": transfer_dtype,
                "wall_s": time.perf_counter() - start,
                **summary,
                **floor,
            }
        )
        shutil.rmtree(workdir, ignore_errors=True)
        print(
            f"{'simulated' if simulate else 'real'} {n} sites: {summary['median_train_round_s']:.1f} s per round"
            + (f" (no-op floor {floor['median_noop_round_s']:.1f} s)" if floor else ""),
            flush=True,
        )
    return out


def floor_summary(noop_rounds: list[float]) -> dict:
    """The no-op app's rounds; steady state without its first round (each SuperNode installs the app then)."""
    return {"noop_rounds_s": noop_rounds, "median_noop_round_s": float(np.median(noop_rounds[1:] or noop_rounds))}


# ------------------------------------------------------------------------------------- paper round
def flower_codec_seconds(arrays: dict[str, np.ndarray], repeats: int = 3) -> dict:
    """Flower's encoding of a parameter record into its content-addressed objects and back:
    median seconds each way and the encoded bytes."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
    from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

    from stsfl.common.params import arrays_to_numpy, numpy_to_arrays

    encode, decode, size = [], [], 0
    for _ in range(repeats):
        record = numpy_to_arrays(arrays)
        t0 = time.perf_counter()
        contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(record).items()}
        t1 = time.perf_counter()
        back = arrays_to_numpy(inflate_object_from_contents(record.object_id, dict(contents)))
        t2 = time.perf_counter()
        assert all(np.array_equal(back[k], arrays[k]) for k in arrays)
        encode.append(t1 - t0)
        decode.append(t2 - t1)
        size = sum(len(b) for b in contents.values())
    return {"encode_s": float(np.median(encode)), "decode_s": float(np.median(decode)), "encoded_bytes": size}


def paper_round(cohort: Path, patients: int, workdir: Path, worker: bool = True) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_pipeline import first_patients

    from stsfl.client.data.site_prepare import prepare_site
    from stsfl.common.config import SiteConfig, load_config, load_preset, without_n4

    preset = without_n4(load_preset("paper"), name="paper-no-n4")
    preset_path = workdir / "paper-no-n4.yaml"
    preset_path.write_text(yaml.safe_dump(preset.model_dump(mode="json"), sort_keys=False))
    yamls = []
    for centre in sorted(cohort.glob("*/site.yaml"))[:2]:
        site_yaml = first_patients(centre, patients, workdir / "sites" / centre.parent.name)
        # the site's cache is filled here, so the federation's rounds read tensors (as they would after round 1)
        t0 = time.perf_counter()
        prepared = prepare_site(load_config(site_yaml, SiteConfig), site_yaml, preset, progress=False)
        print(
            f"paper preprocessing {centre.parent.name}: {len(prepared.patients)} patients in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        yamls.append(site_yaml)
    body = {
        "name": "systems-paper",
        "task": "multimodal",
        "preset": str(preset_path),
        "rounds": 2,
        "eval_every": 2,
        # one local epoch = one batch: min_steps_per_round would make it 32 steps of the 11 M-value network
        "train": {"epochs_per_round": 1, "lr": 0.01, "min_steps_per_round": 0},
        "validation_fraction": 0.0,
    }
    loopback = Loopback(workdir, yamls, worker, {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    config = write_federation(workdir / "federation.yaml", loopback.site_yamls, body, False, loopback.certs.federation_security())
    with loopback.running(config):
        history = loopback.federation(config)
    final = np.load(workdir / "results" / "model_final.npz")
    codec = flower_codec_seconds({k: final[k] for k in final.files})
    values = int(sum(final[k].size for k in final.files))
    rounds = []
    for record in history:
        sites = record["train_sites"]
        slowest = max(sites, key=lambda s: sites[s]["time-load-s"] + sites[s]["time-train-s"] + sites[s]["time-serialise-s"])
        m = sites[slowest]
        local = m["time-load-s"] + m["time-train-s"] + m["time-serialise-s"]
        serialise = m["time-serialise-s"] + 2 * (codec["encode_s"] + codec["decode_s"])
        rounds.append(
            {
                "round": record["round"],
                "server_wait_s": record["time_wait_s"],
                "local_training_s": m["time-train-s"],
                "site_setup_s": m["time-load-s"],
                "serialisation_s": serialise,
                "transport_and_flower_overhead_s": record["time_wait_s"] - local - 2 * (codec["encode_s"] + codec["decode_s"]),
                "aggregation_s": record["time_aggregate_s"],
                "train_phase_s": record["time_wait_s"] + record["time_aggregate_s"],
                "bytes_down_per_site": m["bytes-down"],
                "bytes_up_per_site": m["bytes-up"],
                "float32_bytes": record["float32_bytes"],
            }
        )
    return {
        "preset": "paper (N4 off)",
        "worker": worker,
        "sites": len(yamls),
        "patients_per_site": patients,
        "local_epochs": 1,
        "batch_size": preset.train.batch_size,
        "torch_threads_per_site": 1,
        "values": values,
        "flower_codec": codec,
        "rounds": rounds,
    }


# ------------------------------------------------------------------------------------- report
def scaling_table(title: str, results: list[dict]) -> Table:
    table = Table(title=title)
    for col in (
        "sites",
        "worker",
        "first round (s)",
        "train round (s)",
        "train phase (s)",
        "no-op floor (s)",
        "x floor",
        "local work (s)",
        "aggregation (s)",
        "bytes down/up per site",
        "float32 bytes",
        "wall (s)",
    ):
        table.add_column(col)
    for r in results:
        first = r["rounds"][0]
        floor = r.get("median_noop_round_s")
        table.add_row(
            str(r["sites"]),
            "yes" if r.get("worker", False) else "no",
            f"{r.get('first_round_s', first['round_s']):.1f}",
            f"{r['median_train_round_s']:.1f}",
            f"{r.get('median_train_phase_s', float('nan')):.2f}",
            "" if floor is None else f"{floor:.2f}",
            "" if floor is None else f"{r['ratio_to_floor']:.2f}",
            f"{r['median_local_work_s']:.3f}",
            f"{r['median_aggregate_s']:.4f}",
            f"{first['bytes_down_per_site']:.0f}/{first['bytes_up_per_site']:.0f}",
            f"{first['float32_bytes']:.0f}",
            f"{r.get('wall_s', float('nan')):.0f}",
        )
    return table


def paper_table(paper: dict) -> Table:
    table = Table(
        title=f"One train round, paper preset ({paper['values'] / 1e6:.2f} M values), {paper['sites']} real sites "
        f"x {paper['patients_per_site']} patients, 1 local epoch"
    )
    table.add_column("part")
    for r in paper["rounds"]:
        table.add_column(f"round {r['round']}")
    rows = [
        ("local training (s)", "local_training_s"),
        ("site data + model set-up (s)", "site_setup_s"),
        ("serialisation (s)", "serialisation_s"),
        ("transport + Flower overhead (s)", "transport_and_flower_overhead_s"),
        ("aggregation (s)", "aggregation_s"),
        ("train phase total (s)", "train_phase_s"),
    ]
    for label, key in rows:
        table.add_row(label, *[f"{r[key]:.2f}" for r in paper["rounds"]])
    table.add_row(
        "MB down / up per site",
        *[f"{r['bytes_down_per_site'] / 1e6:.2f} / {r['bytes_up_per_site'] / 1e6:.2f}" for r in paper["rounds"]],
    )
    table.add_row("float32 size (MB)", *[f"{r['float32_bytes'] / 1e6:.2f}" for r in paper["rounds"]])
    table.add_row(
        "Flower-encoded MB per direction",
        f"{paper['flower_codec']['encoded_bytes'] / 1e6:.2f}",
        *[""] * (len(paper["rounds"]) - 1),
    )
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["real", "simulation", "paper"], choices=["real", "simulation", "paper"])
    parser.add_argument("--sites", type=int, nargs="+", default=[2, 4, 8], help="real-process federations")
    parser.add_argument("--sim-sites", type=int, nargs="+", default=[2, 4, 8, 16], help="simulated federations")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per federation (the first and last are not steady state)")
    parser.add_argument("--cohort", type=Path, default=Path("/tmp/synth-default"), help="synthetic cohort for the paper round")
    parser.add_argument("--paper-patients", type=int, default=6)
    parser.add_argument("--work", type=Path, help="parent of the temporary work folders (default: the system's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("STSFL_TCGA_BRCA", DEFAULT_DATA)),
        help="TCGA-BRCA folder (brca.csv, centers.csv, train_test_split.csv); default $STSFL_TCGA_BRCA or tests/data/tcga_brca",
    )
    parser.add_argument(
        "--no-worker",
        dest="worker",
        action="store_false",
        help="sts-client without its site worker: each message in its own ClientApp process",
    )
    parser.add_argument("--transfer-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--smoke", action="store_true", help="the real part only, 2 sites, 2 rounds (the test suite's run)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.parts, args.sites, args.rounds = ["real"], [2], 2
    if not (args.data / "brca.csv").is_file() and {"real", "simulation"} & set(args.parts):
        sys.exit(f"TCGA-BRCA data not found at {args.data} (give --data DIR or set STSFL_TCGA_BRCA)")
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if "results" in previous:  # the first version of this file held only the real-process part
        previous["real_processes"] = {"task": "linear-cox (40 float32 values)", "results": previous.pop("results")}
    report = {
        "cpu_count": os.cpu_count(),
        **{k: previous[k] for k in ("real_processes", "simulation", "paper_round") if k in previous},
    }
    console = Console()
    stamp = lambda: {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_avg_1m": os.getloadavg()[0]}  # noqa: E731
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save = lambda: args.out.write_text(json.dumps(report, indent=2) + "\n")  # noqa: E731 - after every part
    if "paper" in args.parts:
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            report["paper_round"] = {**paper_round(args.cohort, args.paper_patients, Path(tmp), args.worker), **stamp()}
        save()
    if "simulation" in args.parts:
        report["simulation"] = {
            "task": "linear-cox (40 float32 values)",
            "cpus": 2,
            "threads_per_site": 1,
            "results": scaling(args.data, args.sim_sites, args.rounds, True, args.work, transfer_dtype=args.transfer_dtype),
            **stamp(),
        }
        save()
    if "real" in args.parts:
        report["real_processes"] = {
            "task": "linear-cox (40 float32 values)",
            "results": scaling(args.data, args.sites, args.rounds, False, args.work, args.worker, args.transfer_dtype),
            **stamp(),
        }
        save()
    for key, title in (
        ("real_processes", "Loopback federation (real processes), linear Cox"),
        ("simulation", "Simulated federation (Flower simulation engine, 2 CPUs), linear Cox"),
    ):
        if key in report:
            console.print(scaling_table(title, report[key]["results"]))
    if "paper_round" in report:
        console.print(paper_table(report["paper_round"]))


if __name__ == "__main__":
    main()

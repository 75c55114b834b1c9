"""Systems figures of the federation: round time as sites are added, one `paper`-preset round split
into its parts, bytes per site and round against the float32 size of the parameters.

Three parts (`--parts`, each rewrites its own entry of the JSON and keeps the others):

- `real`: a SuperLink (`sts-server`'s `run_federation`) and N `sts-client` processes on loopback
  (default N = 2, 4, 8), the clinical-only linear Cox task on TCGA-BRCA region tables (regions
  are reused under new site names beyond six), a few rounds;
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
        [--sim-sites 2 4 8 16] [--rounds 3] [--cohort /tmp/synth-default] [--paper-patients 6]

Prints tables and writes tests/benchmarks/results/fed_systems.json. Timings are noisy on a shared
2-core machine (the load average at the end of each part is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from stsfl.client.tcga_brca import N_REGIONS, write_region_sites
from stsfl.common.flower_procs import flower_env, free_port, spawn
from stsfl.server.cli import run_federation

REPO = Path(__file__).resolve().parents[2]
DATA = next((p / "shared" / "data" / "tcga_brca" for p in REPO.parents if (p / "shared" / "data" / "tcga_brca").is_dir()), None)
RESULTS = Path(__file__).parent / "results" / "fed_systems.json"
POLL_INTERVAL = 0.05


def region_site_yamls(root: Path, n_sites: int) -> list[Path]:
    """n_sites site YAMLs over the six region tables (site k uses region k mod 6)."""
    regions = write_region_sites(DATA, root / "regions")
    out = []
    for k in range(n_sites):
        region = regions[k % N_REGIONS]
        path = root / f"site_{k}.yaml"
        path.write_text(f"name: site_{k}\nroot: {region.parent / region.stem}\n", encoding="utf-8")
        out.append(path)
    return out


def write_federation(path: Path, sites: list[Path], body: dict, simulate: bool) -> Path:
    from stsfl.common.config import SiteConfig, load_config

    names = [load_config(p, SiteConfig).name for p in sites]
    config = {"sites": names, "min_sites": len(sites), "round_timeout_s": 900, "wait_for_sites_s": 600, **body}
    if simulate:
        config["simulation"] = {"site_configs": {n: str(p) for n, p in zip(names, sites)}, "cpus": 2, "threads_per_site": 1}
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run(config: Path, site_yamls: list[Path], workdir: Path, simulate: bool, env_extra: dict | None = None) -> list[dict]:
    """Run the federation (real `sts-client` processes unless `simulate`); returns rounds.jsonl."""
    results = workdir / "results"
    if simulate:
        run_federation(config, results, simulate=True, task_poll_interval=POLL_INTERVAL, echo=lambda _: None)
    else:
        port = free_port()
        env = {**flower_env(workdir / "flwr-home", POLL_INTERVAL), **(env_extra or {})}
        clients = [
            spawn("sts-client", [sys.executable, "-m", "stsfl.client.cli", "--site", str(y), "--server", f"127.0.0.1:{port}",
                                 "--log-dir", str(workdir / "logs")], workdir / "logs" / f"{y.stem}.out", env)
            for y in site_yamls
        ]
        try:
            run_federation(config, results, port=port, task_poll_interval=POLL_INTERVAL, echo=lambda _: None)
        finally:
            for client in clients:
                client.stop()
    return [json.loads(line) for line in (results / "rounds.jsonl").read_text().splitlines()]


def round_summary(history: list[dict]) -> dict:
    """Per round: wall time, server wait, slowest site's local work, aggregation, bytes."""
    per_round = []
    for record in history:
        sites = record["train_sites"].values()
        local = [m["time-load-s"] + m["time-train-s"] + m["time-serialise-s"] for m in sites]
        per_round.append({
            "round_s": record["time_round_s"],
            "server_wait_s": record["time_wait_s"],
            "local_work_s_max": max(local),
            "aggregate_s": record["time_aggregate_s"],
            "bytes_down_per_site": next(iter(sites))["bytes-down"],
            "bytes_up_per_site": next(iter(sites))["bytes-up"],
            "float32_bytes": record["float32_bytes"],
        })
    # Steady state: not the first round (simulated sites' worker processes import torch and the task
    # then) nor the last (it also holds the evaluation phase).
    train_rounds = per_round[1:-1] or per_round[:-1] or per_round
    return {
        "rounds": per_round,
        "first_round_s": per_round[0]["round_s"],
        "median_train_round_s": float(np.median([r["round_s"] for r in train_rounds])),
        "median_local_work_s": float(np.median([r["local_work_s_max"] for r in per_round])),
        "median_aggregate_s": float(np.median([r["aggregate_s"] for r in per_round])),
    }


def scaling(site_counts: list[int], rounds: int, simulate: bool, work: Path | None) -> list[dict]:
    out = []
    for n in site_counts:
        workdir = Path(tempfile.mkdtemp(prefix=f"systems-{n}-", dir=work))  # kept when the run fails (its logs)
        yamls = region_site_yamls(workdir, n)
        body = {"name": f"systems-{n}", "task": "linear-cox", "rounds": rounds, "eval_every": rounds, "local_epochs": 1,
                "learning_rate": 0.5, "client_optimizer": "sgd"}
        config = write_federation(workdir / "federation.yaml", yamls, body, simulate)
        start = time.perf_counter()
        history = run(config, yamls, workdir, simulate)
        out.append({"sites": n, "wall_s": time.perf_counter() - start, **round_summary(history)})
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"{'simulated' if simulate else 'real'} {n} sites: {out[-1]['median_train_round_s']:.1f} s per round", flush=True)
    return out


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


def paper_round(cohort: Path, patients: int, workdir: Path) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_pipeline import first_patients

    from stsfl.client.site_prepare import prepare_site
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
        print(f"paper preprocessing {centre.parent.name}: {len(prepared.patients)} patients in {time.perf_counter() - t0:.0f} s", flush=True)
        yamls.append(site_yaml)
    body = {"name": "systems-paper", "task": "multimodal", "preset": str(preset_path), "rounds": 2, "eval_every": 2,
            "local_epochs": 1, "learning_rate": 0.01, "validation_fraction": 0.0}
    config = write_federation(workdir / "federation.yaml", yamls, body, simulate=False)
    history = run(config, yamls, workdir, simulate=False, env_extra={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
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
        rounds.append({
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
        })
    return {"preset": "paper (N4 off)", "sites": len(yamls), "patients_per_site": patients, "local_epochs": 1,
            "batch_size": preset.train.batch_size, "torch_threads_per_site": 1, "values": values,
            "flower_codec": codec, "rounds": rounds}


# ------------------------------------------------------------------------------------- report
def scaling_table(title: str, results: list[dict]) -> Table:
    table = Table(title=title)
    for col in ("sites", "first round (s)", "train round (s)", "local work (s)", "aggregation (s)", "bytes down/up per site", "float32 bytes", "wall (s)"):
        table.add_column(col)
    for r in results:
        first = r["rounds"][0]
        table.add_row(str(r["sites"]), f"{r.get('first_round_s', r['rounds'][0]['round_s']):.1f}", f"{r['median_train_round_s']:.1f}", f"{r['median_local_work_s']:.3f}",
                      f"{r['median_aggregate_s']:.4f}", f"{first['bytes_down_per_site']:.0f}/{first['bytes_up_per_site']:.0f}",
                      f"{first['float32_bytes']:.0f}", f"{r.get('wall_s', float('nan')):.0f}")
    return table


def paper_table(paper: dict) -> Table:
    table = Table(title=f"One train round, paper preset ({paper['values'] / 1e6:.2f} M values), {paper['sites']} real sites "
                        f"x {paper['patients_per_site']} patients, 1 local epoch")
    table.add_column("part")
    for r in paper["rounds"]:
        table.add_column(f"round {r['round']}")
    rows = [("local training (s)", "local_training_s"), ("site data + model set-up (s)", "site_setup_s"),
            ("serialisation (s)", "serialisation_s"), ("transport + Flower overhead (s)", "transport_and_flower_overhead_s"),
            ("aggregation (s)", "aggregation_s"), ("train phase total (s)", "train_phase_s")]
    for label, key in rows:
        table.add_row(label, *[f"{r[key]:.2f}" for r in paper["rounds"]])
    table.add_row("MB down / up per site", *[f"{r['bytes_down_per_site'] / 1e6:.2f} / {r['bytes_up_per_site'] / 1e6:.2f}" for r in paper["rounds"]])
    table.add_row("float32 size (MB)", *[f"{r['float32_bytes'] / 1e6:.2f}" for r in paper["rounds"]])
    table.add_row("Flower-encoded MB per direction", f"{paper['flower_codec']['encoded_bytes'] / 1e6:.2f}", *[""] * (len(paper["rounds"]) - 1))
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
    args = parser.parse_args(argv)
    if DATA is None and {"real", "simulation"} & set(args.parts):
        sys.exit("TCGA-BRCA data not found (expected ../shared/data/tcga_brca next to the checkout)")
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if "results" in previous:  # the first version of this file held only the real-process part
        previous["real_processes"] = {"task": "linear-cox (40 float32 values)", "results": previous.pop("results")}
    report = {"cpu_count": os.cpu_count(), **{k: previous[k] for k in ("real_processes", "simulation", "paper_round") if k in previous}}
    console = Console()
    stamp = lambda: {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_avg_1m": os.getloadavg()[0]}  # noqa: E731
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save = lambda: args.out.write_text(json.dumps(report, indent=2) + "\n")  # noqa: E731 - after every part
    if "paper" in args.parts:
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            report["paper_round"] = {**paper_round(args.cohort, args.paper_patients, Path(tmp)), **stamp()}
        save()
    if "simulation" in args.parts:
        report["simulation"] = {"task": "linear-cox (40 float32 values)", "cpus": 2, "threads_per_site": 1,
                                "results": scaling(args.sim_sites, args.rounds, True, args.work), **stamp()}
        save()
    if "real" in args.parts:
        report["real_processes"] = {"task": "linear-cox (40 float32 values)", "results": scaling(args.sites, args.rounds, False, args.work), **stamp()}
        save()
    for key, title in (("real_processes", "Loopback federation (real processes), linear Cox"),
                       ("simulation", "Simulated federation (Flower simulation engine, 2 CPUs), linear Cox")):
        if key in report:
            console.print(scaling_table(title, report[key]["results"]))
    if "paper_round" in report:
        console.print(paper_table(report["paper_round"]))


if __name__ == "__main__":
    main()

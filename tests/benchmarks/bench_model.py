"""Training-step time and peak memory of the multimodal Cox network on this machine.

One optimiser step = forward of all heads, blended Cox loss, backward, clipping, SGD (Nesterov).
Each configuration runs in a fresh subprocess so its peak resident memory is its own:
`peak_rss_delta_mb` = ru_maxrss after the timed steps minus ru_maxrss once model and batch exist
(i.e. the activations, gradients and optimiser state of training), `peak_rss_mb` the process peak.

    python tests/benchmarks/bench_model.py [--steps 3] [--device cpu]
writes tests/benchmarks/results/model.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = [("cpu-small", 24), ("paper", 64), ("paper", 96)]
RESULTS = Path(__file__).parent / "results" / "model.json"
N_CLINICAL, N_ENDPOINTS, N_TILES = 11, 2, 256


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_one(preset_name: str, size: int, steps: int, batch_size: int, device: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)

    from stsfl.client.training.trainer import accumulate_chunk_gradients
    from stsfl.common.batch import PatientSample, collate_patients
    from stsfl.common.config import TrainConfig, load_preset
    from stsfl.tasks.multimodal.model import MultimodalCoxNet

    base = load_preset(preset_name)
    preset = base.model_copy(update={"mri": base.mri.model_copy(update={"input_size": (size, size, size)})})
    torch.manual_seed(0)
    model = MultimodalCoxNet(preset, N_CLINICAL, N_ENDPOINTS).to(device).train()
    g = torch.Generator().manual_seed(0)
    samples = [
        PatientSample(
            pid=f"p{i}",
            clinical=torch.randn(N_CLINICAL, generator=g),
            time=torch.randint(30, 3000, (N_ENDPOINTS,), generator=g).float(),
            event=torch.ones(N_ENDPOINTS),
            endpoint_observed=torch.ones(N_ENDPOINTS, dtype=torch.bool),
            mri=torch.randn(2, size, size, size, generator=g),
            wsi=torch.randn(N_TILES, preset.wsi.embed_dim, generator=g),
        )
        for i in range(batch_size)
    ]
    batch = collate_patients(samples, (size, size, size), preset.wsi.embed_dim).to(device)
    cfg = TrainConfig(batch_size=batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    weights = {h: 1 / len(model.head_names) for h in model.head_names}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step() -> None:
        accumulate_chunk_gradients(model, [batch], weights, cfg)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    rss_ready = _max_rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    step()  # warm-up (allocator, optimiser state)
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    result = {
        "preset": preset_name,
        "input": f"{size}^3",
        "batch": batch_size,
        "device": device,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "step_s_median": round(sorted(times)[len(times) // 2], 3),
        "step_s_all": [round(t, 3) for t in times],
        "peak_rss_mb": round(_max_rss_mb(), 1),
        "peak_rss_delta_mb": round(_max_rss_mb() - rss_ready, 1),
        "torch_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    # One intra-op thread by default: on 2 cores shared with other jobs, 2 threads made the small
    # preset's step ~50x slower (threads waiting on each other), which measures the machine, not the model.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", nargs=2, metavar=("PRESET", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.steps, args.batch, args.device, args.threads)))
        return

    from rich.console import Console
    from rich.table import Table

    rows = []
    for preset_name, size in CONFIGS:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            preset_name,
            str(size),
            "--steps",
            str(args.steps),
            "--batch",
            str(args.batch),
            "--device",
            args.device,
            "--threads",
            str(args.threads),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr)
    table = Table(title=f"training step, batch {args.batch}, {args.device}, {args.threads} thread(s) ({os.cpu_count()} cores)")
    for col in ("preset", "input", "params (M)", "step (s, median)", "peak RSS (MB)", "training RSS delta (MB)"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["preset"],
            r["input"],
            str(r["params_m"]),
            str(r["step_s_median"]),
            str(r["peak_rss_mb"]),
            str(r["peak_rss_delta_mb"]),
        )
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "load_avg_1m_at_end": os.getloadavg()[0],
        "memory_measure": "resource.getrusage(RUSAGE_SELF).ru_maxrss of a fresh process per configuration",
        "network": f"MultimodalCoxNet, all heads, MRI + WSI ({N_TILES} tiles) + clinical ({N_CLINICAL})",
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

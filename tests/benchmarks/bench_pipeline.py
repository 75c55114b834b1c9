"""Benchmark of the site data pipeline on a synthetic cohort (default: `stsfl synth --out DIR`).

    python tests/benchmarks/bench_pipeline.py --cohort /tmp/synth-default [--preset paper] [--sites 1]

Measures, with the preset's preprocessing settings:
- cold preprocessing (empty cache): MRI volumes per second and the share of MRI time in N4,
  WSI tiles per second;
- warm loading (cache filled): per-patient load time (>= 10x faster than cold is the target) and
  the DataLoader's time per batch (with training augmentation) against one training step of a
  MultimodalCoxNet (MONAI 3D DenseNet + attention MIL + clinical MLP, Cox losses of every head)
  of the cpu-small and paper presets, so an epoch is not data-bound;
- WSI: tiles per second read + encoded by the pipeline against OpenSlide's raw read_region rate
  for the same tiles on the same slide (the ceiling).
Prints a rich table and writes tests/benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import torch
import yaml
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from stsfl.client.data.site_dataset import SiteDataset, site_collate
from stsfl.client.data.site_prepare import prepare_site
from stsfl.client.slides.patch_encoder import PatchEncoder
from stsfl.client.slides.wsi_bag import slide_bag
from stsfl.client.slides.wsi_tiles import TileReader, open_slide
from stsfl.common.batch import PatientSample
from stsfl.common.clinical_features import clinical_dim
from stsfl.common.config import ModelPreset, SiteConfig, load_config, load_preset, load_schema
from stsfl.common.head_losses import blended_loss, head_losses
from stsfl.tasks.multimodal.model import MultimodalCoxNet

RESULTS = Path(__file__).parent / "results" / "pipeline.json"
console = Console()


def site_yamls(cohort: Path, limit: int | None) -> list[Path]:
    found = sorted(cohort.glob("*/site.yaml"))
    if not found:
        raise SystemExit(f"no <centre>/site.yaml under {cohort}: generate a cohort with `stsfl synth --out {cohort}`")
    return found[:limit] if limit else found


def first_patients(site_yaml: Path, n: int, into: Path) -> Path:
    """A site folder with the first n patients of `site_yaml`'s site (CSV rows; images symlinked)."""
    site = load_config(site_yaml, SiteConfig)
    root = site.root_dir(site_yaml)
    frame = pd.read_csv(root / site.layout.clinical_csv, dtype=str, keep_default_na=False).head(n)
    into.mkdir(parents=True)
    frame.to_csv(into / "clinical.csv", index=False)
    for sub in (site.layout.mri_dir, site.layout.wsi_dir):
        (into / sub).mkdir()
        for path in (root / sub).iterdir():
            if path.name.split(".")[0] in set(frame["patient_id"]):
                (into / sub / path.name).symlink_to(path)
    (into / "site.yaml").write_text(yaml.safe_dump({"name": site.name, "root": str(into)}))
    return into / "site.yaml"


def cold_and_warm(yamls: list[Path], preset: ModelPreset, cache_root: Path) -> tuple[dict, list]:
    """Prepare every site twice into a fresh cache: cold (decode everything) then warm."""
    cold = {"seconds": {}, "mri": 0, "wsi": 0, "wsi_tiles": 0, "patients": 0}
    warm_s = 0.0
    prepared = []
    for y in yamls:
        site = load_config(y, SiteConfig)
        cache = cache_root / site.name
        start = time.perf_counter()
        p = prepare_site(site, y, preset, cache_dir=cache)
        cold["wall_s"] = cold.get("wall_s", 0.0) + time.perf_counter() - start
        for k, v in p.seconds.items():
            cold["seconds"][k] = cold["seconds"].get(k, 0.0) + v
        for k in ("mri", "wsi", "wsi_tiles"):
            cold[k] += p.computed.get(k, 0)
        cold["patients"] += len(p.patients)
        start = time.perf_counter()
        prepared.append(prepare_site(site, y, preset, cache_dir=cache, progress=False))
        warm_s += time.perf_counter() - start
    cold["warm_prepare_s"] = warm_s
    return cold, prepared


def loader_time(prepared, preset: ModelPreset, batch_size: int, train: bool) -> dict:
    """Seconds per patient and per batch of a DataLoader over the cached site (main process)."""
    n = 0
    start = time.perf_counter()
    for p in prepared:
        ds = SiteDataset(p, train=train)
        for batch in DataLoader(ds, batch_size=batch_size, collate_fn=site_collate(preset), num_workers=0):
            n += len(batch)
    elapsed = time.perf_counter() - start
    return {"patients": n, "s_per_patient": elapsed / max(n, 1), "s_per_batch": elapsed / max(n, 1) * batch_size}


def train_step_time(preset: ModelPreset, batch_size: int, steps: int = 3) -> float:
    """Seconds per SGD step (forward, Cox losses of every head, backward, step) of the
    MultimodalCoxNet of the preset on a full batch (every modality present, max_tiles tiles)."""
    schema = load_schema()
    k = len(schema.endpoints)
    gen = torch.Generator().manual_seed(0)
    samples = [
        PatientSample(
            pid=f"p{i}",
            clinical=torch.randn(clinical_dim(schema), generator=gen),
            time=torch.rand(k, generator=gen) * 1000 + 1,
            event=(torch.rand(k, generator=gen) < 0.5).float(),
            endpoint_observed=torch.ones(k, dtype=torch.bool),
            mri=torch.randn(2, *preset.mri.input_size, generator=gen),
            wsi=torch.randn(preset.preprocessing.wsi.max_tiles, preset.wsi.embed_dim, generator=gen),
        )
        for i in range(batch_size)
    ]
    batch = site_collate(preset)(samples)
    net = MultimodalCoxNet(preset, clinical_dim(schema), k)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    weights = {head: 1.0 / len(net.head_names) for head in net.head_names}
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        opt.zero_grad()
        blended_loss(head_losses(net(batch), batch), weights).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def wsi_rates(slide_path: Path, preset: ModelPreset, max_tiles: int) -> dict:
    """Pipeline tiles/s (read + encode, tissue detection excluded) vs raw read_region on the same tiles."""
    cfg = preset.preprocessing.wsi.model_copy(update={"max_tiles": max_tiles})
    encoder = PatchEncoder(cfg, preset.wsi.embed_dim)
    result = slide_bag(slide_path, cfg, encoder)
    n = len(result.bag)
    slide = open_slide(slide_path)
    reader = TileReader.for_slide(slide, slide_path, cfg)
    start = time.perf_counter()
    for xy in result.coords:
        slide.read_region((int(xy[0]), int(xy[1])), reader.level, (reader.read_px, reader.read_px))
    raw_s = time.perf_counter() - start
    slide.close()
    # measured after the raw reads, so both see OpenSlide's tile cache equally warm
    again = slide_bag(slide_path, cfg, encoder)
    pipe_s = again.seconds["read"] + again.seconds["encode"]
    return {
        "slide": str(slide_path),
        "tiles": n,
        "tissue_tiles": result.n_tissue_tiles,
        "read_level": reader.level,
        "read_px": reader.read_px,
        "tile_size": cfg.tile_size,
        "mpp": cfg.mpp,
        "encoder": cfg.encoder.arch,
        "pipeline_tiles_per_s": n / pipe_s,
        "pipeline_read_only_tiles_per_s": n / again.seconds["read"],
        "encode_only_tiles_per_s": n / again.seconds["encode"],
        "raw_read_region_tiles_per_s": n / raw_s,
        "tissue_detection_s": again.seconds["tissue"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, default=Path("/tmp/synth-default"))
    parser.add_argument("--preset", default="paper", help="preset whose preprocessing is measured")
    parser.add_argument("--sites", type=int, default=None, help="only the first N centres")
    parser.add_argument("--patients", type=int, default=None, help="only the first N patients of each centre")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--wsi-tiles", type=int, default=256, help="tiles of the WSI rate measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    preset = load_preset(args.preset)
    yamls = site_yamls(args.cohort, args.sites)
    cache_root = Path(tempfile.mkdtemp(prefix="bench-pipeline-cache-"))
    if args.patients:
        yamls = [first_patients(y, args.patients, cache_root / "sites" / y.parent.name) for y in yamls]
    try:
        cold, prepared = cold_and_warm(yamls, preset, cache_root)
        warm_eval = loader_time(prepared, preset, args.batch_size, train=False)
        warm_train = loader_time(prepared, preset, args.batch_size, train=True)
        sec = cold["seconds"]
        slides = sorted((p.resolve() for y in yamls for p in (y.parent / "wsi").glob("*")), key=lambda p: p.stat().st_size)
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
    mri_s = sum(v for k, v in sec.items() if k.startswith("mri_"))
    wsi_s = sum(v for k, v in sec.items() if k.startswith("wsi_"))
    cold_per_patient = (mri_s + wsi_s) / max(cold["patients"], 1)
    steps = {name: train_step_time(load_preset(name), args.batch_size) for name in ("cpu-small", "paper")}

    wsi = wsi_rates(slides[-1], preset, args.wsi_tiles) if slides else None

    figures = {
        "cohort": str(args.cohort),
        "sites": [y.parent.name for y in yamls],
        "patients_per_site_limit": args.patients,
        "preset": args.preset,
        "mri_input_size": list(preset.mri.input_size),
        "batch_size": args.batch_size,
        "cold": {
            "patients": cold["patients"],
            "mri_volumes": cold["mri"],
            "mri_volumes_per_s": cold["mri"] / mri_s if mri_s else None,
            "mri_n4_share": sec.get("mri_n4", 0.0) / mri_s if mri_s else None,
            "mri_seconds_by_step": {k: v for k, v in sec.items() if k.startswith("mri_")},
            "wsi_slides": cold["wsi"],
            "wsi_tiles": cold["wsi_tiles"],
            "wsi_tiles_per_s": cold["wsi_tiles"] / wsi_s if wsi_s else None,
            "s_per_patient": cold_per_patient,
            "wall_s": cold["wall_s"],
        },
        "warm": {
            "prepare_s": cold["warm_prepare_s"],
            "s_per_patient": warm_eval["s_per_patient"],
            "speedup_vs_cold": cold_per_patient / warm_eval["s_per_patient"],
            "train_loader_s_per_batch": warm_train["s_per_batch"],
            "eval_loader_s_per_batch": warm_eval["s_per_batch"],
        },
        "train_step_s": steps,
        "loader_share_of_step": {name: warm_train["s_per_batch"] / s for name, s in steps.items()},
        "wsi": wsi,
        "machine": {
            "cpus_visible": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "openslide": openslide.__library_version__,
            "note": "2 CPU cores shared with 4 other agents working at the same time: timings are noisy, ratios matter more than absolutes",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print_table(figures)
    console.print(f"wrote {args.out}")


def print_table(f: dict) -> None:
    t = Table(title=f"Site data pipeline ({f['preset']} preprocessing, cohort {f['cohort']})")
    t.add_column("measure")
    t.add_column("value", justify="right")
    c, w = f["cold"], f["warm"]
    rows = [
        ("cold: MRI volumes / s", f"{c['mri_volumes_per_s']:.2f}" if c["mri_volumes_per_s"] else "-"),
        ("cold: share of MRI time in N4", f"{c['mri_n4_share']:.0%}" if c["mri_n4_share"] is not None else "-"),
        ("cold: WSI tiles / s (read + encode)", f"{c['wsi_tiles_per_s']:.1f}" if c["wsi_tiles_per_s"] else "-"),
        ("cold: s per patient", f"{c['s_per_patient']:.3f}"),
        ("warm: s per patient (cache)", f"{w['s_per_patient']:.4f}"),
        ("warm: speed-up vs cold", f"{w['speedup_vs_cold']:.0f}x"),
        ("warm: train loader s / batch", f"{w['train_loader_s_per_batch']:.3f}"),
    ]
    rows += [(f"train step s / batch ({name})", f"{s:.3f}") for name, s in f["train_step_s"].items()]
    rows += [(f"loader / step ({name})", f"{r:.1%}") for name, r in f["loader_share_of_step"].items()]
    if f["wsi"]:
        x = f["wsi"]
        rows += [
            ("WSI: pipeline tiles / s (read + encode)", f"{x['pipeline_tiles_per_s']:.1f}"),
            ("WSI: pipeline read only tiles / s", f"{x['pipeline_read_only_tiles_per_s']:.1f}"),
            ("WSI: encode only tiles / s", f"{x['encode_only_tiles_per_s']:.1f}"),
            ("WSI: OpenSlide raw read_region tiles / s", f"{x['raw_read_region_tiles_per_s']:.1f}"),
        ]
    for r in rows:
        t.add_row(*r)
    console.print(t)


if __name__ == "__main__":
    main()

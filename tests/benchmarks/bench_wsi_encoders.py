"""Tile encoders on this CPU, and whether the WSI branch learns the slide signal with them.

1. Throughput: tiles per second of each encoder (morphometry; today's seeded ResNet-10; a
   ResNet-10 with the morphometry appended; ViT-S/B/L/16 at 224 px) next to OpenSlide's raw read
   rate of the same tiles, on one synthetic slide.
2. Signal, on a WSI-only copy of the default synthetic cohort (configs/synth.yaml with no MRI:
   the same patients, slides and outcomes; generated into --work unless there): per encoder, cold
   and cached preprocessing seconds per slide; a WSI-only network (cpu-small's network and
   training, bags standardised with the training centres' tile statistics, as a federation does)
   trained on the other centres, and at the held-out centre Spearman's rho between its log-risk
   and the true WSI part of the hazard (ground_truth.csv os_wsi / dm_wsi) and Harrell's C with a
   percentile-bootstrap interval.

    python tests/benchmarks/bench_wsi_encoders.py [--work DIR] [--holdout center_3] [--skip-signal]
writes tests/benchmarks/results/wsi_encoders.json and prints both tables.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "wsi_encoders.json"
ENDPOINTS = ("os", "dm")


def encoder_variants(preset):
    """name -> (WsiPreprocessingConfig, embed_dim): the default, today's random CNN, and the others."""
    wsi = preset.preprocessing.wsi
    today = wsi.model_copy(
        update={"mpp": 2.0, "tile_size": 64, "encoder": wsi.encoder.model_copy(update={"arch": "resnet10", "seed": 0})}
    )

    def net(arch, width, **extra):
        return wsi.model_copy(update={"encoder": wsi.encoder.model_copy(update={"arch": arch, **extra})}), width

    return {
        "morphometry (default)": (wsi, 16),
        "resnet10 random, 2.0 um/px x 64 (before)": (today, 32),
        "resnet10 random + morphometry": net("resnet10", 32, add_morphometry=True),
        "vit_small_patch16 @224": net("vit_small_patch16", 384, input_size=224),
        "vit_base_patch16 @224": net("vit_base_patch16", 768, input_size=224),
        "vit_large_patch16 @224": net("vit_large_patch16", 1024, input_size=224),
    }


def throughput(preset, folder: Path, n_tiles: int) -> list[dict]:
    """Tiles/s of reading (OpenSlide) and of encoding, per encoder, on one synthetic slide."""
    from stsfl.client.lab.synthetic import SynthConfig
    from stsfl.client.lab.synthetic.writer import write_slide
    from stsfl.client.lab.synthetic.wsi import render_slide
    from stsfl.client.slides.patch_encoder import PatchEncoder
    from stsfl.client.slides.wsi_tiles import TileReader, open_slide, slide_mpp, tissue_map, tissue_tiles

    config = SynthConfig()
    rgb, _ = render_slide(np.random.default_rng(0), config.wsi, config.profiles[0], 150.0)
    path = folder / "slide.tiff"
    write_slide(rgb, path, config.wsi)
    rows = []
    for name, (cfg, width) in encoder_variants(preset).items():
        slide = open_slide(path)
        tile0 = cfg.tile_size * cfg.mpp / slide_mpp(slide, path)
        coords = tissue_tiles(tissue_map(slide, tile0, cfg), slide.dimensions, tile0, cfg.tissue_threshold)
        coords = np.resize(coords, (n_tiles if "large" not in name else max(8, n_tiles // 4), 2))
        reader = TileReader.for_slide(slide, path, cfg)
        t0 = time.perf_counter()
        tiles = np.stack([reader.read(xy) for xy in coords])
        read_s = time.perf_counter() - t0
        slide.close()
        encoder = PatchEncoder(cfg, width)
        encoder.encode(tiles[:2])  # first-call set-up is not throughput
        t0 = time.perf_counter()
        encoder.encode(tiles)
        encode_s = time.perf_counter() - t0
        rows.append(
            {
                "encoder": name,
                "mpp": cfg.mpp,
                "tile_px": cfg.tile_size,
                "embed_dim": width,
                "tiles": len(tiles),
                "read_tiles_per_s": len(tiles) / read_s,
                "encode_tiles_per_s": len(tiles) / encode_s,
            }
        )
    return rows


def wsi_only_cohort(work: Path) -> Path:
    """The default cohort's centres without MRI (per-patient random streams: same slides and outcomes)."""
    from stsfl.client.lab.synthetic import generate_cohort, load_synth_config

    cohort = work / "cohort"
    if (cohort / "ground_truth.csv").exists():
        return cohort
    config = load_synth_config()
    config = config.model_copy(update={"profiles": tuple(p.model_copy(update={"missing_mri": 1.0}) for p in config.profiles)})
    generate_cohort(config, cohort)
    return cohort


def prepare(site_yamls, preset, cache_root: Path) -> tuple[list, dict]:
    """Prepared centres (cold, then cached again) and the seconds per slide of both passes."""
    from stsfl.client.data.site_prepare import prepare_site
    from stsfl.common.config import SiteConfig, load_config

    timings = {}
    for label in ("cold", "cached"):
        t0 = time.perf_counter()
        sites = [
            prepare_site(load_config(y, SiteConfig), y, preset, cache_dir=cache_root / y.parent.name, progress=False)
            for y in site_yamls
        ]
        slides = sum(p.wsi_key is not None for s in sites for p in s.patients)
        timings[f"{label}_s_per_slide"] = (time.perf_counter() - t0) / max(slides, 1)
    timings["slides"] = slides
    return sites, timings


def train_and_score(sites, holdout: str, preset, truth, epochs: int | None, n_boot: int, seed: int) -> dict:
    """WSI-only network on the other centres (85/15 train/val per centre), scored at the held-out centre."""
    import torch
    from scipy.stats import spearmanr

    from stsfl.client.data.site_dataset import SiteDataset, site_collate
    from stsfl.client.lab.baselines import PooledDataset, split_patients
    from stsfl.client.training.trainer import evaluate, make_loader, train_local
    from stsfl.common.bag_stats import combine_bag_sums, set_bag_standardisation, site_bag_sums
    from stsfl.common.clinical_features import clinical_dim
    from stsfl.common.metrics import bootstrap_ci, harrell_c
    from stsfl.tasks.multimodal.model import FUSED, MultimodalCoxNet

    with_slide = {s.name: [p.pid for p in s.patients if p.wsi_key is not None] for s in sites}
    training = [s for s in sites if s.name != holdout]
    test_site = next(s for s in sites if s.name == holdout)
    splits = {}
    for s in training:
        by_pid = {p.pid: p.record for p in s.patients}
        events = [by_pid[p].event[0] if by_pid[p].observed[0] else 0 for p in with_slide[s.name]]
        split = split_patients(with_slide[s.name], events, seed, fractions=(0.85, 0.15, 0.0))
        splits[s.name] = split["train"], split["val"]
    cfg = preset.train.model_copy(update={"blend_mode": "off", "seed": seed, **({"epochs": epochs} if epochs else {})})
    torch.manual_seed(seed)
    net = MultimodalCoxNet(preset, clinical_dim(sites[0].schema), len(sites[0].schema.endpoints), ("wsi",))
    bags = [s.cache.load("wsi", p.wsi_key, ["bag"])["bag"] for s in training for p in s.patients if p.pid in splits[s.name][0]]
    set_bag_standardisation(net, *combine_bag_sums([site_bag_sums(bags, preset.wsi.embed_dim)], preset.wsi.embed_dim))
    collate = site_collate(preset)

    def pooled(which: int, train: bool):
        return PooledDataset([SiteDataset(s, train=train, pids=splits[s.name][which], seed=seed) for s in training])

    result = train_local(
        net,
        make_loader(pooled(0, True), cfg.batch_size, collate, shuffle=True, seed=seed),
        make_loader(pooled(1, False), cfg.batch_size, collate, shuffle=False),
        cfg,
        show_progress=False,
    )
    net.load_state_dict(result.state)
    test = evaluate(
        net, make_loader(SiteDataset(test_site, pids=with_slide[holdout]), cfg.batch_size, collate, shuffle=False), cfg.ties
    )
    out = {"train_patients": len(bags), "test_patients": len(test.pids), "best_epoch": result.best_epoch}
    for k, endpoint in enumerate(ENDPOINTS):
        observed = test.observed[:, k].astype(bool)
        risk, t, e = test.risks[FUSED][observed, k], test.time[observed, k], test.event[observed, k]
        true_wsi = truth.loc[np.asarray(test.pids)[observed], f"{endpoint}_wsi"].to_numpy(float)
        c = bootstrap_ci(lambda i, t=t, e=e, risk=risk: harrell_c(t[i], e[i], risk[i]), len(t), n_boot, seed=seed)
        out[endpoint] = {
            "spearman_rho_true_wsi": float(spearmanr(risk, true_wsi)[0]),
            "c_harrell": {"estimate": c.estimate, "low": c.low, "high": c.high},
            "events": int(e.sum()),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("data/bench_wsi_encoders"), help="cohort and caches")
    parser.add_argument("--holdout", default="center_3")
    parser.add_argument("--tiles", type=int, default=32, help="tiles per encoder in the throughput test")
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's train.epochs")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--skip-signal", action="store_true", help="throughput only (no cohort, no training)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import pandas as pd
    import torch
    from rich.console import Console
    from rich.table import Table

    from stsfl.client.lab.baselines import discover_sites
    from stsfl.common.config import load_preset

    torch.set_num_threads(args.threads)
    preset = load_preset("cpu-small")
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        speed = throughput(preset, Path(tmp), args.tiles)
    table = Table(title=f"Tile encoders on this CPU ({args.threads} torch thread)")
    for col in ("encoder", "um/px x px", "E", "OpenSlide read tiles/s", "encode tiles/s"):
        table.add_column(col)
    for r in speed:
        table.add_row(
            r["encoder"],
            f"{r['mpp']:g} x {r['tile_px']}",
            str(r["embed_dim"]),
            f"{r['read_tiles_per_s']:.0f}",
            f"{r['encode_tiles_per_s']:.1f}",
        )
    console.print(table)
    report = {"threads": args.threads, "throughput": speed}

    if not args.skip_signal:
        cohort = wsi_only_cohort(args.work)
        truth = pd.read_csv(cohort / "ground_truth.csv", dtype={"patient_id": str}).set_index("patient_id")
        site_yamls = discover_sites([cohort])
        variants = encoder_variants(preset)
        report["signal"] = {"holdout": args.holdout, "cohort": str(cohort), "encoders": {}}
        table = Table(title=f"WSI-only network, held-out {args.holdout}")
        for col in ("encoder", "cold s/slide", "cached s/slide", "rho os_wsi", "rho dm_wsi", "C os [95% CI]", "C dm [95% CI]"):
            table.add_column(col)
        for name in list(variants)[:2]:
            cfg, width = variants[name]
            variant = preset.model_copy(
                update={
                    "wsi": preset.wsi.model_copy(update={"embed_dim": width}),
                    "preprocessing": preset.preprocessing.model_copy(update={"wsi": cfg}),
                }
            )
            cache = args.work / "cache" / name.split()[0]
            shutil.rmtree(cache, ignore_errors=True)  # cold means cold
            sites, timings = prepare(site_yamls, variant, cache)
            scores = train_and_score(sites, args.holdout, variant, truth, args.epochs, args.n_boot, args.seed)
            report["signal"]["encoders"][name] = timings | scores

            def c(ep, scores=scores):
                v = scores[ep]["c_harrell"]
                return f"{v['estimate']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"

            table.add_row(
                name,
                f"{timings['cold_s_per_slide']:.2f}",
                f"{timings['cached_s_per_slide']:.3f}",
                f"{scores['os']['spearman_rho_true_wsi']:.2f}",
                f"{scores['dm']['spearman_rho_true_wsi']:.2f}",
                c("os"),
                c("dm"),
            )
        console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

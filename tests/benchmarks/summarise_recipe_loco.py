"""Leave-one-centre-out summary of bench_recipe.py runs: the shipped defaults against the federated
clinical Cox model and against the linear Cox model they started from (clinical variables and MRI
radiomics, where the runs scored it), blended against unblended (where both arms ran), the gap to
the oracle, per-head rho, the share of the network's part each run kept per endpoint
(selection.network_shares), wall times.

    python tests/benchmarks/summarise_recipe_loco.py RESULTS.json [RESULTS.json ...]
        [--n-boot 1000] [--out tests/benchmarks/results/recipe_loco.json]

Every fold is one (held-out centre, seed) with the blended arm, and the unblended one where
`bench_recipe.py --arms blended unblended` ran it (for every fold or none). Harrell's C is averaged over the folds; the 95 % interval of a difference is a
paired bootstrap over the pooled held-out patients: each draw resamples every centre's patients
(the same draw for every seed of that centre), scores both models of every fold on it and
averages the per-fold differences. Prints the tables and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from stsfl.common.metrics import harrell_c

RESULTS = Path(__file__).parent / "results" / "recipe_loco.json"
COMPARISONS = (("network", "clinical_cox"), ("network", "start"), ("network", "unblended"))
LABELS = {"clinical_cox": "clinical Cox", "start": "start (clinical + radiomics)", "unblended": "unblended"}


def load_folds(paths: list[Path]) -> dict[tuple[str, int], dict]:
    """(held-out centre, seed) -> {"blended": run, "unblended": run, "risks": {method: [N, K]}, ...}."""
    folds: dict[tuple[str, int], dict] = defaultdict(dict)
    for path in paths:
        for run in json.loads(path.read_text())["runs"]:
            fold = folds[(run["holdout"], run["seed"])]
            fold[run["arm"]] = run
            with np.load(run["risks"]) as saved:
                arrays = {k: saved[k] for k in saved.files}
            risks = fold.setdefault("risks", {})
            risks["network" if run["arm"] == "blended" else "unblended"] = arrays["risk_network"]
            if run["arm"] == "blended":
                risks["clinical_cox"] = arrays["risk_clinical_cox"]
                if "risk_start" in arrays:
                    risks["start"] = arrays["risk_start"]
                risks["oracle"] = arrays.get("risk_oracle")
                fold.update(time=arrays["time"], event=arrays["event"], observed=arrays["observed"])
                fold["endpoints"] = [str(e) for e in arrays["endpoints"]]
    for method in ("unblended", "start"):
        having = [key for key, fold in folds.items() if method in fold["risks"]]
        if having and len(having) < len(folds):
            raise SystemExit(f"{method} in some folds only: {sorted(having)}")
    missing = [key for key, fold in folds.items() if "blended" not in fold]
    if missing:
        raise SystemExit(f"folds without the blended arm: {missing}")
    return dict(folds)


def methods_of(folds: dict) -> list[str]:
    """The models every fold scored besides the network."""
    first = next(iter(folds.values()))["risks"]
    return [m for m in ("unblended", "start", "clinical_cox") if m in first]


def fold_c(fold: dict, method: str, k: int, idx: np.ndarray | None = None) -> float:
    m = fold["observed"][:, k]
    t, e, r = fold["time"][m, k], fold["event"][m, k], fold["risks"][method][m, k]
    if idx is not None:
        t, e, r = t[idx], e[idx], r[idx]
    return harrell_c(t, e, r)


def pooled_difference(folds: dict, a: str, b: str, k: int, n_boot: int, seed: int = 0) -> dict:
    """Mean over folds of C(a) - C(b) on endpoint k, with the centre-stratified paired bootstrap."""
    estimate = float(np.mean([fold_c(f, a, k) - fold_c(f, b, k) for f in folds.values()]))
    rng = np.random.default_rng(seed)
    sizes = {centre: int(f["observed"][:, k].sum()) for (centre, _), f in folds.items()}
    draws = []
    for _ in range(n_boot):
        idx = {centre: rng.integers(0, n, n) for centre, n in sizes.items()}
        try:
            draws.append(np.mean([fold_c(f, a, k, idx[c]) - fold_c(f, b, k, idx[c]) for (c, _), f in folds.items()]))
        except (ValueError, ZeroDivisionError):  # a draw without a comparable pair
            continue
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"estimate": estimate, "low": float(low), "high": float(high), "draws": len(draws)}


def summarise(folds: dict, n_boot: int) -> dict:
    endpoints = next(iter(folds.values()))["endpoints"]
    methods = methods_of(folds)
    rows = []
    for (centre, seed), fold in sorted(folds.items()):
        blended, unblended = fold["blended"], fold.get("unblended")
        for k, endpoint in enumerate(endpoints):
            c = {method: fold_c(fold, method, k) for method in ("network", *methods)}
            oracle = fold_c(fold, "oracle", k) if fold["risks"]["oracle"] is not None else float("nan")
            rows.append(
                {
                    "holdout": centre,
                    "seed": seed,
                    "endpoint": endpoint,
                    "events": int(fold["event"][fold["observed"][:, k], k].sum()),
                    "blended": c["network"],
                    **{m: c[m] for m in methods},
                    "oracle": oracle,
                    "oracle_gap": oracle - c["network"],
                    "rho_mri": blended["head_rho"].get(f"{endpoint}_mri"),
                    "rho_wsi": blended["head_rho"].get(f"{endpoint}_wsi"),
                    "selected_round": blended["selected_round"],
                    "minutes_blended": None if blended["seconds"] is None else blended["seconds"] / 60,
                    "minutes_unblended": None if unblended is None or unblended["seconds"] is None else unblended["seconds"] / 60,
                    "blend_weights": blended["blend_weights"],
                    # the share of the network's part of the log-risk each arm kept (selection.network_shares)
                    "share_blended": blended.get("network_share", {}).get(endpoint),
                    "share_unblended": None if unblended is None else unblended.get("network_share", {}).get(endpoint),
                }
            )
    means = {}
    for k, endpoint in enumerate(endpoints):
        mine = [r for r in rows if r["endpoint"] == endpoint]
        means[endpoint] = {
            key: float(np.mean([r[key] for r in mine]))
            for key in ("blended", *methods, "oracle", "oracle_gap", "rho_mri", "rho_wsi")
            if all(r[key] is not None for r in mine)
        }
        for arm in ("blended", "unblended"):
            shares = [r[f"share_{arm}"] for r in mine if r[f"share_{arm}"] is not None]
            means[endpoint][f"share_{arm}"] = float(np.mean(shares)) if shares else None
        for a, b in COMPARISONS:
            if b in methods:
                means[endpoint][f"blended - {b}"] = pooled_difference(folds, a, b, k, n_boot)
    return {"folds": len(folds), "n_boot": n_boot, "methods": methods, "rows": rows, "means": means}


def _share(value: float | None, digits: str = "g") -> str:
    return "-" if value is None else format(value, digits)


def _difference(d: dict) -> str:
    return f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def print_tables(summary: dict) -> None:
    methods = summary["methods"]
    per_fold = Table(title="leave one centre out, per fold: held-out Harrell's C")
    for column in ("held out", "seed", "endpoint", "events", "blended", *(LABELS[m] for m in methods), "oracle"):
        per_fold.add_column(column)
    for column in ("gap to oracle", "rho mri / wsi", "network share (blended / unblended)", "minutes"):
        per_fold.add_column(column)
    for r in summary["rows"]:
        minutes = " / ".join("-" if m is None else f"{m:.1f}" for m in (r["minutes_blended"], r["minutes_unblended"]))
        rho = " / ".join("-" if x is None else f"{x:.2f}" for x in (r["rho_mri"], r["rho_wsi"]))
        per_fold.add_row(
            r["holdout"], str(r["seed"]), r["endpoint"], str(r["events"]), f"{r['blended']:.3f}",
            *(f"{r[m]:.3f}" for m in methods), f"{r['oracle']:.3f}", f"{r['oracle_gap']:+.3f}", rho,
            " / ".join(_share(r[f"share_{arm}"]) for arm in ("blended", "unblended")), minutes,
        )  # fmt: skip
    Console(width=220).print(per_fold)
    means = Table(title=f"mean over {summary['folds']} folds (paired bootstrap over the pooled held-out patients)")
    compared = [b for _, b in COMPARISONS if b in methods]
    for column in ("endpoint", "blended", *(LABELS[m] for m in methods), "oracle"):
        means.add_column(column)
    for b in compared:
        means.add_column(f"blended - {LABELS[b]} [95% CI]")
    means.add_column("rho mri / wsi")
    means.add_column("mean network share (blended / unblended)")
    for endpoint, m in summary["means"].items():
        means.add_row(
            endpoint, f"{m['blended']:.3f}", *(f"{m[x]:.3f}" for x in methods), f"{m['oracle']:.3f}",
            *(_difference(m[f"blended - {b}"]) for b in compared),
            f"{m.get('rho_mri', float('nan')):.2f} / {m.get('rho_wsi', float('nan')):.2f}",
            " / ".join(_share(m[f"share_{arm}"], ".2f") for arm in ("blended", "unblended")),
        )  # fmt: skip
    Console(width=220).print(means)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    summary = summarise(load_folds(args.results), args.n_boot)
    print_tables(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"inputs": [str(p) for p in args.results], **summary}, indent=1))


if __name__ == "__main__":
    main()

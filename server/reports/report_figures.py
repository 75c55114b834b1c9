"""The run report's figures (PNG, matplotlib Agg), each from the aggregates of stsfl.server.reports.report_data.

Every function writes one PNG and returns its path; none reads the results folder itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stsfl.common.figures import pyplot, save_png
from stsfl.server.reports.report_data import MODALITIES, EvaluationRow

HEAD_COLOURS = {"fused": "black", "mri": "tab:blue", "wsi": "tab:purple", "clinical": "tab:orange"}


def plot_cohort(rows: list[dict[str, Any]], endpoints: list[str], path: Path) -> Path:
    """Left: patients and events per endpoint per site (bars); right, when the sites reported it:
    modality coverage (% of usable patients)."""
    plt = pyplot()
    has_modalities = any(r["modalities"] for r in rows)
    fig, axes = plt.subplots(1, 2 if has_modalities else 1, figsize=(10 if has_modalities else 5.5, 3.6), squeeze=False)
    ax_n = axes[0][0]
    sites = [r["site"] + (" *" if r["role"] == "held out" else "") for r in rows]
    x = np.arange(len(rows))
    series = [("patients", [r["patients"] or 0 for r in rows])]
    series += [(f"{e} events", [r["events"].get(e, 0) for r in rows]) for e in endpoints]
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        ax_n.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
    ax_n.set_xticks(x, sites, fontsize=8)
    ax_n.set_ylabel("count (training split)")
    ax_n.set_title("Patients and events per site", fontsize=10)
    ax_n.legend(fontsize=8)
    fig.text(0.01, 0.01, "* held-out centre", fontsize=7)
    if not has_modalities:
        return save_png(fig, path)
    ax_m = axes[0][1]
    width = 0.8 / len(MODALITIES)
    for i, modality in enumerate(MODALITIES):
        cover = [100.0 * r["modalities"].get(modality, 0) / r["usable"] if r.get("usable") else 0.0 for r in rows]
        ax_m.bar(x + (i - 1) * width, cover, width, label=modality)
    ax_m.set_xticks(x, sites, fontsize=8)
    ax_m.set_ylim(0, 105)
    ax_m.set_ylabel("% of usable patients")
    ax_m.set_title("Modality coverage", fontsize=10)
    ax_m.legend(fontsize=8)
    return save_png(fig, path)


def plot_head_losses(losses: dict[str, dict[str, list[tuple[int, float]]]], path: Path) -> Path:
    """Cox loss per head over rounds: training (solid) and validation (dashed), events-weighted over sites."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for split, style in (("train", "-"), ("val", "--")):
        for head, points in losses.get(split, {}).items():
            rounds, values = zip(*points)
            ax.plot(rounds, values, style, marker="o", ms=3, color=HEAD_COLOURS.get(head), label=f"{head} ({split})")
    ax.set_xlabel("round")
    ax.set_ylabel("negative log partial likelihood")
    ax.set_title("Loss per head (solid: training, dashed: validation)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.xaxis.get_major_locator().set_params(integer=True)
    return save_png(fig, path)


def plot_blend_weights(series: dict[str, list[tuple[int, float]]], path: Path) -> Path:
    """Stacked blend weights per round (they sum to 1)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    heads = list(series)
    rounds = [r for r, _ in series[heads[0]]]
    values = np.array([[w for _, w in series[h]] for h in heads])
    ax.stackplot(rounds, values, labels=heads, colors=[HEAD_COLOURS.get(h, "grey") for h in heads], alpha=0.8)
    ax.set_xlabel("round")
    ax.set_ylabel("blend weight")
    ax.set_ylim(0, 1)
    ax.set_title("Gradient-blending weights sent with each round", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.xaxis.get_major_locator().set_params(integer=True)
    return save_png(fig, path)


def plot_c_index_rounds(series: dict[tuple[str, str], list[tuple[int, float]]], holdout: list[str], path: Path) -> Path:
    """Harrell's C per evaluating site over rounds, one panel per endpoint; held-out centres bold."""
    plt = pyplot()
    endpoints = sorted({e for _, e in series}, key=lambda e: (e != "os", e))
    fig, axes = plt.subplots(1, len(endpoints), figsize=(4.6 * len(endpoints), 3.4), squeeze=False)
    for ax, endpoint in zip(axes[0], endpoints):
        for (site, e), points in sorted(series.items()):
            if e != endpoint:
                continue
            rounds, values = zip(*points)
            held = site in holdout
            ax.plot(rounds, values, marker="o", ms=3, lw=2.2 if held else 1.0, label=f"{site} (held out)" if held else site)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_ylim(0, 1)
        ax.set_xlabel("round")
        ax.set_ylabel("Harrell's C")
        ax.set_title(f"C-index over rounds, {endpoint}", fontsize=10)
        ax.legend(fontsize=7)
        ax.set_xticks(sorted({r for (_, e), points in series.items() if e == endpoint for r, _ in points}))
    return save_png(fig, path)


def plot_evaluation_forest(rows: list[EvaluationRow], path: Path) -> Path:
    """Harrell's C with its approximate 95 % CI per site (rows) and endpoint (panels)."""
    plt = pyplot()
    endpoints = list(dict.fromkeys(r.endpoint for r in rows))
    sites = list(dict.fromkeys(r.site for r in rows))
    fig, axes = plt.subplots(
        1, len(endpoints), figsize=(4.2 * len(endpoints), 0.5 * len(sites) + 1.6), squeeze=False, sharey=True
    )
    labels = [f"{r.site} ({r.role})" for r in rows if r.endpoint == endpoints[0]]
    for ax, endpoint in zip(axes[0], endpoints):
        for y, site in enumerate(sites):
            row = next((r for r in rows if r.site == site and r.endpoint == endpoint), None)
            if row is None or row.harrell is None:
                continue
            colour = "tab:red" if row.role == "held out" else "tab:blue"
            if row.harrell_ci is not None:
                ax.plot(row.harrell_ci, [y, y], color=colour, lw=1.5)
            ax.plot([row.harrell], [y], "o", color=colour)
        ax.axvline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_xlim(0, 1)
        ax.set_yticks(range(len(sites)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("Harrell's C (approx. 95 % CI)")
        ax.set_title(endpoint, fontsize=10)
    return save_png(fig, path)


def plot_baselines(models: dict[str, dict[str, Any]], endpoints: list[str], path: Path) -> Path:
    """Harrell's C with its bootstrap CI of every baseline model (`stsfl baselines`), per endpoint."""
    plt = pyplot()
    names = list(models)
    fig, axes = plt.subplots(
        1, len(endpoints), figsize=(4.2 * len(endpoints), 0.45 * len(names) + 1.6), squeeze=False, sharey=True
    )
    for ax, endpoint in zip(axes[0], endpoints):
        for y, name in enumerate(names):
            c = models[name].get(endpoint, {}).get("harrell_c")
            if not c:
                continue
            ax.plot([c["low"], c["high"]], [y, y], color="tab:blue", lw=1.5)
            ax.plot([c["estimate"]], [y], "o", color="tab:blue")
        ax.axvline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("Harrell's C (bootstrap 95 % CI)")
        ax.set_title(endpoint, fontsize=10)
    return save_png(fig, path)


def plot_risk_group_km(panels: list[tuple[str, dict]], n_cols: int, path: Path) -> Path:
    """Kaplan-Meier of the predicted low / high risk halves per panel (site x endpoint), from the
    grid values the sites reported (stsfl.common.risk_group_km), log-rank p in each title."""
    plt = pyplot()
    n_rows = (len(panels) + n_cols - 1) // n_cols
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.2 * n_rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (title, curves) in zip(axes.flat, panels):
        for group, colour in (("low", "tab:blue"), ("high", "tab:red")):
            days, survival = curves[group]
            n = curves["n"].get(group)
            ax.step(
                np.asarray(days) / 365.25,
                survival,
                where="post",
                color=colour,
                label=f"{group} risk" + (f" (n={n:.0f})" if n is not None else ""),
            )
        p = curves["p"]
        ax.set_title(title + ("" if p is None else f"\nlog-rank p = {p:.3g}"), fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("years")
        ax.set_ylabel("survival")
        ax.legend(fontsize=7)
    return save_png(fig, path)

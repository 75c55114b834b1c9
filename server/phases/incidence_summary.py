"""Pooled calibration of crude cumulative incidences over the sites' calibration replies, and its figure.

Each site sent, per endpoint with a competing event and horizon, its Aalen-Johansen observed
incidence, mean predicted incidence, intercept and slope and its number of patients
(stsfl.client.prediction.incidence_site). Pooled over the sites (training sites' validation splits and
held-out centres apart, since the held-out centres are the external validation):

- observed and expected: patient-weighted means of the sites' values. For the expected incidence
  this is the mean over all patients; for the observed it is the incidence of the population that
  mixes the sites in those proportions (a mixture's cumulative incidence is the weighted mean of
  its parts'), so O/E is exact from aggregates;
- intercept and slope: patient-weighted means of the sites' estimates (an approximation: the
  pooled pseudo-value fit would need the patients' pseudo-values).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stsfl.common.figures import pyplot, save_png

POOLED_KEYS = ("observed", "expected", "intercept", "slope")


def _pool(entries: list[dict]) -> dict[str, Any]:
    weights = np.array([e["patients"] for e in entries], float)
    pooled = {k: float(np.average([e[k] for e in entries], weights=weights)) for k in POOLED_KEYS}
    pooled["observed_expected"] = pooled["observed"] / pooled["expected"] if pooled["expected"] > 0 else float("nan")
    return pooled | {"patients": int(weights.sum()), "sites": len(entries)}


def pooled_incidence(replies: dict[str, dict], holdout: list[str]) -> dict[str, Any]:
    """{group: {endpoint: {"<h>": pooled values}}} for group "training" (validation splits) and
    "held_out", over the sites whose reply has an `incidence` entry that was not skipped."""
    out: dict[str, Any] = {}
    for group, members in (("training", [s for s in replies if s not in holdout]), ("held_out", list(holdout))):
        found: dict[tuple[str, str], list[dict]] = {}
        for site in members:
            for endpoint, horizons in replies.get(site, {}).get("endpoints", {}).items():
                for key, entry in horizons.items():
                    incidence = entry.get("incidence", {})
                    if "observed" in incidence:
                        found.setdefault((endpoint, key), []).append(incidence)
        for (endpoint, key), entries in found.items():
            out.setdefault(group, {}).setdefault(endpoint, {})[key] = _pool(entries)
    return out


def _draw(ax, kind: str, entry: dict, label: str, style: dict) -> None:
    if kind == "calibration":
        g = entry["groups"]
        ax.plot(g["predicted"], g["observed"], marker="o", ms=3, label=label, **style)
    else:
        d = entry["decision"]
        ax.plot(d["thresholds"], d["model"], label=label, **style)
        ax.plot(d["thresholds"], d["treat_all"], lw=0.7, ls=":", color=style["color"])


def plot_incidence(
    replies: dict[str, dict], holdout: list[str], endpoint: str, horizons: list[float], path: Path, kind: str = "calibration"
) -> Path | None:
    """`kind` "calibration": predicted crude cumulative incidence vs Aalen-Johansen observed by group;
    "decision": net benefit on the incidence vs threshold (dotted: treat all). One panel per horizon,
    one line per site (held-out centres dashed); None when no site has an incidence entry."""
    fig, axes = pyplot().subplots(1, len(horizons), figsize=(3.8 * len(horizons), 3.6), squeeze=False)
    drawn = False
    for ax, horizon in zip(axes[0], horizons):
        for i, (site, reply) in enumerate(sorted(replies.items())):
            entry = reply["endpoints"].get(endpoint, {}).get(f"{horizon:g}", {}).get("incidence", {})
            if "groups" not in entry:
                continue
            drawn = True
            label = f"{site}{' (held out)' if site in holdout else ''}: O/E {entry['observed_expected']:.2f}, slope {entry['slope']:.2f}"
            _draw(ax, kind, entry, label, {"ls": "--" if site in holdout else "-", "color": f"C{i % 10}"})
        if kind == "calibration":
            ax.plot([0, 1], [0, 1], color="grey", lw=1)
            ax.set_xlabel("predicted crude cumulative incidence")
            ax.set_ylabel("observed (Aalen-Johansen)")
        else:
            ax.axhline(0.0, color="black", lw=1)
            ax.set_ylim(bottom=-0.05)
            ax.set_xlabel("threshold probability (dotted: treat all)")
            ax.set_ylabel("net benefit, crude incidence")
        ax.set_title(f"{endpoint}, {horizon / 365.25:g} years, death competing", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    if not drawn:
        pyplot().close(fig)
        return None
    return save_png(fig, path)

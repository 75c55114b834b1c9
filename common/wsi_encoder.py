"""The slide encoder's identity, which every site of a federation must share, and its check.

Each site reports in its statistics reply `{"name", "fingerprint", "feature_dims"}` of the encoder
that made its tile embeddings (`site_encoder`): the name says what made them (`morphometry-v1`,
`vit_base_patch16`, a pre-extracted extractor's name such as `uni_v1`), the fingerprint hashes
its weights and settings, feature_dims the widths of the features the site found. The server
compares them with the federation's preset before round 1 (`check_site_encoders`), so a site that
embeds its tiles differently is named instead of silently training on other numbers.
"""

from __future__ import annotations

from collections.abc import Iterable

from stsfl.common.config.preset import ModelPreset, PatchEncoderConfig
from stsfl.common.console import UserError

# Bump when a morphometry feature's definition changes (stsfl.client.slides.wsi_morphometry).
MORPHOMETRY_VERSION = "1"


def encoder_name(cfg: PatchEncoderConfig) -> str:
    """What makes the embeddings under this preset: e.g. `morphometry-v1`, `vit_base_patch16+morphometry-v1`."""
    if cfg.arch == "pre_extracted":
        return str(cfg.extractor)
    morphometry = f"morphometry-v{MORPHOMETRY_VERSION}"
    if cfg.arch == "morphometry":
        return morphometry
    return f"{cfg.arch}+{morphometry}" if cfg.add_morphometry else cfg.arch


def site_encoder(name: str | None, fingerprint: str | None, feature_dims: Iterable[int]) -> dict:
    """A site's part of the statistics reply (name None: the site has no usable slide)."""
    return {"name": name, "fingerprint": fingerprint, "feature_dims": sorted(set(feature_dims))}


def encoder_mismatches(per_site: dict[str, dict], preset: ModelPreset) -> list[str]:
    """One line per site whose slide encoder is not the federation's (sites without slides pass)."""
    expected, width = encoder_name(preset.preprocessing.wsi.encoder), preset.wsi.embed_dim
    lines, fingerprints = [], {}
    for site, reply in sorted(per_site.items()):
        encoder = reply.get("wsi_encoder") or {}
        if encoder.get("name") is None:
            continue
        if encoder["name"] != expected:
            lines.append(f"site {site}: slide embeddings from {encoder['name']!r}, the federation's encoder is {expected!r}")
            continue
        wrong = [d for d in encoder.get("feature_dims", []) if d != width]
        if wrong:
            lines.append(
                f"site {site}: slide features of dimension {', '.join(map(str, wrong))}, the federation's "
                f"wsi.embed_dim is {width}"
            )
        fingerprints[site] = encoder.get("fingerprint")
    if len(set(fingerprints.values())) > 1:
        lines.append(
            "sites disagree on the slide encoder's fingerprint (other weights or settings): "
            + ", ".join(f"{site} {fp}" for site, fp in fingerprints.items())
        )
    return lines


def check_site_encoders(per_site: dict[str, dict], preset: ModelPreset) -> None:
    """Raise UserError naming every site whose slide encoder differs from the federation's."""
    lines = encoder_mismatches(per_site, preset)
    if lines:
        raise UserError("the sites' slide embeddings do not match the federation's preset:\n  " + "\n  ".join(lines))

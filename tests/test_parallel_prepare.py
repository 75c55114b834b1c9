"""Cold preprocessing in a process pool gives exactly what one process gives: the same usable
patients, cache keys, arrays, cached failures and problems in the same order."""

from __future__ import annotations

import numpy as np
from test_site_pipeline import PRESET, build_messy_site

from stsfl.client.data.site_prepare import MIN_PARALLEL_JOBS, prepare_site
from stsfl.common.config import SiteConfig, load_config


def test_two_processes_give_the_sequential_result(tmp_path):
    site_yaml = build_messy_site(tmp_path)
    site = load_config(site_yaml, SiteConfig)
    one = prepare_site(site, site_yaml, PRESET, cache_dir=tmp_path / "one", progress=False, workers=1)
    two = prepare_site(site, site_yaml, PRESET, cache_dir=tmp_path / "two", progress=False, workers=2)
    assert sum(one.computed.get(k, 0) for k in ("mri", "mri_failed", "wsi", "wsi_failed")) >= MIN_PARALLEL_JOBS
    assert two.computed == one.computed  # the workers' counts reach the parent
    assert [(p.pid, p.mri_key, p.wsi_key) for p in two.patients] == [(p.pid, p.mri_key, p.wsi_key) for p in one.patients]
    assert two.problems == one.problems
    for p in one.patients:
        for kind, key in (("mri", p.mri_key), ("wsi", p.wsi_key)):
            if key is not None:
                a, b = one.cache.load(kind, key), two.cache.load(kind, key)
                assert a.keys() == b.keys() and all(np.array_equal(a[n], b[n]) for n in a)
    assert sorted(f.name for f in (tmp_path / "two").rglob("*.error.json")) == sorted(
        f.name for f in (tmp_path / "one").rglob("*.error.json")
    )

"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Vendored real data (provenance and licence in its README.md): a fresh clone runs every test.
TCGA_BRCA_DIR = REPO_ROOT / "tests" / "data" / "tcga_brca"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tcga_brca_dir() -> Path:
    missing = [name for name in ("brca.csv", "centers.csv", "train_test_split.csv") if not (TCGA_BRCA_DIR / name).is_file()]
    if missing:  # a broken checkout, not an optional extra: fail rather than skip
        pytest.fail(f"vendored TCGA-BRCA data incomplete in {TCGA_BRCA_DIR}: missing {', '.join(missing)}")
    return TCGA_BRCA_DIR


# The real-process federations first, in this order over the two pytest-xdist workers of `make test`
# (`--dist loadfile --no-loadscope-reorder`: each worker takes two modules, then the next one whenever
# it has fewer than two queued): the two multimodal ones (demo, deploy dry run) run one after the other
# on one worker, next to the lighter TCGA federations on the other, whose round timeouts a second
# multimodal federation on the same two cores would strain.
LONGEST_FIRST = (
    "test_demo_federation",
    "test_site_faults",
    "test_deploy_dry_run",
    "test_federation_processes",
    "test_secure_aggregation_processes",
    "test_simulation",
    "test_secure_transport",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.module.__name__.rsplit(".", 1)[-1]
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside a module and among the others is kept

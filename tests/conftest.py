"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The shared folder sits beside the checkout (/work/main -> /work/shared) or, for a worktree
# under /work/wt/<name>, two levels up.
SHARED_DIR = next((p / "shared" for p in REPO_ROOT.parents if (p / "shared" / "data").is_dir()), REPO_ROOT.parent / "shared")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tcga_brca_dir() -> Path:
    path = SHARED_DIR / "data" / "tcga_brca"
    if not path.is_dir():
        pytest.skip(f"shared TCGA-BRCA data not found at {path}")
    return path


# The longest modules first, spread over the pytest-xdist workers of `make test` (`--dist loadfile
# --no-loadscope-reorder` hands out whole modules in this order, the next one to the first worker
# that is free; without that flag xdist would order files by their number of tests),
# so that the real-process federations do not queue up on one worker.
LONGEST_FIRST = ("test_site_faults", "test_federation_processes", "test_demo_federation",
                 "test_secure_aggregation_processes", "test_deploy_dry_run", "test_simulation", "test_secure_transport")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.module.__name__.rsplit(".", 1)[-1]
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside a module and among the others is kept

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

"""The documentation site builds with MkDocs in strict mode (every page in the nav, every link and
anchor resolving, the API reference collected from the docstrings), and the README stays short."""

from __future__ import annotations

import subprocess
import sys


def test_the_documentation_builds_strictly_with_the_api_reference(repo_root, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    assert "schema_differences" in api and "statistics_reply" in api  # docstrings, not just headings
    for page in ("own-data", "site-operator", "coordinator", "architecture", "security", "benchmarks"):
        assert (tmp_path / "site" / page / "index.html").is_file()


def test_the_readme_is_a_short_entry_point(repo_root):
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for command in ("make demo", "make test", "stsfl schema draft", "sts-client validate", "docs/own-data.md"):
        assert command in readme

"""MkDocs hook: the API reference's source tree.

The package maps its folders under one namespace (common/ -> stsfl.common, tasks/ -> stsfl.tasks, ...; pyproject's
`package-dir`), which griffe (mkdocstrings' Python reader) cannot follow through the editable
install. So before the build, build/api-src/stsfl/<name> is made a symbolic link to each folder,
and mkdocs.yml gives mkdocstrings that tree (`paths: [build/api-src]`); build/ is not committed.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGES = ("common", "client", "server", "tasks", "configs")


def link_sources() -> None:
    namespace = ROOT / "build" / "api-src" / "stsfl"
    namespace.mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        link = namespace / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name, target_is_directory=True)


# At import, not in on_config: mkdocstrings checks its `paths` when its configuration is read, which
# is before any on_config event runs.
link_sources()

"""Habits that keep the code readable: small product functions, and no reference to a document
that the repository does not hold (ruff and import-linter run in `make test` beside pytest)."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("common", "client", "server", "tasks")
MAX_FUNCTION_LINES = 80
DOCUMENT = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w.-]+\.md)\b")
# a path into the repository's own folders, as comments and docstrings name files
REPO_PATH = re.compile(
    r"(?<![\w/.-])((?:common|client|server|tasks|tests|deploy|configs|docs)/[\w/.-]*\w\.(?:py|yaml|yml|md|toml))\b"
)


def _tracked(*suffixes: str) -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / n for n in names if n.endswith(suffixes)]


def test_no_product_function_is_longer_than_80_lines():
    long = []
    for path in _tracked(".py"):
        if path.relative_to(REPO).parts[0] not in PRODUCT:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these functions:\n" + "\n".join(long)


def test_every_named_document_is_in_the_repository():
    """A user's clone has nothing beside it: a docstring or page that points at a .md file must
    point at one of ours (by path from the repository root, the file's folder or docs/)."""
    missing = []
    for path in _tracked(".py", ".md", ".yaml", ".yml", ".toml"):
        for match in DOCUMENT.finditer(path.read_text(encoding="utf-8", errors="replace")):
            ref = match.group(1)
            if not any((base / ref).exists() for base in (REPO, path.parent, REPO / "docs")):
                missing.append(f"{path.relative_to(REPO)}: {ref}")
    assert not missing, "\n".join(missing)


def test_every_named_file_of_the_repository_exists():
    """A comment or page that names one of our files (e.g. after a move) names one that is there."""
    missing = []
    for path in _tracked(".py", ".md", ".yaml", ".yml", ".toml"):
        for match in REPO_PATH.finditer(path.read_text(encoding="utf-8", errors="replace")):
            if not (REPO / match.group(1)).exists():
                missing.append(f"{path.relative_to(REPO)}: {match.group(1)}")
    assert not missing, "\n".join(missing)


def _renames(tree: ast.AST) -> list[ast.Call]:
    """os.replace / os.rename calls, and `x.replace(target)` with one argument: a Path rename
    (str.replace and bytes.replace take two)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        func = node.func
        by_os = isinstance(func.value, ast.Name) and func.value.id == "os" and func.attr in ("replace", "rename")
        by_path = func.attr == "replace" and len(node.args) == 1 and not node.keywords
        if by_os or by_path:
            found.append(node)
    return found


def test_files_are_renamed_into_place_only_by_the_atomic_file_helper():
    """A write through a temporary file goes through stsfl.common.atomic_file (unique temporary
    names, the temporary removed on failure), not a hand-written rename."""
    helper = REPO / "common" / "atomic_file.py"
    by_hand = []
    for path in _tracked(".py"):
        if path.relative_to(REPO).parts[0] not in PRODUCT or path == helper:
            continue
        for call in _renames(ast.parse(path.read_text(encoding="utf-8"))):
            by_hand.append(f"{path.relative_to(REPO)}:{call.lineno} {ast.unparse(call)}")
    assert not by_hand, "use stsfl.common.atomic_file:\n" + "\n".join(by_hand)


def test_the_rename_check_tells_a_path_rename_from_a_string_replace():
    flagged = _renames(
        ast.parse('os.replace(a, b)\ntmp.replace(path)\nos.rename(a, b)\n"a_b".replace("_", " ")\nd.replace(year=1)')
    )
    assert [ast.unparse(c) for c in flagged] == ["os.replace(a, b)", "tmp.replace(path)", "os.rename(a, b)"]

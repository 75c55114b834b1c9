"""Command-line plumbing shared by sts-server, sts-client and stsfl: user errors exit cleanly."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

from rich.console import Console
from rich.text import Text

from stsfl.common.config import ConfigError

console = Console(stderr=True, soft_wrap=True)


def print_progress(line: str) -> None:
    """One progress line on the console, as plain text: `[...]` in it (held-out metrics, a site's
    error) is text, not console markup that rich would swallow."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


class UserError(RuntimeError):
    """A problem the user can fix (bad input, missing file); printed without a traceback."""


def run_cli(entry: Callable[[], int | None]) -> None:
    """Run a CLI entry point; ConfigError / UserError become a one-paragraph message and exit 2."""
    try:
        code = entry()
    except (ConfigError, UserError) as err:
        console.print(Text.assemble(("error: ", "bold red"), str(err)), highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    sys.exit(code or 0)


# Flower's error reason for an exception in a ClientApp: "<class 'pkg.SomeError'>:<'message'>"; under
# the simulation engine the message is Ray's, with the ClientApp's traceback inside it.
_FLOWER_REASON = re.compile(r"<class '(?:[\w.]+\.)?([^'.]+)'>:<'(.*?)'>$", re.DOTALL)
# the last "SomeError: message" line of a traceback is the cause
_TRACEBACK_CAUSE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt|Exit)): (.+)$", re.MULTILINE)
CAUSE_MAX_CHARS = 400


def _flat(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def one_line_cause(text: str) -> str:
    """`text` (a progress line, possibly ending in a site's failure reason as Flower wraps a remote
    exception, over several lines) as one line naming the cause: "... SiteUnusableError: site cannot
    be used: ...". Wrappers (Ray, ClientAppException) are dropped; the cause is cut at CAUSE_MAX_CHARS."""
    head, sep, reason = text.partition("<class '")
    match = _FLOWER_REASON.match(sep + reason) if sep else None
    if match is None:
        return _flat(text)
    kind, message = match.groups()
    causes = [(k, m) for k, m in _TRACEBACK_CAUSE.findall(message) if k != "ClientAppException"]
    kind, message = causes[-1] if causes else (kind, message)
    cause = _flat(f"{kind}: {message}")
    cause = cause if len(cause) <= CAUSE_MAX_CHARS else cause[: CAUSE_MAX_CHARS - 3] + "..."
    return _flat(head) + (" " if head.endswith((" ", "\n")) else "") + cause

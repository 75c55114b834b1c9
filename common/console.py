"""Command-line plumbing shared by sts-server, sts-client and stsfl: user errors exit cleanly."""

from __future__ import annotations

import sys
from collections.abc import Callable

from rich.console import Console
from rich.text import Text

from .config import ConfigError

console = Console(stderr=True, soft_wrap=True)


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

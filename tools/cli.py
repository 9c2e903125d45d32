"""What every tool's entry point does with bad input: one line, exit status 2."""
from __future__ import annotations

from typing import Callable


def run_cli(body: Callable[[], None]) -> int:
    """Run a tool's ``body``: 0, or 2 after ``distadv: error: <message>`` (one line on stderr)
    if it raised a UserError; bugs propagate with their traceback."""
    from distadv.engine.faults import error_line
    from distadv.errors import UserError
    try:
        body()
    except UserError as exc:
        error_line(str(exc))
        return 2
    return 0

"""The ``citytwin`` command line: a thin adapter over the same functions the API calls.

Settings are read here (and in the app), nowhere below. Every command prints errors as one clear line
(or JSON with ``--json``) and exits non-zero; no tracebacks for expected failures.
"""

from __future__ import annotations

import sys

from citytwin.cli.app import app
from citytwin.errors import CityTwinError


def main() -> None:
    """Console-script entry point."""
    try:
        app(standalone_mode=False)
    except CityTwinError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.details:
            import json

            print(json.dumps(exc.details, indent=2, default=str)[:4000], file=sys.stderr)
        sys.exit(2)
    except SystemExit:
        raise
    except Exception as exc:
        # Usage errors of click (or the copy typer bundles): they know how to show themselves.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(1)
        raise

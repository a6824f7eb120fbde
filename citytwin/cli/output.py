"""Printing results: JSON for machines, short text for people."""

from __future__ import annotations

import json
import sys

from rich.console import Console

console = Console(stderr=False, highlight=False)


def emit(data: dict, *, as_json: bool, text: str | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        console.print(text if text is not None else _pretty(data))


def _pretty(data: dict, indent: int = 0) -> str:
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(" " * indent + f"{key}:")
            lines.append(_pretty(value, indent + 2))
        elif isinstance(value, list) and len(value) > 8:
            lines.append(" " * indent + f"{key}: [{len(value)} items]")
        else:
            lines.append(" " * indent + f"{key}: {value}")
    return "\n".join(lines)

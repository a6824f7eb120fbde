"""``python -m citytwin`` runs the CLI."""

from citytwin.cli import main

main()

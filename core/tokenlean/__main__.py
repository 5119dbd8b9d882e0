"""``python -m tokenlean`` runs the CLI."""

from tokenlean.cli import main

raise SystemExit(main())

"""What every benchmark does with its results: ``--json OUT`` writes them, creating the folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: Path | None, results: dict[str, Any]) -> None:
    """Write ``results`` to ``path`` (``--json``), creating its folder; nothing when None."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")

"""The planted-breaker corpus lives with the benchmark (``benchmarks/layout_corpus.py``), not in the
package; load it once as ``layout_corpus`` so the tests here can ``from layout_corpus import ...``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[3] / "benchmarks" / "layout_corpus.py"

if "layout_corpus" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("layout_corpus", CORPUS)
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["layout_corpus"] = _module  # before exec: its dataclasses look their module up
    _spec.loader.exec_module(_module)

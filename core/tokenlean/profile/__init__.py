"""Profile a workload: read traces, estimate what each lever would save, rank, report.

"Profile your own workload, find the lever your bottleneck responds to, pull that one, and
re-measure": ``read_traces`` turns ledger / OpenAI / LangChain / SWE-agent traces into one
``Trace``; ``Profiler.profile`` runs each lever's estimator (which calls the lever itself) and
returns a ``ProfileReport`` with a ranked table, JSON and a self-contained HTML report.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenlean._lazy import warn_renamed
from tokenlean.profile.estimates import LatencyModel, LeverEstimate, ProfileContext, provider_cached_tokens
from tokenlean.profile.profiler import LEVERS, Profiler, profile
from tokenlean.profile.readers import FORMATS, detect_format, read_trace, read_traces
from tokenlean.profile.report import ProfileReport, TraceSummary
from tokenlean.profile.trace import Call, Trace

__all__ = [
    "FORMATS",
    "LEVERS",
    "Call",
    "LatencyModel",
    "LeverEstimate",
    "ProfileContext",
    "ProfileReport",
    "Profiler",
    "Trace",
    "TraceSummary",
    "detect_format",
    "profile",
    "provider_cached_tokens",
    "read_trace",
    "read_traces",
]


class _CallableModule(types.ModuleType):
    """``tokenlean.profile(...)`` was a top-level function in the previous release.

    The package and that function shared the name ``tokenlean.profile``, so which one a user got
    depended on import order. The package is the name now; calling it still runs
    :func:`tokenlean.profile.profile` for one release, with a deprecation warning once.
    """

    def __call__(self, trace: Trace | str | Path | Sequence[str | Path], **kwargs: Any) -> ProfileReport:
        warn_renamed("tokenlean", "profile(...)", "tokenlean.profile.profile(...)")
        return profile(trace, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

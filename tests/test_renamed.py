"""Names renamed for 1.0 (issue 19) still work for one release and warn exactly once.

Each check runs in a fresh interpreter: "warns once" is per process, and another test that already
touched an old name would otherwise hide the first warning.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# (import of the old name, the object it must be, the new spelling the warning names)
CASES = [
    ("from langchain_tokenlean import TokenleanCompaction as old",
     "from langchain_tokenlean import TokenleanCompactionMiddleware as new", "TokenleanCompactionMiddleware"),
    ("from langchain_tokenlean import TokenleanPromptLayout as old",
     "from langchain_tokenlean import TokenleanPromptLayoutMiddleware as new", "TokenleanPromptLayoutMiddleware"),
    ("from langchain_tokenlean import TokenleanRouting as old",
     "from langchain_tokenlean import TokenleanRoutingMiddleware as new", "TokenleanRoutingMiddleware"),
    ("from langchain_tokenlean.compaction import TokenleanCompaction as old",
     "from langchain_tokenlean.compaction import TokenleanCompactionMiddleware as new",
     "TokenleanCompactionMiddleware"),
    ("from langchain_tokenlean.layout import TokenleanPromptLayout as old",
     "from langchain_tokenlean.layout import TokenleanPromptLayoutMiddleware as new",
     "TokenleanPromptLayoutMiddleware"),
    ("from langchain_tokenlean.routing_middleware import TokenleanRouting as old",
     "from langchain_tokenlean.routing_middleware import TokenleanRoutingMiddleware as new",
     "TokenleanRoutingMiddleware"),
    ("from llama_index.llms.tokenlean import CachedLLM as old",
     "from llama_index.llms.tokenlean import TokenleanCachedLLM as new", "TokenleanCachedLLM"),
    ("from llama_index.llms.tokenlean.cache import CachedLLM as old",
     "from llama_index.llms.tokenlean.cache import TokenleanCachedLLM as new", "TokenleanCachedLLM"),
    ("from tokenlean import Breaker as old", "from tokenlean.layout import Breaker as new", "tokenlean.layout.Breaker"),
    ("from tokenlean import Call as old", "from tokenlean.profile import Call as new", "tokenlean.profile.Call"),
    ("from tokenlean import Trace as old", "from tokenlean.profile import Trace as new", "tokenlean.profile.Trace"),
]  # fmt: skip

SCRIPT = """
import warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as first:
    {old}
with warnings.catch_warnings(record=True) as second:
    {old}
{new}
assert old is new, (old, new)
mine = [w for w in first if issubclass(w.category, DeprecationWarning) and "deprecated" in str(w.message)]
assert len(mine) == 1, [str(w.message) for w in first]
assert {expected!r} in str(mine[0].message), str(mine[0].message)
assert not [w for w in second if "deprecated" in str(w.message)], "warned twice"
print("ok")
"""


@pytest.mark.parametrize(("old", "new", "expected"), CASES, ids=[c[0].split(" import ")[1] for c in CASES])
def test_old_name_is_the_new_object_and_warns_once(old: str, new: str, expected: str) -> None:
    code = textwrap.dedent(SCRIPT).format(old=old, new=new, expected=expected)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_new_names_do_not_warn() -> None:
    code = textwrap.dedent("""
        import warnings
        warnings.simplefilter("error", DeprecationWarning)
        from langchain_tokenlean import (
            TokenleanCompactionMiddleware, TokenleanPromptLayoutMiddleware, TokenleanRoutingMiddleware,
        )
        from llama_index.llms.tokenlean import TokenleanCachedLLM
        from tokenlean.layout import Breaker
        from tokenlean.profile import Call, Trace
        import tokenlean
        assert "Breaker" not in tokenlean.__all__ and "Call" not in dir(tokenlean)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_calling_the_profile_package_runs_profile_and_warns_once() -> None:
    # ``tokenlean.profile`` used to be a function as well as the package; calling it still works.
    code = textwrap.dedent("""
        import warnings
        warnings.simplefilter("always")
        import tokenlean
        from tokenlean.profile import Call, ProfileReport, Trace
        from tokenlean.types import Usage
        trace = Trace(tuple(Call(task_id="t", index=i, usage=Usage(100, 10)) for i in range(3)))
        with warnings.catch_warnings(record=True) as seen:
            report = tokenlean.profile(trace, levers=("generate-less",))
            tokenlean.profile(trace, levers=("generate-less",))
        assert isinstance(report, ProfileReport)
        mine = [w for w in seen if "deprecated" in str(w.message)]
        assert len(mine) == 1 and "tokenlean.profile.profile" in str(mine[0].message), [str(w.message) for w in seen]
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]

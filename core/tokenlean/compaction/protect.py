"""Protected patterns: units that are always kept, whatever their score.

Some strings are worth far more than their tokens to an agent: the file path it must open, the
error code it is debugging, the head of a stack trace, a URL, and any identifier or long number
the user's request itself mentions. Dropping one of those costs a whole extra turn (the agent
re-reads the file), so a unit that contains one is kept even when that overshoots the budget
(``Compacted.budget_met`` then says so). Users extend the list with their own regexes.

Plain numbers and years from the query are *not* protected (a question about "2004" would pin
every sentence with that year); they raise the score instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from re import Pattern

__all__ = ["DEFAULT_PATTERNS", "ProtectedPatterns"]

DEFAULT_PATTERNS: tuple[str, ...] = (
    # URLs
    r"\bhttps?://[^\s<>\"')\]]+",
    # file paths: /abs/path, ./rel, ~/x, a/b/c.ext, name.ext with a code-ish extension
    r"(?<![\w/])(?:~|\.{1,2})?/(?:[\w.@+-]+/)+[\w.@+-]+",
    r"\b[\w.-]+/[\w./-]*\.\w{1,6}\b",
    r"\b[\w-]+\.(?:py|pyi|js|jsx|ts|tsx|java|go|rs|rb|c|cc|cpp|h|hpp|cs|kt|swift|php|sh|json|ya?ml|toml|ini|cfg|md|rst|txt|log|sql|html|css|lock)\b",
    # error codes and stack-trace heads
    r"\b(?:E|W|ERR|ERROR|EC)[-_]?\d{2,5}\b",
    r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]{2,}\b",
    r"\bHTTP(?:/\d(?:\.\d)?)?\s+[45]\d\d\b",
    r"\berrno\s*\d+",
    r"Traceback \(most recent call last\)",
    r"^\s*(?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception|Warning)\b(?::|$)",
    r"^\s*at [\w.$<>]+\([^)]*\)",
    r"\bpanic:",
    r"\bSegmentation fault\b",
)

_IDENT = re.compile(
    r"[A-Za-z_][\w]*_[\w]+"  # snake_case
    r"|[a-z]+[A-Z]\w*"  # camelCase
    r"|[A-Za-z]+\d[\w]*"  # name with digits: E1234, v2, py311
    r"|\w+(?:[./:-]\w+)+"  # dotted / path-like: os.path, v1.2.3, a/b
    r"|\d{5,}"  # long ids (issue numbers, hashes)
    r"|[0-9a-f]{7,40}"  # git hashes
)


class ProtectedPatterns:
    """Compiled default + user patterns, plus literals taken from the query."""

    def __init__(self, extra: Iterable[str | Pattern[str]] = (), *, defaults: bool = True) -> None:
        pats: list[Pattern[str]] = []
        if defaults:
            pats.extend(re.compile(p, re.M) for p in DEFAULT_PATTERNS)
        for p in extra:
            pats.append(p if isinstance(p, Pattern) else re.compile(p, re.M))
        self.patterns: tuple[Pattern[str], ...] = tuple(pats)
        # one alternation is much faster than N searches per unit
        self._combined: Pattern[str] | None = (
            re.compile("|".join(f"(?:{p.pattern})" for p in pats), re.M) if pats and self._same_flags(pats) else None
        )

    @staticmethod
    def _same_flags(pats: Sequence[Pattern[str]]) -> bool:
        return len({p.flags for p in pats}) == 1

    @staticmethod
    def query_literals(query: str) -> list[str]:
        """Identifiers, paths and long numbers named in the query (kept verbatim wherever they occur)."""
        out: dict[str, None] = {}
        for m in _IDENT.finditer(query):
            tok = m.group().strip(".:-/")
            if len(tok) >= 3:
                out[tok] = None
        return list(out)

    def matcher(self, query: str = "") -> _Matcher:
        return _Matcher(self, self.query_literals(query) if query else [])


class _Matcher:
    def __init__(self, owner: ProtectedPatterns, literals: Sequence[str]) -> None:
        self._owner = owner
        self._lit: Pattern[str] | None = (
            re.compile("|".join(re.escape(x) for x in sorted(literals, key=len, reverse=True))) if literals else None
        )

    def __call__(self, text: str) -> bool:
        o = self._owner
        if o._combined is not None:
            if o._combined.search(text):
                return True
        elif any(p.search(text) for p in o.patterns):
            return True
        return bool(self._lit is not None and self._lit.search(text))

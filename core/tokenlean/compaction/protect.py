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

_EXTS = (
    "py|pyi|js|jsx|ts|tsx|java|go|rs|rb|c|cc|cpp|h|hpp|cs|kt|swift|php|sh|json|yaml|yml|toml|ini|cfg"
    "|md|rst|txt|log|sql|html|css|lock"
)

#: (pattern, gates): a pattern only runs on text containing one of its gate substrings, which
#: keeps protection near-free on prose (a substring test is a memchr, a regex scan is not).
_DEFAULTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # URLs
    (r"https?://[^\s<>\"')\]]+", ()),
    # file paths: /abs/path, ./rel, ~/x, a/b/c.ext, name.ext with a code-ish extension.
    # Each pattern starts with a literal so the regex engine can skip ahead (prose stays cheap).
    (r"/(?:[\w.@+-]+/)+[\w.@+-]+", ("/",)),
    (r"/[\w./-]*\.[A-Za-z]\w{0,5}\b", ("/",)),
    (rf"\.(?:{_EXTS})\b", ()),
    # error codes and stack-trace heads
    (r"\b(?:E|W|ERR|ERROR|EC)[-_]?\d{2,5}\b", ()),
    (r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]{2,}\b", ("_",)),
    (r"\bHTTP(?:/\d(?:\.\d)?)?\s+[45]\d\d\b", ("HTTP",)),
    (r"\berrno\s*\d+", ("errno",)),
    (r"Traceback \(most recent call last\)", ()),
    (r"^\s*(?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception|Warning)\b(?::|$)", ("Error", "Exception", "Warning")),
    (r"^\s*at [\w.$<>]+\([^)]*\)", ("at ",)),
    (r"panic:", ()),
    (r"Segmentation fault\b", ()),
)

DEFAULT_PATTERNS: tuple[str, ...] = tuple(p for p, _ in _DEFAULTS)

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
        gates: list[tuple[str, ...]] = []
        if defaults:
            for src, g in _DEFAULTS:
                pats.append(re.compile(src, re.M))
                gates.append(g)
        for user in extra:
            pats.append(user if isinstance(user, Pattern) else re.compile(user, re.M))
            gates.append(())
        self.patterns: tuple[Pattern[str], ...] = tuple(pats)
        self.gates: tuple[tuple[str, ...], ...] = tuple(gates)
        # one alternation is much faster than N searches per unit
        self._combined: Pattern[str] | None = (
            re.compile("|".join(f"(?:{p.pattern})" for p in pats), re.M)
            if pats and self._same_flags(pats)
            else None
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
            re.compile("|".join(re.escape(x) for x in sorted(literals, key=len, reverse=True)))
            if literals
            else None
        )

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Every protected match in ``text`` (one scan per pattern: far cheaper than per unit)."""
        out: list[tuple[int, int]] = []
        for p, gate in zip(self._owner.patterns, self._owner.gates, strict=True):
            if gate and not any(g in text for g in gate):
                continue
            for m in p.finditer(text):
                a, b = m.span()
                # "name.py": a file extension only counts right after a word character
                if b > a and not (
                    text[a] == "." and (a == 0 or not (text[a - 1].isalnum() or text[a - 1] in "_-"))
                ):
                    out.append((a, b))
        if self._lit is not None:
            out.extend(m.span() for m in self._lit.finditer(text))
        return out

    def __call__(self, text: str) -> bool:
        o = self._owner
        if o._combined is not None:
            if o._combined.search(text):
                return True
        elif any(p.search(text) for p in o.patterns):
            return True
        return bool(self._lit is not None and self._lit.search(text))

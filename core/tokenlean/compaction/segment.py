"""Segmentation: cut a text into units that can be kept or dropped whole.

The verbatim guarantee rests here. Units are *contiguous spans that tile the text*: unit ``i``
is ``text[start:end]``, ``units[i].end == units[i + 1].start``, the first starts at 0 and the
last ends at ``len(text)``. Spaces between two units ride with the one after it (as BPE tokenizers attach
them) and newlines with the one before it, so any order-keeping subset of units, concatenated, is
byte-identical to pieces of the input and reads naturally.

Which cut points we pick decides what compaction can express: prose is cut at sentences,
markdown at headings / list items / blocks, logs at lines, Python at top-level statements with a
``def``/``class`` signature kept apart from its body (so a body can go while its signature
stays: the model still sees the API), other code at top-level brace or indentation blocks, and
JSON at top-level members. ``group`` numbers the block a unit belongs to (a paragraph, a
``Document [3](Title: …)`` passage, a markdown section, a Python class): scorers use it to judge a
sentence by its neighbourhood as well as by itself.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = ["Kind", "Unit", "detect_kind", "segment"]

Kind = Literal["auto", "prose", "markdown", "code", "python", "json", "log"]


@dataclass(frozen=True, slots=True)
class Unit:
    """One keep-or-drop span of a text: ``text == source[start:end]``.

    ``kind`` says what it is (``sentence``, ``line``, ``heading``, ``list_item``, ``code``,
    ``signature``, ``json_member``, ``json_bracket``, ``fence``, ``clause``); ``group`` the
    enclosing block; ``sentence`` numbers sentences, so a long sentence cut into clauses (each
    clause can go alone, which is what lets a deep cut keep the one clause that answers) is still
    embedded and judged as one sentence.
    """

    start: int
    end: int
    kind: str
    group: int
    text: str
    sentence: int = 0  # clauses of one sentence share it (scorers embed the whole sentence once)


# -- sentences -------------------------------------------------------------------------------

_SENT_END = re.compile(r"[.!?…]+[\"'”’)\]]*\s+")
_ABBREV = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "st",
        "jr",
        "sr",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "u.s",
        "u.k",
        "no",
        "inc",
        "ltd",
        "co",
        "mt",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "fig",
        "al",
        "approx",
        "dept",
        "est",
        "gen",
        "gov",
        "lt",
        "col",
        "sgt",
        "rev",
        "ft",
        "op",
        "vol",
        "pp",
        "cf",
    ]
)
_WORD_BEFORE = re.compile(r"([\w.]+)[.!?…]*[\"'”’)\]]*\s*$")


def _sentence_cuts(text: str, start: int, end: int) -> Iterator[int]:
    """Offsets (absolute) where a new sentence begins inside ``text[start:end]``."""
    for m in _SENT_END.finditer(text, start, end):
        nxt = m.end()
        if nxt >= end:
            break
        c = text[nxt]
        if not (c.isupper() or c.isdigit() or c in "\"'“‘([*`"):
            continue
        if text[m.start()] == ".":
            w = _WORD_BEFORE.search(text, max(start, m.start() - 12), m.start() + 1)
            if w:
                word = w.group(1).lower().rstrip(".")
                if word in _ABBREV or (len(word) == 1 and word.isalpha()):
                    continue
        yield nxt


_CLAUSE = re.compile(r"[,;:]\s+|\s+(?=\()|\s+[–—]\s+")
MIN_CLAUSE_CHARS = 28


def _clause_cuts(text: str, start: int, end: int) -> Iterator[int]:
    """Cut points between clauses of one sentence, leaving no piece shorter than a few words."""
    last = start
    for m in _CLAUSE.finditer(text, start, end):
        c = m.end()
        if c - last >= MIN_CLAUSE_CHARS and end - c >= MIN_CLAUSE_CHARS:
            yield c
            last = c


# -- markdown / prose / logs -----------------------------------------------------------------

_HEADING = re.compile(r"#{1,6}\s|[=-]{3,}\s*$")
_LIST_ITEM = re.compile(r"\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_FENCE = re.compile(r"\s*(```|~~~)")
# Retrieval layouts put a title in front of each passage ("Document [3](Title: Foo (band)) text",
# "[2] Title: …"): a unit of its own, and the start of a new group.
_DOC_HEADER = re.compile(
    r"(?:Document|Doc|Passage|Source)\s*\[\d+\]\s*(?:\(Title:(?:[^()\n]|\([^()\n]*\))*\))?\s*"
    r"|\[\d+\]\s*Title:[^\n]*\n?"
)


def _lines(text: str, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
    end = len(text) if end is None else end
    i = start
    while i < end:
        j = text.find("\n", i, end)
        j = end if j < 0 else j + 1
        yield i, j
        i = j


def _markdown_cuts(
    text: str, start: int, end: int, cuts: list[tuple[int, str, bool]], clauses: bool = False
) -> None:
    """Append (offset, kind, new_group) cut points for markdown / prose / log text."""
    in_fence = False
    fence_mark = ""
    prev_blank = True
    item_open = False
    for a, b in _lines(text, start, end):
        line = text[a:b]
        stripped = line.strip()
        if in_fence:
            if stripped.startswith(fence_mark):
                in_fence = False
                cuts.append((b, "line", False))  # the text after the fence starts fresh
            continue
        fm = _FENCE.match(line)
        if fm:
            in_fence, fence_mark = True, fm.group(1)
            cuts.append((a, "fence", True))
            prev_blank = False
            item_open = False
            continue
        if not stripped:
            prev_blank = True
            item_open = False
            continue
        if _HEADING.match(line):
            cuts.append((a, "heading", True))
            prev_blank, item_open = False, False
            continue
        if _LIST_ITEM.match(line):
            cuts.append((a, "list_item", prev_blank and not item_open))
            prev_blank, item_open = False, True
            continue
        if item_open and line[:1] in " \t":
            continue  # continuation of the list item above
        item_open = False
        body = a
        dm = _DOC_HEADER.match(text, a, b)
        if dm and dm.end() > a:
            cuts.append((a, "heading", True))
            body = dm.end()
            if body >= b:
                prev_blank = False
                continue
            cuts.append((body, "sentence", False))
        else:
            cuts.append((a, "sentence", prev_blank))
        prev = body
        for c in [*_sentence_cuts(text, body, b), b]:
            if clauses and c - prev > 2 * MIN_CLAUSE_CHARS:
                for cc in _clause_cuts(text, prev, c):
                    cuts.append((cc, "clause", False))
            if c < b:
                cuts.append((c, "sentence", False))
            prev = c
        prev_blank = False


def _log_cuts(text: str, start: int, end: int, cuts: list[tuple[int, str, bool]]) -> None:
    prev_blank = True
    for a, b in _lines(text, start, end):
        if text[a:b].strip():
            cuts.append((a, "line", prev_blank))
            prev_blank = False
        else:
            prev_blank = True


# -- code ------------------------------------------------------------------------------------


def _line_offsets(text: str) -> list[int]:
    offs = [0]
    for m in re.finditer("\n", text):
        offs.append(m.end())
    return offs


def _python_cuts(text: str, cuts: list[tuple[int, str, bool]]) -> bool:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    offs = _line_offsets(text)

    def at(line: int) -> int:
        return offs[line - 1] if line - 1 < len(offs) else len(text)

    def visit(body: list[ast.stmt], top: bool) -> None:
        for node in body:
            first = node.lineno
            decos = getattr(node, "decorator_list", None)
            if decos:
                first = min(first, *(d.lineno for d in decos))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                cuts.append((at(first), "signature", top))
                inner = node.body
                if inner and inner[0].lineno > node.lineno:
                    if isinstance(node, ast.ClassDef):
                        visit(inner, False)  # each class statement / method is its own unit
                    else:
                        cuts.append((at(inner[0].lineno), "code", False))
            else:
                cuts.append((at(first), "code", top and isinstance(node, (ast.If, ast.Try, ast.With))))

    visit(tree.body, True)
    return True


_BLOCK_OPEN = re.compile(r".*[{:]\s*(//.*|#.*)?$")


def _generic_code_cuts(text: str, start: int, end: int, cuts: list[tuple[int, str, bool]]) -> None:
    """Top-level blocks by indentation; a block's signature line is a unit of its own."""
    pending_body = False
    for a, b in _lines(text, start, end):
        line = text[a:b]
        if not line.strip():
            continue
        if pending_body:
            cuts.append((a, "code", False))
            pending_body = False
        if line[0] not in " \t}])" and not line.startswith(("end", "#", "//", "*")):
            if _BLOCK_OPEN.match(line.rstrip("\n")):
                cuts.append((a, "signature", True))
                pending_body = True
            else:
                cuts.append((a, "code", False))


# -- JSON ------------------------------------------------------------------------------------


def _json_cuts(text: str, cuts: list[tuple[int, str, bool]]) -> bool:
    """Cut at each top-level member of an object / element of an array (string-aware scan)."""
    i = 0
    n = len(text)
    while i < n and text[i].isspace():
        i += 1
    if i >= n or text[i] not in "{[":
        return False
    cuts.append((0, "json_bracket", True))
    depth = 0
    in_str = False
    esc = False
    member_start = False
    for j in range(i, n):
        c = text[j]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
            continue
        if member_start and depth == 1 and not c.isspace() and c not in "]}":
            cuts.append((j, "json_member", False))
            member_start = False
        if c == '"':
            in_str = True
        elif c in "{[":
            depth += 1
            if depth == 1:
                member_start = True
        elif c in "}]":
            depth -= 1
            if depth == 0:
                cuts.append((j, "json_bracket", False))
                return True
        elif c == "," and depth == 1:
            member_start = True
    return True


# -- entry points ----------------------------------------------------------------------------

_CODE_HINT = re.compile(r"^(?:def |class |import |from \S+ import |async def |@\w)", re.M)
_BRACE_HINT = re.compile(r"[;{}]\s*$", re.M)
_LOG_HINT = re.compile(r"^\s*(?:\[?\d{2,4}[-/:]\d{2}|\[?(?:INFO|DEBUG|WARN|WARNING|ERROR|TRACE)\b)", re.M)


def detect_kind(text: str) -> Kind:
    """A cheap guess at what ``text`` is: json, python, code, log, or markdown (prose)."""
    head = text.lstrip()[:1]
    if head in "{[" and head:
        try:
            json.loads(text)
        except (ValueError, RecursionError):
            pass
        else:
            return "json"
    n_lines = text.count("\n") + 1
    if n_lines >= 2 and _CODE_HINT.search(text):
        try:
            ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass
        else:
            return "python"
    if n_lines >= 4:
        if len(_BRACE_HINT.findall(text)) >= 0.3 * n_lines:
            return "code"
        if len(_LOG_HINT.findall(text)) >= 0.5 * n_lines:
            return "log"
    return "markdown"


def segment(text: str, kind: Kind = "auto", *, clauses: bool = False) -> list[Unit]:
    """Tile ``text`` into units (see the module docstring for the guarantees).

    ``clauses=True`` also cuts long prose sentences at commas, semicolons, dashes and
    parentheses (kind ``clause``), for budgets so tight that whole sentences are too coarse.
    """
    if not isinstance(text, str):
        raise TypeError(f"segment() takes str, got {type(text).__name__}")
    if not text:
        return []
    if kind == "auto":
        kind = detect_kind(text)
    cuts: list[tuple[int, str, bool]] = []
    n = len(text)
    if kind == "json":
        if not _json_cuts(text, cuts):
            cuts.clear()
            _markdown_cuts(text, 0, n, cuts)
    elif kind == "python":
        if not _python_cuts(text, cuts):
            cuts.clear()
            _generic_code_cuts(text, 0, n, cuts)
    elif kind == "code":
        _generic_code_cuts(text, 0, n, cuts)
    elif kind == "log":
        _log_cuts(text, 0, n, cuts)
    else:
        _markdown_cuts(text, 0, n, cuts, clauses)
    return _tile(text, cuts)


def _tile(text: str, cuts: list[tuple[int, str, bool]]) -> list[Unit]:
    """Turn cut points into tiling units; whitespace-only pieces join the unit before them."""
    n = len(text)
    pts: dict[int, tuple[str, bool]] = {}
    for off, kind, new_group in cuts:
        # Spaces before a cut go to the *next* unit (" Next sentence."), newlines stay with the
        # previous one: that is how BPE tokenizers split text, so unit token counts add up to
        # the text's count and a budget in summed unit tokens is a budget in real tokens.
        while 0 < off < n and text[off - 1] in " \t" and text[off] not in "\n":
            off -= 1
        if 0 <= off < n:
            old = pts.get(off)
            pts[off] = (
                kind if old is None or old[0] == "sentence" else old[0],
                new_group or bool(old and old[1]),
            )
    if 0 not in pts:
        first_kind = pts[min(pts)][0] if pts else "sentence"
        pts[0] = (first_kind, True)
    offs = sorted(pts)
    units: list[Unit] = []
    group = -1
    sent = -1
    for idx, a in enumerate(offs):
        b = offs[idx + 1] if idx + 1 < len(offs) else n
        kind, new_group = pts[a]
        piece = text[a:b]
        if units and not piece.strip():
            last = units[-1]
            units[-1] = Unit(last.start, b, last.kind, last.group, text[last.start : b], last.sentence)
            continue
        if new_group or group < 0:
            group += 1
        if kind != "clause" or sent < 0 or new_group:
            sent += 1
        units.append(Unit(a, b, kind, group, piece, sent))
    return units

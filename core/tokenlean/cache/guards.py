"""Guards: cheap, explainable checks that two queries ask for the same answer.

Embedding cosine cannot see what matters most for a cached answer: "4 days" vs "11 days", "can" vs
"can not" and "from Paris to Rome" vs "from Rome to Paris" look like near-duplicates to a sentence
embedder, because they share almost every word. Each guard below extracts one kind of fact from
both texts and vetoes the hit when they disagree. Guards are deliberately *hard* vetoes (a cached
answer about the wrong number is worse than a miss) and each can be switched off and measured on
its own (``benchmarks/semantic_cache.py`` reports how many true and false pairs each one rejects).

Guards judge a candidate hit *within* a namespace; what makes two requests share a namespace or an
exact key is decided in :mod:`tokenlean.cache.scope`. Facts are extracted once per text
(:func:`extract`) and reused for every candidate comparison; the same facts feed the lexical
features of the learned scorer (:mod:`tokenlean.cache.scoring`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from tokenlean._text import COMMON_STOPWORDS, WORD_PATTERN, word_set
from tokenlean.cache.scope import normalize_text

__all__ = [
    "ALL_GUARDS",
    "DEFAULT_GUARDS",
    "TextFacts",
    "extract",
    "failed_guard",
]

_TOKEN = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?|[^\sa-z0-9]", re.IGNORECASE)
_WORD = re.compile(WORD_PATTERN)

# The common core plus contraction stubs and request filler ("please tell me the best way to ...");
# negations are NOT stopwords here: they are facts a guard compares.
STOPWORDS = COMMON_STOPWORDS | word_set(
    """
    whose may might must shall d ll m o re ve y because until while ones thing things way
    ways someone something anyone anything much many best good better really ever make makes
    making use using used like want need know tell please
    """
)

NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "neither",
        "nor",
        "nowhere",
        "without",
        "cannot",
        "cant",
        "dont",
        "doesnt",
        "didnt",
        "isnt",
        "arent",
        "wasnt",
        "werent",
        "wont",
        "wouldnt",
        "shouldnt",
        "couldnt",
        "havent",
        "hasnt",
        "hadnt",
        "aint",
    ]
)

_NUMBER_WORDS: dict[str, str] = {
    w: str(i)
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
_NUMBER_WORDS.update(
    {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
     "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000",
     "dozen": "12", "first": "1", "second": "2", "third": "3", "fourth": "4", "fifth": "5", "sixth": "6",
     "seventh": "7", "eighth": "8", "ninth": "9", "tenth": "10", "half": "0.5", "twice": "2",
     "double": "2", "triple": "3"}
)  # fmt: skip
_NUM = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?:st|nd|rd|th|k|m|bn)?(?![\w])|\d+", re.IGNORECASE)

_MONTHS = {
    m[:3]: m
    for m in [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ]
}
_DATE_WORDS = frozenset(
    [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "today",
        "tomorrow",
        "yesterday",
        "tonight",
        "weekend",
        "morning",
        "evening",
        "night",
        "noon",
        "midnight",
        "spring",
        "summer",
        "autumn",
        "fall",
        "winter",
    ]
)
_RELATIVE = re.compile(r"\b(last|next|this|previous|coming)\s+(week|month|year|day|decade|century|quarter)\b")
_CENTURY = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)\s+century\b")

_QUOTED = re.compile(
    r"\"([^\"]{1,200})\"|“([^”]{1,200})”|‘([^’]{1,200})’|`([^`]{1,200})`|(?<!\w)'([^']{2,200})'(?!\w)"
)
_CODE = re.compile(
    r"(?<![\w.])(?:[A-Za-z_][\w]*\.)+[A-Za-z_]\w*(?:\(\))?"  # dotted.names / calls
    r"|\b[a-z]+(?:[A-Z][a-z0-9]*)+\w*\b"  # camelCase
    r"|\b[A-Za-z]*_[A-Za-z0-9_]+\b"  # snake_case
    r"|\b\w+\(\)"  # call()
    r"|(?<!\w)--?[a-zA-Z][\w-]+"  # --flags
)
_REL_PATTERNS = (
    re.compile(r"\bfrom\s+(?:the\s+)?([\w.+#-]+(?:\s+[\w.+#-]+)?)\s+(?:to|into|until|till)\s+(?:the\s+)?([\w.+#-]+)"),
    re.compile(r"\b([\w.+#-]+)\s*(?:->|→)\s*([\w.+#-]+)"),
    re.compile(r"\b([\w.+#-]+)\s+(?:is\s+)?(?:better|worse|bigger|smaller|faster|slower|larger|greater|"
               r"less|more|higher|lower|stronger|weaker|cheaper|older|younger)\s+than\s+([\w.+#-]+)"),
)  # fmt: skip
_WH = ("what", "how", "why", "which", "who", "whom", "whose", "when", "where", "is", "are", "can", "do",
       "does", "should", "will", "would", "could", "did")  # fmt: skip


def _stem(word: str) -> str:
    """A tiny suffix stripper: enough to match "cars"/"car" and "learning"/"learn"."""
    for suffix, keep in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                return word
            return word[: -len(suffix)] + keep
    return word


def _norm_number(tok: str) -> str:
    t = tok.lower().replace(",", "")
    t = re.sub(r"(st|nd|rd|th)$", "", t)
    mult = {"k": 1e3, "m": 1e6, "bn": 1e9}
    for suf, m in mult.items():
        if t.endswith(suf) and t[: -len(suf)].replace(".", "", 1).lstrip("+-").isdigit():
            return _fmt(float(t[: -len(suf)]) * m)
    try:
        return _fmt(float(t))
    except ValueError:
        return t


def _fmt(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)


@dataclass(frozen=True, slots=True)
class TextFacts:
    """What the guards and lexical features need to know about one query text."""

    text: str
    norm: str
    words: tuple[str, ...]
    content: frozenset[str]
    numbers: frozenset[str]
    dates: frozenset[str]
    negated: bool
    negations: int
    entities: frozenset[str]
    quoted: frozenset[str]
    code: frozenset[str]
    relations: tuple[tuple[str, str], ...]
    wh: str
    trigrams: frozenset[str]


@lru_cache(maxsize=65536)
def extract(text: str) -> TextFacts:
    """Facts of one text (memoised: cached entries are compared again and again)."""
    raw = unicodedata.normalize("NFKC", text)
    norm = normalize_text(raw)
    simple = norm.replace("’", "'")
    words = tuple(w.replace("'", "") for w in _WORD.findall(simple))
    numbers = {_norm_number(m.group(0)) for m in _NUM.finditer(simple)}
    numbers.update(_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS)
    dates = {
        f"m:{_MONTHS[w[:3]]}" for w in words if w[:3] in _MONTHS and (len(w) == 3 or w in _MONTHS.values())
    }
    if "m:may" in dates and "May" not in raw:  # "may" is far more often the verb than the month
        dates.discard("m:may")
    dates.update(f"d:{w}" for w in words if w in _DATE_WORDS)
    dates.update(f"r:{a} {b}" for a, b in _RELATIVE.findall(simple))
    dates.update(f"c:{c}" for c in _CENTURY.findall(simple))
    # counted, not just noticed: "not ... without" is a second negation, and it flips the meaning
    negations = sum(1 for w in _WORD.findall(simple) if w.endswith("n't") or w.replace("'", "") in NEGATIONS)
    negated = negations > 0
    # Entities: capitalised words not at a sentence start, and acronyms; compared case-insensitively.
    entities: set[str] = set()
    for sent in re.split(r"(?<=[.?!])\s+", raw):
        toks = _WORD.findall(sent)
        for i, tok in enumerate(toks):
            if (tok.isupper() and len(tok) >= 2) or (
                i > 0 and tok[:1].isupper() and tok.lower() not in STOPWORDS
            ):
                entities.add(_stem(tok.lower()))
    quoted = frozenset(next(g for g in m.groups() if g is not None).strip() for m in _QUOTED.finditer(raw))
    code = frozenset(m.group(0) for m in _CODE.finditer(raw) if not m.group(0).replace(".", "").isdigit())
    relations: list[tuple[str, str]] = []
    for pat in _REL_PATTERNS:
        for a, b in pat.findall(simple):
            relations.append((_stem(a.split()[-1]), _stem(b.split()[-1])))
    content = frozenset(_stem(w) for w in words if w not in STOPWORDS and w not in NEGATIONS)
    wh = next((w for w in words[:3] if w in _WH), "")
    padded = f" {simple} "
    trigrams = frozenset(padded[i : i + 3] for i in range(len(padded) - 2))
    return TextFacts(
        text=text,
        norm=norm,
        words=words,
        content=content,
        numbers=frozenset(numbers),
        dates=frozenset(dates),
        negated=bool(negated),
        negations=negations,
        entities=frozenset(entities),
        quoted=quoted,
        code=code,
        relations=tuple(relations),
        wh=wh,
        trigrams=trigrams,
    )


# -- guards ------------------------------------------------------------------------------------
def _numbers(a: TextFacts, b: TextFacts) -> bool:
    return a.numbers == b.numbers


def _dates(a: TextFacts, b: TextFacts) -> bool:
    return a.dates == b.dates


def _negation(a: TextFacts, b: TextFacts) -> bool:
    return a.negations == b.negations


def _entities(a: TextFacts, b: TextFacts) -> bool:
    """Every entity of one side must appear (as a stemmed word) on the other side."""
    sa = {_stem(w) for w in a.words}
    sb = {_stem(w) for w in b.words}
    return all(e in sb for e in a.entities) and all(e in sa for e in b.entities)


def _quoted(a: TextFacts, b: TextFacts) -> bool:
    return a.quoted == b.quoted


def _code(a: TextFacts, b: TextFacts) -> bool:
    return a.code == b.code


def _position(words: list[str], w: str) -> int:
    try:
        return words.index(w)
    except ValueError:
        return -1


def _order(a: TextFacts, b: TextFacts) -> bool:
    """An ordered relation ("from X to Y", "X better than Y") must not be reversed on the other side."""
    for rel, other in ((a.relations, b), (b.relations, a)):
        if not rel:
            continue
        stems = [_stem(w) for w in other.words]
        for x, y in rel:
            if x == y:
                continue
            px, py = _position(stems, x), _position(stems, y)
            if px >= 0 and py >= 0 and py < px:
                return False
    return True


GuardFn = Callable[[TextFacts, TextFacts], bool]

#: Every guard, in the order they are checked (cheapest and most decisive first).
ALL_GUARDS: Mapping[str, GuardFn] = {
    "numbers": _numbers,
    "negation": _negation,
    "order": _order,
    "quoted": _quoted,
    "code": _code,
    "dates": _dates,
    "entities": _entities,
}
DEFAULT_GUARDS: tuple[str, ...] = tuple(ALL_GUARDS)


def failed_guard(a: TextFacts, b: TextFacts, guards: Iterable[str] = DEFAULT_GUARDS) -> str | None:
    """Name of the first guard on which ``a`` and ``b`` disagree, or None when all agree."""
    for name in guards:
        if not ALL_GUARDS[name](a, b):
            return name
    return None

"""Text helpers shared by the levers that reason about words (cache guards, compaction scoring).

Both the semantic-cache guards and the compaction scorer drop function words before comparing or
ranking text. Each extends this common English core with words that matter for its own task (the
cache also ignores request filler such as "please" or "tell"; compaction also ignores "not", which
the cache must keep as a negation), so the shared part lives here once.
"""

from __future__ import annotations

__all__ = ["COMMON_STOPWORDS", "WORD_PATTERN", "word_set"]


def word_set(words: str) -> frozenset[str]:
    """The whitespace-separated words of ``words``: keeps long word lists readable in source."""
    return frozenset(words.split())


#: A word: letters/digits (no underscore), with an optional apostrophe suffix ("don't", "o’clock").
WORD_PATTERN = r"[^\W_]+(?:['’][^\W_]+)?"

#: English function words that neither lever treats as content.
COMMON_STOPWORDS = word_set(
    """
    a an the is are was were be been being am do does did doing have has had having
    i me my we our you your he she it its they them their this that these those
    what which who whom when where why how
    of in on at by for with about as into through to from up down out over under
    again then once there here all any both each few more most other some such only own same
    so too very can will just should would could s t and or but if get got one also
    """
)

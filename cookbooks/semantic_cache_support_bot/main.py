"""A support bot whose repeated questions are answered from tokenlean's semantic cache.

Runs against the local llama.cpp server (``TOKENLEAN_BASE_URL`` / ``TOKENLEAN_MODEL``), or starts
one itself. Paraphrases of an earlier question are served from the cache; a question that differs
in a number or a negation is not (the guards say why).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from langchain_core.globals import set_llm_cache
from langchain_openai import ChatOpenAI

from langchain_tokenlean.cache import TokenleanCache
from tokenlean.cache import SemanticCache
from tokenlean.server import model_endpoint

QUESTIONS = [
    "How do I reset my password?",
    "how do i reset my password",  # exact tier (case, spacing, punctuation)
    "How can I reset my password?",  # semantic tier
    "How do I not reset my password?",  # negation guard: a different question
    "Can I get a refund within 30 days?",
    "Can I get a refund within 60 days?",  # number guard
]


def main() -> None:
    # $TOKENLEAN_BASE_URL, or a local llama.cpp server for the duration of the block
    with model_endpoint() as (base_url, model_name):
        db = Path(tempfile.mkdtemp()) / "support-cache.db"
        cache = TokenleanCache(SemanticCache(db), tenant="acme-support")
        set_llm_cache(cache)
        model = ChatOpenAI(
            base_url=base_url, api_key="local", model=model_name, temperature=0,
            extra_body={"max_tokens": 96},  # room to finish: a cut-off answer is never cached
        )  # fmt: skip
        for q in QUESTIONS:
            answer = model.invoke(
                [("system", "You are ACME's support bot. Answer in one sentence."), ("human", q)]
            )
            r = cache.last_result
            if r is not None and r.hit:
                how = f"HIT ({r.tier}, similarity {r.similarity:.3f})"
            else:
                how = f"miss ({r.rejected_by if r is not None else '-'})"
            print(f"{q!r:45} -> {how}: {str(answer.content)[:60]!r}")
        stats = cache.cache.stats()
        print(f"hits {stats['hits']} of {stats['lookups']} lookups; guards rejected {stats['rejected_by']}")


if __name__ == "__main__":
    main()

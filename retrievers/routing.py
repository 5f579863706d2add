"""Domain routing for image queries (MMed-RAG's domain-aware retrieval, which its released
code lacks): the query image's nearest indexed images vote for a domain (chest-xray,
chest-ct, head-mr...), and the search is restricted to it when the vote is clear.

The classifier is the index itself: a score-weighted k-nearest-neighbour vote over the image
records and the domain their corpus metadata gave them. It needs no training, follows every
incremental update, and reads only labels the readers already set. A close vote widens the
route to every domain that together holds `coverage` of the votes; no vote (an index without
images) leaves the search unrestricted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from indexers.base import VectorIndex
from rag.store import RecordStore


@dataclass
class Route:
    domains: list[str]  # searched domains, best first; empty = no restriction
    confidence: float  # vote share of the best domain
    votes: dict[str, float] = field(default_factory=dict)
    widened: bool = False
    source: str = "knn"  # "knn" | "override" (the user's --domain) | "none"

    def describe(self) -> str:
        if self.source == "override":
            return f"domain={','.join(self.domains)} (given)"
        if not self.domains:
            return "domain=any (no vote)"
        how = "widened" if self.widened else "routed"
        return f"domain={','.join(self.domains)} ({how}, p={self.confidence:.2f})"

    def to_dict(self) -> dict:
        return {"domains": self.domains, "confidence": round(self.confidence, 4),
                "votes": {d: round(v, 4) for d, v in self.votes.items()},
                "widened": self.widened, "source": self.source, "text": self.describe()}


@dataclass
class DomainRouter:
    store: RecordStore
    index: VectorIndex
    k: int = 15
    threshold: float = 0.6  # vote share needed to restrict to one domain
    coverage: float = 0.9  # a widened route keeps the domains holding this share of votes

    def route(self, vector: np.ndarray, exclude: frozenset[int] = frozenset()) -> Route:
        """The domains to search for a query image's (dim,) embedding. `exclude`: row ids
        that must not vote (an evaluation's query image, when it is in the index itself)."""
        depth = self.k + len(exclude)
        scores, ids = self.index.search("image", vector[None, :].astype(np.float32), depth)
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0])
                 if i >= 0 and int(i) not in exclude][:self.k]
        if not found:
            return Route([], 0.0, source="none")
        records = self.store.get(i for i, _ in found)
        votes: dict[str, float] = {}
        for rowid, score in found:
            domain = records[rowid].domain if rowid in records else ""
            if domain:
                # shifted so that every neighbour counts, the nearest ones most
                votes[domain] = votes.get(domain, 0.0) + max(score, 0.0) + 1e-3
        if not votes:
            return Route([], 0.0, source="none")
        total = sum(votes.values())
        ranked = sorted(((d, v / total) for d, v in votes.items()), key=lambda item: -item[1])
        share = dict(ranked)
        best, confidence = ranked[0]
        if confidence >= self.threshold:
            return Route([best], confidence, share)
        kept, held = [], 0.0
        for domain, part in ranked:
            kept.append(domain)
            held += part
            if held >= self.coverage:
                break
        return Route(kept, confidence, share, widened=True)

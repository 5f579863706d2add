"""Domain routing for image queries (MMed-RAG's domain-aware retrieval, which its released
code lacks): the query image's nearest indexed images vote for a domain (chest-xray,
chest-ct, head-mr...), and the search is restricted to it when the vote is clear.

Two classifiers, one Route:
  - "knn": a score-weighted k-nearest-neighbour vote over the indexed images and the domain
    their corpus metadata gave them. It needs no training and follows every update;
  - "probe", when the index holds no image to vote (a reports-only index): the encoder's
    linear domain probe (rag/encoders/domain_probe.py, trained with the heads), its probabilities
    restricted to the domains the index holds. On held-out images of the shared data the
    probe names the domain 0.87 of the time (the modality 0.96; the vote measured 0.865 on
    the older MedPix labels): the vote comes first.
A clear winner (share >= `threshold`) restricts the search to it; a close call widens the route
to every domain that together holds `coverage`; no vote (an index without images) leaves the
search unrestricted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from indexers.base import VectorIndex
from rag.encoders.domain_probe import DomainProbe
from rag.store import RecordStore


@dataclass
class Route:
    domains: list[str]  # searched domains, best first; empty = no restriction
    confidence: float  # vote share of the best domain
    votes: dict[str, float] = field(default_factory=dict)
    widened: bool = False
    source: str = "knn"  # "probe" | "knn" | "override" (the user's --domain) | "none"

    def describe(self) -> str:
        if self.source == "override":
            return f"domain={','.join(self.domains)} (given)"
        if not self.domains:
            return "domain=any (no vote)"
        how = "widened" if self.widened else "routed"
        by = " by the probe" if self.source == "probe" else ""
        return f"domain={','.join(self.domains)} ({how}{by}, p={self.confidence:.2f})"

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
    probe: DomainProbe | None = None  # the encoder's domain classifier; None: the kNN vote

    def route(self, vector: np.ndarray, exclude: frozenset[int] = frozenset()) -> Route:
        """The domains to search for a query image's (dim,) embedding. `exclude`: row ids
        that must not vote (an evaluation's query image, when it is in the index itself)."""
        votes = self._knn_votes(vector, exclude)
        if votes or self.probe is None:
            return self._decide(votes, "knn")
        held = {domain for counts in self.store.counts().values() for domain in counts}
        probabilities = self.probe.probabilities(vector[None, :])[0]
        return self._decide({name: float(p) for name, p in zip(self.probe.classes, probabilities)
                             if name in held}, "probe")

    def _knn_votes(self, vector: np.ndarray, exclude: frozenset[int]) -> dict[str, float]:
        depth = self.k + len(exclude)
        scores, ids = self.index.search("image", vector[None, :].astype(np.float32), depth)
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0])
                 if i >= 0 and int(i) not in exclude][:self.k]
        if not found:
            return {}
        records = self.store.get(i for i, _ in found)
        votes: dict[str, float] = {}
        for rowid, score in found:
            domain = records[rowid].domain if rowid in records else ""
            if domain:
                # shifted so that every neighbour counts, the nearest ones most
                votes[domain] = votes.get(domain, 0.0) + max(score, 0.0) + 1e-3
        return votes

    def _decide(self, votes: dict[str, float], source: str) -> Route:
        total = sum(votes.values())
        if not votes or total <= 0:
            return Route([], 0.0, source="none")
        ranked = sorted(((d, v / total) for d, v in votes.items()), key=lambda item: -item[1])
        share = dict(ranked)
        best, confidence = ranked[0]
        if confidence >= self.threshold:
            return Route([best], confidence, share, source=source)
        kept, held = [], 0.0
        for domain, part in ranked:
            kept.append(domain)
            held += part
            if held >= self.coverage:
                break
        return Route(kept, confidence, share, widened=True, source=source)

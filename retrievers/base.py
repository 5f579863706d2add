"""The Retriever interface: the shared work (checks, adaptive k, study grouping, de-duplication,
linking an image hit to its study's report) lives here once; subclasses only rank candidates."""
from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from rag.store import RecordStore
from rag.text.words import has_cjk
from rag.types import Hit, Query

log = logging.getLogger(__name__)


@dataclass
class AdaptiveK:
    """Keep hits while the score stays within `ratio` of the top score (MMed-RAG's rule),
    never fewer than k_min nor more than k_max."""

    k_min: int = 1
    k_max: int = 10
    ratio: float = 0.9

    def floor(self, top: float) -> float:
        return top * self.ratio if top > 0 else top - abs(top) * (1 - self.ratio)

    def cut(self, hits: list[Hit]) -> list[Hit]:
        if not hits:
            return hits
        floor = self.floor(hits[0].score)
        keep = self.k_min
        for hit in hits[self.k_min:self.k_max]:
            if hit.score < floor:
                break
            keep += 1
        return hits[:max(self.k_min, min(keep, self.k_max))]

    def rule(self) -> str:
        return (f"keep hits scoring >= {self.ratio:g} x the top score, "
                f"at least {self.k_min}, at most {self.k_max}")


def _tokens(text: str) -> frozenset[str]:
    """Words of a text, or character pairs of Chinese: what near-duplicate checks compare."""
    norm = re.sub(r"\W+", " ", text.lower()).strip()
    if has_cjk(norm):
        chars = norm.replace(" ", "")
        return frozenset(a + b for a, b in zip(chars, chars[1:])) or frozenset([norm])
    return frozenset(norm.split()) or frozenset([norm])


def _overlap(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard overlap: 1.0 for the same words, ~0.9 for a one-word edit of a long report."""
    return len(a & b) / len(a | b) if a or b else 1.0


class Retriever(ABC):
    def __init__(self, store: RecordStore, adaptive: AdaptiveK | None = None, links: int = 3,
                 near_duplicate: float = 0.85):
        self.store = store
        self.adaptive = adaptive or AdaptiveK()
        self.links = links
        self.near_duplicate = near_duplicate  # token overlap at which two texts count as one
        self.last: dict = {}  # how the last query was answered: route, k per kind

    def retrieve(self, query: Query) -> list[Hit]:
        """Ranked, de-duplicated, linked hits for a query; `query.k` may be a number or "auto"."""
        wanted = self.adaptive.k_max if query.k == "auto" else int(query.k)
        self.last = {"k": query.k, "cuts": {}}
        candidates = self._retrieve(query, wanted * 3 + 5)
        hits: list[Hit] = []
        for kind in query.to:  # k applies per kind: cross-modal and same-modal scores differ
            ranked = self._dedupe(sorted((h for h in candidates if h.record.kind == kind),
                                         key=lambda h: -h.score), self.near_duplicate)
            kept = self.adaptive.cut(ranked) if query.k == "auto" else ranked[:wanted]
            if query.diversity > 0 and len(kept) > 1:
                kept = _diversify(self._eligible(ranked, query), len(kept), query.diversity)
            self.last["cuts"][kind] = {
                "candidates": len(ranked), "kept": len(kept),
                "rule": self.adaptive.rule() if query.k == "auto" else f"fixed k = {wanted}",
                "top": round(ranked[0].score, 6) if ranked else None,
                "floor": round(self.adaptive.floor(ranked[0].score), 6)
                if ranked and query.k == "auto" else None}
            hits += kept
        if query.diversity > 0:
            self.last["diversity"] = query.diversity  # MMR order: kept as chosen, not by score
        else:
            hits.sort(key=lambda h: -h.score)
        for rank, hit in enumerate(hits, 1):
            hit.rank = rank
            hit.linked = [r for r in self.store.by_study(hit.record.study)
                          if r.id != hit.record.id and r.kind == "report"][:self.links]
        log.info("retrieved %d hits (k=%s) for %s", len(hits), query.k, self._describe(query))
        return hits

    @abstractmethod
    def _retrieve(self, query: Query, n: int) -> list[Hit]:
        """Up to n candidate hits, any order, scores comparable within one query."""

    def _eligible(self, ranked: list[Hit], query: Query) -> list[Hit]:
        """The hits MMR may choose from: those above the adaptive floor, or the top 3 x k."""
        if query.k == "auto":
            floor = self.adaptive.floor(ranked[0].score)
            return [hit for hit in ranked if hit.score >= floor] or ranked[:1]
        return ranked[:3 * int(query.k)]

    @staticmethod
    def _dedupe(hits: list[Hit], near: float = 1.0) -> list[Hit]:
        """One hit per (study, kind, lang), and no text that repeats a better hit's: identical
        after normalisation, or with a word (or character pair) Jaccard overlap of `near`."""
        seen_study: set[tuple[str, str, str]] = set()
        kept_tokens: list[frozenset[str]] = []
        out = []
        for hit in hits:
            rec = hit.record
            study_key = (rec.study or rec.id, rec.kind, rec.lang)
            if study_key in seen_study:
                continue
            if rec.kind != "image":
                tokens = _tokens(rec.text)
                if any(_overlap(tokens, other) >= near for other in kept_tokens):
                    continue
                kept_tokens.append(tokens)
            seen_study.add(study_key)
            out.append(hit)
        return out

    @staticmethod
    def _describe(query: Query) -> str:
        what = "image" if query.image else "text"
        return f"{what} query -> {','.join(query.to)}"


def _diversify(pool: list[Hit], count: int, diversity: float) -> list[Hit]:
    """Maximal marginal relevance (Carbonell & Goldstein): pick `count` hits from the pool one
    at a time, each maximising (1 - diversity) x relevance - diversity x its largest overlap
    with the hits already picked. Relevance is the score scaled to [0, 1] over the pool;
    overlap is the word (Chinese: character-pair) Jaccard of the texts; images overlap 0
    (they are already one per study), so for them the order stays by score."""
    top, low = pool[0].score, pool[-1].score
    spread = (top - low) or 1.0
    tokens = [_tokens(hit.record.text) if hit.record.kind != "image" else None for hit in pool]
    chosen: list[int] = []
    left = list(range(len(pool)))
    while left and len(chosen) < count:
        def value(i: int) -> float:
            overlap = max((_overlap(tokens[i], tokens[j]) for j in chosen
                           if tokens[i] is not None and tokens[j] is not None), default=0.0)
            return (1 - diversity) * (pool[i].score - low) / spread - diversity * overlap
        best = max(left, key=value)  # ties keep the better-scored hit (earlier in the pool)
        chosen.append(best)
        left.remove(best)
    return [pool[i] for i in chosen]

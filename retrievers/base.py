"""The Retriever interface: the shared work (checks, adaptive k, study grouping, de-duplication,
linking an image hit to its study's report) lives here once; subclasses only rank candidates."""
from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from rag.store import RecordStore
from rag.types import Hit, Query

log = logging.getLogger(__name__)


@dataclass
class AdaptiveK:
    """Keep hits while the score stays within `ratio` of the top score (MMed-RAG's rule),
    never fewer than k_min nor more than k_max."""

    k_min: int = 1
    k_max: int = 10
    ratio: float = 0.9

    def cut(self, hits: list[Hit]) -> list[Hit]:
        if not hits:
            return hits
        top = hits[0].score
        keep = self.k_min
        for hit in hits[self.k_min:self.k_max]:
            floor = top * self.ratio if top > 0 else top - abs(top) * (1 - self.ratio)
            if hit.score < floor:
                break
            keep += 1
        return hits[:max(self.k_min, min(keep, self.k_max))]


def _text_key(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


class Retriever(ABC):
    def __init__(self, store: RecordStore, adaptive: AdaptiveK | None = None, links: int = 3):
        self.store = store
        self.adaptive = adaptive or AdaptiveK()
        self.links = links

    def retrieve(self, query: Query) -> list[Hit]:
        """Ranked, de-duplicated, linked hits for a query; `query.k` may be a number or "auto"."""
        wanted = self.adaptive.k_max if query.k == "auto" else int(query.k)
        candidates = self._retrieve(query, wanted * 3 + 5)
        hits: list[Hit] = []
        for kind in query.to:  # k applies per kind: cross-modal and same-modal scores differ
            ranked = self._dedupe(sorted((h for h in candidates if h.record.kind == kind),
                                         key=lambda h: -h.score))
            hits += self.adaptive.cut(ranked) if query.k == "auto" else ranked[:wanted]
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

    @staticmethod
    def _dedupe(hits: list[Hit]) -> list[Hit]:
        """One hit per (study, kind, lang) and per identical report text: the best one stays."""
        seen_study: set[tuple[str, str, str]] = set()
        seen_text: set[str] = set()
        out = []
        for hit in hits:
            rec = hit.record
            study_key = (rec.study or rec.id, rec.kind, rec.lang)
            text_key = _text_key(rec.text) if rec.kind != "image" else ""
            if study_key in seen_study or (text_key and text_key in seen_text):
                continue
            seen_study.add(study_key)
            if text_key:
                seen_text.add(text_key)
            out.append(hit)
        return out

    @staticmethod
    def _describe(query: Query) -> str:
        what = "image" if query.image else "text"
        return f"{what} query -> {','.join(query.to)}"

"""Dense cross-modal retrieval over one vector backend, fused with lexical search for text."""
from __future__ import annotations

import numpy as np
from PIL import Image

from indexers.base import VectorIndex
from rag.encoders.base import Encoder
from rag.images import load_image
from rag.store import RecordStore
from rag.types import Hit, Query
from retrievers.base import AdaptiveK, Retriever
from retrievers.routing import DomainRouter, Route

RRF_K = 60  # reciprocal-rank-fusion constant (Cormack et al.)


class DenseRetriever(Retriever):
    """Encodes the query (image and/or text), searches each wanted kind, and for text queries
    fuses the dense ranking with the record store's lexical ranking by reciprocal rank."""

    def __init__(self, encoder: Encoder, store: RecordStore, index: VectorIndex,
                 adaptive: AdaptiveK | None = None, lexical: bool = True,
                 router: DomainRouter | None = None):
        super().__init__(store, adaptive)
        self.encoder = encoder
        self.index = index
        self.lexical = lexical
        self.router = router  # routes image queries to a domain; None: search everything

    def query_vector(self, query: Query) -> np.ndarray:
        """(dim,) unit vector; an image and a text query are averaged when both are given."""
        parts = []
        if query.image is not None:
            image = query.image if isinstance(query.image, Image.Image) else load_image(query.image)
            parts.append(self.encoder.encode_images([image])[0])
        if query.text and query.text.strip():
            parts.append(self.encoder.encode_texts([query.text.strip()])[0])
        vector = np.mean(parts, axis=0)
        return (vector / max(np.linalg.norm(vector), 1e-12)).astype(np.float32)

    def _retrieve(self, query: Query, n: int) -> list[Hit]:
        vector = self.query_vector(query)  # (dim,)
        source = "image" if query.image is not None else "text"
        filters = dict(query.filters)
        route = self._route(query, vector, filters)
        hits: list[Hit] = []
        for kind in query.to:
            found = self._search(kind, query, vector, n, filters, source)
            if not found and route is not None and route.source in ("knn", "probe"):
                # the routed domain has nothing of this kind: search every domain instead
                unrouted = {k: v for k, v in filters.items() if k != "domain"}
                found = self._search(kind, query, vector, n, unrouted, source)
                self.last.setdefault("unrouted", []).append(kind)
            if route is not None:
                for hit in found:
                    hit.route += f" | {route.describe()}"
            hits += found
        return hits

    def _route(self, query: Query, vector: np.ndarray, filters: dict) -> Route | None:
        """Restrict an image query to its predicted domain(s), unless the user gave one."""
        if "domain" in filters:
            given = filters["domain"]
            route = Route([given] if isinstance(given, str) else list(given), 1.0,
                          source="override")
        elif self.router is not None and query.image is not None:
            route = self.router.route(vector)
            if route.domains:
                filters["domain"] = route.domains
        else:
            return None
        self.last["route"] = route.to_dict()
        return route

    def _search(self, kind: str, query: Query, vector: np.ndarray, n: int, filters: dict,
                source: str) -> list[Hit]:
        allowed = None
        if filters:
            allowed = np.asarray(self.store.ids_where(kind, filters), dtype=np.int64)
        scores, ids = self.index.search(kind, vector[None, :], n, allowed)
        dense = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        route = f"{source}->{kind}"
        if self.lexical and query.text and query.image is None and kind != "image":
            allowed_set = None if allowed is None else set(allowed.tolist())
            lexical = self.store.lexical(query.text, kind, n, allowed_set)
            ranked = _fuse(dense, lexical)
            route += "+lexical"
        else:
            ranked = dense
        records = self.store.get(i for i, _ in ranked)
        cosine = dict(dense)
        return [Hit(records[rowid], score, 0, self.index.name, route, cosine=cosine.get(rowid))
                for rowid, score in ranked if rowid in records]


def _fuse(dense: list[tuple[int, float]], lexical: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Reciprocal rank fusion; returns ids in fused order with their fused score."""
    fused: dict[int, float] = {}
    for ranking in (dense, lexical):
        for rank, (rowid, _) in enumerate(ranking):
            fused[rowid] = fused.get(rowid, 0.0) + 1.0 / (RRF_K + rank + 1)
    return sorted(fused.items(), key=lambda item: -item[1])

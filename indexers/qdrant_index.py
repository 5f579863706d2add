"""Qdrant backend: embedded local storage under `<path>/qdrant`, or a server by URL.

Local mode is qdrant-client's pure-Python engine: an exact numpy scan, persisted point by
point to SQLite. It is fine for tests and corpora up to ~20k vectors per kind; beyond that use
a server (CASELENS_QDRANT_URL) or, later, the embedded Rust engine (qdrant-edge). Its id
filter (`allowed`) costs O(points x allowed ids) in Python: ~1 s per query for 10k allowed ids
among 20k points.
"""
from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from indexers.base import VectorIndex, VectorIndexError, register_backend
from indexers.checks import check_add, check_allowed, check_kind, check_queries, padding

# open_index imports every backend, so a missing qdrant-client must not break FAISS.
try:
    from qdrant_client import QdrantClient, models
except ImportError:  # pragma: no cover - exercised only where qdrant-client is absent
    QdrantClient = models = None

log = logging.getLogger(__name__)

URL_VARIABLE = "CASELENS_QDRANT_URL"
API_KEY_VARIABLE = "CASELENS_QDRANT_API_KEY"
UPSERT_BATCH = 512
LOCAL_MODE_POINTS = 20_000  # where qdrant-client's local mode starts warning
LOCAL_MODE_ADVICE = "Local mode is not recommended"  # start of that warning's text


@register_backend("qdrant")
class QdrantIndex(VectorIndex):
    """One collection `caselens_<kind>` per kind, DOT distance (vectors are unit length, so
    scores equal FAISS's inner products).

    Local mode writes each add to disk at once, so save() has nothing left to do; the folder
    is locked until close(). With a server, collection names are shared by every index folder
    that points at the same server.
    """

    def __init__(self, path: Path, dim: int, url: str | None = None):
        if QdrantClient is None:
            raise VectorIndexError("the Qdrant backend needs qdrant-client: "
                                   "pip install qdrant-client")
        super().__init__(path, dim)
        self.url = url or os.environ.get(URL_VARIABLE) or None
        self.client = self._connect()
        self.kinds: set[str] = set()  # kinds whose collection is known to exist
        self.advised: set[str] = set()  # kinds already warned about local-mode size
        try:
            names = [c.name for c in self.client.get_collections().collections]
            for name in names:
                if name.startswith("caselens_"):
                    self._check_dim(name)
                    self.kinds.add(name[len("caselens_"):])
        except BaseException:
            self.client.close()
            raise

    def _connect(self) -> QdrantClient:
        if self.url:
            try:
                # The client's version check runs in a background thread that only warns when
                # the server is down; get_collections() fails here instead, naming the URL.
                client = QdrantClient(url=self.url, api_key=os.environ.get(API_KEY_VARIABLE),
                                      check_compatibility=False)
                client.get_collections()
            except Exception as err:
                raise VectorIndexError(f"cannot reach the Qdrant server at {self.url} ({err}); "
                                       f"start it, or unset {URL_VARIABLE} to use the embedded "
                                       "store") from err
            return client
        folder = self.path / "qdrant"
        try:
            with _quiet_local_mode():  # reopening a large collection warns again
                return QdrantClient(path=str(folder))
        except RuntimeError as err:  # qdrant-client's message for a folder locked by another client
            raise VectorIndexError(f"the Qdrant store {folder} is open in another process or "
                                   f"object; close it first ({err})") from err

    def _check_dim(self, name: str) -> None:
        params = self.client.get_collection(name).config.params.vectors
        size = params.size if isinstance(params, models.VectorParams) else None
        if size != self.dim:
            raise VectorIndexError(f"Qdrant collection {name} holds {size}-d vectors but this "
                                   f"index was opened for {self.dim}-d; use the encoder it was "
                                   "built with, or rebuild with `python cli.py index`")

    def _exists(self, kind: str) -> bool:
        # Cache only "exists": another writer (a server build) may create it later.
        if kind not in self.kinds and self.client.collection_exists(_collection(kind)):
            self._check_dim(_collection(kind))
            self.kinds.add(kind)
        return kind in self.kinds

    def add(self, kind: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        check_kind(kind)
        ids, vectors = check_add(ids, vectors, self.dim)
        if not len(ids):
            return
        name = _collection(kind)
        if not self._exists(kind):
            self.client.create_collection(name, vectors_config=models.VectorParams(
                size=self.dim, distance=models.Distance.DOT))
            self.kinds.add(kind)
        with _quiet_local_mode():
            for start in range(0, len(ids), UPSERT_BATCH):
                stop = start + UPSERT_BATCH
                self.client.upsert(name, models.Batch(ids=ids[start:stop].tolist(),
                                                      vectors=vectors[start:stop].tolist()),
                                   wait=True)
        if not self.url and kind not in self.advised and self.count(kind) > LOCAL_MODE_POINTS:
            self.advised.add(kind)
            log.warning("Qdrant local mode holds over %d %s vectors and scans them all in "
                        "Python on every query; for speed use a server (%s) or the FAISS "
                        "backend", LOCAL_MODE_POINTS, kind, URL_VARIABLE)

    def remove(self, kind: str, ids: np.ndarray) -> None:
        check_kind(kind)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if not len(ids) or not self._exists(kind):
            return
        for start in range(0, len(ids), UPSERT_BATCH):
            chunk = ids[start:start + UPSERT_BATCH].tolist()
            self.client.delete(_collection(kind), models.PointIdsList(points=chunk), wait=True)

    def search(self, kind: str, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = check_queries(queries, self.dim, k)  # (Q, dim)
        allowed = check_allowed(allowed)
        scores, ids = padding(len(queries), k)  # (Q, k) each
        depth = k if allowed is None else min(k, len(allowed))
        if depth == 0 or not len(queries) or not _valid_kind(kind) or not self._exists(kind):
            return scores, ids
        query_filter = None
        if allowed is not None:
            query_filter = models.Filter(must=[models.HasIdCondition(has_id=allowed.tolist())])
        # One request for the whole batch: one round trip on a server.
        requests = [models.QueryRequest(query=q.tolist(), filter=query_filter, limit=depth,
                                        with_payload=False, with_vector=False) for q in queries]
        responses = self.client.query_batch_points(_collection(kind), requests=requests)
        for row, response in enumerate(responses):
            for col, point in enumerate(response.points[:depth]):
                scores[row, col] = point.score
                ids[row, col] = point.id
        return scores, ids

    def count(self, kind: str) -> int:
        if not _valid_kind(kind) or not self._exists(kind):
            return 0
        return int(self.client.count(_collection(kind), exact=True).count)

    def save(self) -> None:
        """Nothing to do: local mode commits every upsert to SQLite (the contract suite checks
        that close() and reopen keep everything), and a server persists on its own."""

    def close(self) -> None:
        self.client.close()


def _collection(kind: str) -> str:
    return f"caselens_{kind}"


def _valid_kind(kind: str) -> bool:
    try:
        check_kind(kind)
    except VectorIndexError:
        return False
    return True


@contextmanager
def _quiet_local_mode():
    """Silence qdrant-client's "not recommended above 20k points" UserWarning, raised deep
    inside the client; add() logs the same advice once per kind instead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=LOCAL_MODE_ADVICE, category=UserWarning)
        yield

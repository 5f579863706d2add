"""The VectorIndex interface and its factory.

A VectorIndex stores integer ids (the record store's row ids) and L2-normalised float32
vectors, one collection per kind, and answers inner-product top-k searches. Everything
else about a record lives in the record store (rag/store.py).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from rag.registry import registrar

BACKENDS: dict[str, type[VectorIndex]] = {}
register_backend = registrar(BACKENDS)


class VectorIndexError(RuntimeError):
    """A vector index that cannot be opened or written; the message says what to do."""


class VectorIndex(ABC):
    """One backend's vectors for one index folder, with a collection per kind.

    Every backend keeps the same contract (tests/indexers/test_contract.py checks it against
    brute force): invalid input raises VectorIndexError, never a backend's own exception.
    """

    name = "base"

    def __init__(self, path: Path, dim: int):
        self.path = Path(path)
        self.dim = dim
        self.tuning_queries: dict[str, np.ndarray] = {}  # kind -> (S, dim), see below

    @abstractmethod
    def add(self, kind: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors (N, dim) float32 with int64 ids (N,) to the kind's collection.

        Other numeric dtypes are converted. Ids must be >= 0 and distinct within one call; an
        id already present has its vector replaced. `kind` is a lower-case name ([a-z][a-z0-9_]*).
        Raises VectorIndexError for a wrong shape or dim, NaN, or bad ids, adding nothing.
        """

    @abstractmethod
    def remove(self, kind: str, ids: np.ndarray) -> None:
        """Remove the vectors with these ids from the kind's collection; unknown ids and a
        missing collection are ignored. Durable after save(), as add() is."""

    @abstractmethod
    def search(self, kind: str, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product for queries (Q, dim): (scores (Q, k), ids (Q, k)).

        Scores are float32, ids int64, best first. Missing results are padded with score -inf
        and id -1, so a kind with no collection, or an empty `allowed`, gives all padding.
        `allowed`, when given, restricts the search to those ids (metadata filters resolved
        by the record store). Raises VectorIndexError for queries of the wrong dim or k < 0.
        """

    @abstractmethod
    def count(self, kind: str) -> int:
        """Number of vectors in the kind's collection (0 when it does not exist)."""

    @abstractmethod
    def save(self) -> None:
        """Write everything to `path` so that `open_index` can load it again.

        Adds are durable only after save() (a backend may persist sooner: Qdrant does). A
        failed save leaves the previously saved state readable.
        """

    def set_tuning_queries(self, kind: str, queries: np.ndarray) -> None:
        """Real query vectors for the kind (e.g. image embeddings for the report kind: the
        cross-modal queries it will answer). A backend that tunes its ANN search at save()
        tunes on these instead of synthetic stand-ins; an exact backend ignores them."""
        self.tuning_queries[kind] = np.ascontiguousarray(queries, dtype=np.float32)

    def close(self) -> None:
        """Release files and locks; unsaved adds may be lost. The object is unusable after."""

    def describe(self) -> dict:
        """What was built and how it searches (index type, parameters, counts), for the
        manifest; JSON-serialisable, never a secret such as an API key."""
        return {"backend": self.name}

    @classmethod
    def needed_files(cls, described: dict) -> list[str]:
        """The files and folders, relative to the index folder, without which an index that
        describe() described cannot answer: opening an index checks them with a stat each,
        so a deleted folder is an error instead of silently missing hits. None for a server."""
        return []


def needed_files(backend: str, described: dict) -> list[str]:
    """VectorIndex.needed_files of the named backend (nothing for an unknown one: opening
    it says so)."""
    _register()
    return BACKENDS[backend].needed_files(described) if backend in BACKENDS else []


def _register() -> None:
    import indexers.faiss_index
    import indexers.qdrant_index  # noqa: F401 - registers "qdrant"


def open_index(backend: str, path: str | Path, dim: int, **options) -> VectorIndex:
    """Open (or create) the named backend's index under `path`; `options` are the backend's
    own build / connection settings (e.g. FAISS index_type, a Qdrant url)."""
    _register()
    if backend not in BACKENDS:
        raise VectorIndexError(f"unknown index backend {backend!r}; choose from {', '.join(BACKENDS)}")
    return BACKENDS[backend](Path(path), dim, **options)

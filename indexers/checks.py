"""Input checks and result padding shared by every VectorIndex backend.

They live once here so that both backends reject the same inputs with the same message,
which the contract suite (tests/indexers/test_contract.py) relies on.
"""
from __future__ import annotations

import re
from dataclasses import fields

import numpy as np

from indexers.base import VectorIndexError

# A kind names a FAISS file and a Qdrant collection, so it must be safe as both.
KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")


def check_kind(kind: str) -> str:
    if not isinstance(kind, str) or not KIND_PATTERN.fullmatch(kind):
        raise VectorIndexError(f"kind {kind!r} is not a valid collection name "
                               "(lower-case letters, digits and _, starting with a letter)")
    return kind


def check_add(ids: np.ndarray, vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N,) int64, vectors (N, dim) float32 C-contiguous), or VectorIndexError."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise VectorIndexError(f"ids must be a 1-D integer array, got shape {ids.shape} "
                               f"dtype {ids.dtype}")
    ids = ids.astype(np.int64, copy=False)
    vectors = _check_matrix(vectors, dim, "vectors")
    if len(ids) != len(vectors):
        raise VectorIndexError(f"got {len(ids)} ids for {len(vectors)} vectors")
    # -1 means "no result" in search output, and Qdrant point ids are unsigned.
    if len(ids) and ids.min() < 0:
        raise VectorIndexError(f"ids must be >= 0, got {int(ids.min())}")
    # Within one call a repeated id has no defined winner; across calls add() replaces.
    if len(np.unique(ids)) != len(ids):
        raise VectorIndexError("ids repeat within one add() call")
    if not np.isfinite(vectors).all():
        raise VectorIndexError("vectors contain NaN or infinity")
    return ids, vectors


def check_queries(queries: np.ndarray, dim: int, k: int) -> np.ndarray:
    """Queries (Q, dim) float32 C-contiguous, or VectorIndexError (also for k < 0)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise VectorIndexError(f"k must be an integer >= 0, got {k!r}")
    queries = _check_matrix(queries, dim, "queries")
    if not np.isfinite(queries).all():
        raise VectorIndexError("queries contain NaN or infinity")
    return queries


def check_allowed(allowed: np.ndarray | None) -> np.ndarray | None:
    """None (no restriction) or the allowed ids as a 1-D int64 array."""
    if allowed is None:
        return None
    allowed = np.asarray(allowed)
    if allowed.ndim != 1 or not (np.issubdtype(allowed.dtype, np.integer) or allowed.size == 0):
        raise VectorIndexError(f"allowed must be a 1-D integer array, got shape "
                               f"{allowed.shape} dtype {allowed.dtype}")
    return allowed.astype(np.int64, copy=False)


def padding(num_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores (Q, k) all -inf and ids (Q, k) all -1: the "no result" answer."""
    return (np.full((num_queries, k), -np.inf, dtype=np.float32),
            np.full((num_queries, k), -1, dtype=np.int64))


def _check_matrix(matrix: np.ndarray, dim: int, what: str) -> np.ndarray:
    if (type(matrix) is np.ndarray and matrix.dtype == np.float32 and matrix.ndim == 2
            and matrix.shape[1] == dim and matrix.flags.c_contiguous):
        return matrix  # the common case, checked in ~1 us (a single query costs ~100 us)
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise VectorIndexError(f"{what} must have shape (N, {dim}) for this index, "
                               f"got {matrix.shape}")
    if not (np.issubdtype(matrix.dtype, np.floating) or np.issubdtype(matrix.dtype, np.integer)):
        raise VectorIndexError(f"{what} must be numeric, got dtype {matrix.dtype}")
    return np.ascontiguousarray(matrix, dtype=np.float32)


def known_options(cls, options: dict, backend: str):
    """An options dataclass built from a backend's keyword options, or VectorIndexError
    naming the unknown ones and listing the known."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise VectorIndexError(f"unknown {backend} option(s) {', '.join(unknown)}; "
                               f"known options: {', '.join(known)}")
    return cls(**options)

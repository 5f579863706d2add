"""Tuning an ANN structure's search setting to a target recall@10, shared by the FAISS
(efSearch, nprobe, refine factor) and embedded Qdrant (hnsw_ef) backends.

A setting is measured on sets of tuning queries against exact search: a hit counts when its
score reaches the exact 10th score less TIE (so ties with the 10th count), and the cheapest
setting whose recall reaches the target on every set wins.

Without real queries (set_tuning_queries), the sets are made from stored vectors:
  "near": moved off the vector in a random direction as far as its nearest neighbour lies
    (same cosine): an image-to-similar-case query;
  "far": moved to cosine FAR_QUERY_COSINE: a stand-in for a text query against images;
  "self": the vectors themselves, each with its own entry left out of its results: a query
    from the data's distribution (flattering for HNSW, whose graph holds the query, but not
    for IVF).
A stored vector itself is no test of HNSW: it reaches the vector and its graph neighbours more
easily than a new point's, so the Qdrant engine tunes on "near" and "far" only, and the FAISS
backend adds "self" for its IVF lists (the `own` argument of synthetic_sets).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

TUNING_K = 10  # tuned for recall@10; larger k widens the setting in proportion
TIE = 1e-5  # a hit within this of the exact k-th score counts
FAR_QUERY_COSINE = 0.5  # "far" tuning queries lie this far from the vector they came from
MIN_GIVEN_QUERIES = 50  # fewer real tuning queries than this: the synthetic sets instead

# name -> (queries (S, dim), own entries (S,) to leave out of their results, or None)
QuerySets = dict[str, tuple[np.ndarray, np.ndarray | None]]


def enough_given(given: np.ndarray | None) -> bool:
    """Whether real tuning queries are many enough to tune on instead of synthetic ones."""
    return given is not None and len(given) >= MIN_GIVEN_QUERIES


def sample_rows(rows: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `count` rows chosen at random, kept in their order."""
    return rows[np.sort(rng.choice(len(rows), min(len(rows), count), replace=False))]


def synthetic_sets(origins: np.ndarray, nearest_cosine: Callable[[np.ndarray], np.ndarray],
                   rng: np.random.Generator, own: np.ndarray | None = None) -> QuerySets:
    """Tuning queries from stored unit vectors `origins` (S, dim): "near" and "far", and with
    `own` (each origin's id or position in the index) "self" too, in equal parts of the
    origins (np.array_split); without it, halves, the odd one out going to "far".

    `nearest_cosine(rows)` gives the cosine of the nearest other stored vector of those rows
    of `origins` (only "near" needs it); its dtype is the one the queries are computed in.
    """
    count = len(origins)
    if own is None:
        half = count // 2
        parts = {"near": np.arange(half), "far": np.arange(half, count)}
    else:
        near, far, itself = np.array_split(np.arange(count), 3)
        parts = {"near": near, "far": far, "self": itself}
    nearest = np.asarray(nearest_cosine(parts["near"])).reshape(-1, 1)
    cosines = np.ones((count, 1), dtype=nearest.dtype)  # "self" stays at cosine 1
    cosines[parts["near"]] = np.clip(nearest, FAR_QUERY_COSINE, 1.0)
    cosines[parts["far"]] = FAR_QUERY_COSINE
    queries = moved_off(origins, cosines, rng)
    sets = {name: (queries[rows], own[rows] if name == "self" else None)
            for name, rows in parts.items()}
    return {name: pair for name, pair in sets.items() if len(pair[0])}


def moved_off(origins: np.ndarray, cosines: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit queries (S, dim) float32 at `cosines` (S, 1), in [FAR_QUERY_COSINE, 1], from each
    unit vector of `origins`, each in a random direction orthogonal to its origin."""
    away = rng.standard_normal(origins.shape).astype(np.float32)
    away -= np.sum(away * origins, axis=1, keepdims=True) * origins  # orthogonal to the origin
    away /= np.linalg.norm(away, axis=1, keepdims=True)
    queries = origins + np.sqrt(1 / cosines ** 2 - 1) * away  # cos(query, origin) = cosines
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def score_floors(exact: np.ndarray) -> np.ndarray:
    """(S, 1): each query's last exact score (its k-th, best first, -inf padded) less TIE, so
    that ties with it count as hits; inf for a query that found nothing."""
    found = np.isfinite(exact).sum(axis=1)
    last = exact[np.arange(len(exact)), np.maximum(found - 1, 0)]
    return np.where(found > 0, last - TIE, np.inf)[:, None]


def recall(scores: np.ndarray, floors: np.ndarray) -> float:
    """The share of the (S, k) result slots (-inf where nothing was found) holding a hit."""
    return float((scores >= floors).mean())


def smallest_setting(grid: Sequence[int], recalls_at: Callable[[int], dict[str, float]],
                     target: float) -> tuple[int, dict[str, float]]:
    """The first value of `grid` (cheapest first) whose recall reaches `target` on every query
    set, with its recalls; the last value and its recalls when none does."""
    for value in grid:
        recalls = recalls_at(value)
        if min(recalls.values()) >= target:
            break
    return value, recalls

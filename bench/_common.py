"""What the benchmarks share: batched adds and the synthetic vectors they search."""
from __future__ import annotations

import numpy as np

ADD_BATCH = 4096  # a resumable build adds in batches; one giant add would flatter some backends
DATA_PROFILES = ("embedding", "clusters")


def add_in_batches(index, kind: str, vectors: np.ndarray) -> None:
    """Add vectors with ids 0..n-1 the way an index build does, a batch at a time."""
    for start in range(0, len(vectors), ADD_BATCH):
        ids = np.arange(start, min(start + ADD_BATCH, len(vectors)), dtype=np.int64)
        index.add(kind, ids, vectors[start:start + ADD_BATCH])


def make_data(rng: np.random.Generator, n: int, queries: int, dim: int, profile: str = "embedding",
              clusters: int = 64, noise: float = 0.4, rank: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, dim), queries (Q, dim)): seeded unit float32 vectors, the queries fresh
    points of the same distribution.

    "embedding" is calibrated on the default encoder's 3,159 distinct Open-i report vectors:
    a shared mean direction (random pairs at cosine ~0.6; real 0.59), 64 clusters in one
    32-d subspace (90 % of the variance in 28 dimensions; real 23) and a little isotropic
    noise (nearest neighbour among 3k at cosine ~0.94; real 0.91). Real CLIP-style
    embeddings look like this: anisotropic, with a low intrinsic dimension.
    "clusters" is the stress case: `clusters` centres with isotropic noise, or with the spread
    in a random `rank`-dim subspace per cluster (plus 0.05 isotropic noise). Its neighbourhoods
    are far harder for graphs and lists than real embeddings.
    """
    total = n + queries
    out = np.empty((total, dim), dtype=np.float32)
    if profile == "embedding":
        sub, mean_weight, spread, iso = 32, 1.4, 0.5, 0.012
        mean = rng.standard_normal(dim)
        mean /= np.linalg.norm(mean)
        basis = np.linalg.qr(rng.standard_normal((dim, sub)))[0].T  # (sub, dim) orthonormal
        centres = rng.standard_normal((clusters, sub))
    elif profile == "clusters":
        centres = rng.standard_normal((clusters, dim))
        bases = (rng.standard_normal((clusters, rank, dim)) / np.sqrt(rank)) if rank else None
    else:
        raise ValueError(f"unknown data profile {profile!r}: choose from {DATA_PROFILES}")
    for start in range(0, total, 100_000):  # bounded float64 temporaries at 1M
        size = min(100_000, total - start)
        which = rng.integers(clusters, size=size)
        if profile == "embedding":
            inside = centres[which] + spread * rng.standard_normal((size, sub))
            chunk = (mean_weight * mean + (inside / np.sqrt(sub)) @ basis
                     + iso * rng.standard_normal((size, dim)))
        elif bases is None:
            chunk = centres[which] + noise * rng.standard_normal((size, dim))
        else:
            chunk = centres[which] + np.einsum(
                "nr,nrd->nd", 2 * noise * rng.standard_normal((size, rank)), bases[which]) \
                + 0.05 * rng.standard_normal((size, dim))
        out[start:start + size] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out[:n], out[n:]


def describe_data(profile: str, clusters: int, noise: float, rank: int) -> str:
    if profile == "embedding":
        return f"embedding-like ({clusters} clusters in a 32-d subspace, calibrated on real vectors)"
    return f"{clusters} clusters, noise {noise}, rank {rank or 'full'} (stress case)"

"""What the benchmarks share."""
from __future__ import annotations

import numpy as np

ADD_BATCH = 4096  # a resumable build adds in batches; one giant add would flatter some backends


def add_in_batches(index, kind: str, vectors: np.ndarray) -> None:
    """Add vectors with ids 0..n-1 the way an index build does, a batch at a time."""
    for start in range(0, len(vectors), ADD_BATCH):
        ids = np.arange(start, min(start + ADD_BATCH, len(vectors)), dtype=np.int64)
        index.add(kind, ids, vectors[start:start + ADD_BATCH])

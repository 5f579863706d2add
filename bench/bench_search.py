"""Time each VectorIndex backend on seeded embedding-like unit vectors (bench/_common.py).

    python bench/bench_search.py                    # n=100000, dim=256, 200 queries, all backends
    python bench/bench_search.py --backend faiss --n 1000000

Prints build seconds (add + save), single-query p50/p95 latency, batch throughput and
Recall@10 against exact numpy search, for both backends with their default options; Qdrant
is capped at --qdrant-n vectors (the output says when the cap applied). For the FAISS index
types against raw faiss see bench_faiss.py; for the embedded Qdrant engine against its raw
calls, bench_qdrant.py.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from anywhere in the repo

from indexers.base import open_index
from _common import add_in_batches, make_data  # noqa: E402

KIND = "image"


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ vectors.T  # (Q, N)
    return np.argpartition(-scores, k, axis=1)[:, :k]  # positions = ids (ids are 0..N-1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def bench(backend: str, vectors: np.ndarray, queries: np.ndarray, k: int) -> dict:
    n, dim = vectors.shape
    with tempfile.TemporaryDirectory(prefix=f"bench-{backend}-") as folder:
        index = open_index(backend, folder, dim)
        try:
            started = time.perf_counter()
            add_in_batches(index, KIND, vectors[:n])
            index.save()
            build_s = time.perf_counter() - started

            index.search(KIND, queries[:1], k)  # warm-up: first-call allocations
            latencies = []
            for query in queries:
                started = time.perf_counter()
                index.search(KIND, query[None, :], k)
                latencies.append(time.perf_counter() - started)

            started = time.perf_counter()
            _, found = index.search(KIND, queries, k)
            batch_s = time.perf_counter() - started
        finally:
            index.close()
    return {"backend": backend, "n": n, "build_s": build_s,
            "p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "p95_ms": 1000 * float(np.percentile(latencies, 95)),
            "batch_qps": len(queries) / batch_s,
            "recall": recall_at_k(found, exact_top_k(vectors, queries, k))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="vectors per backend")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--backend", choices=["all", "faiss", "qdrant"], default="all")
    parser.add_argument("--qdrant-n", type=int, default=100_000,
                        help="cap on qdrant's vectors (local mode is a slow Python scan)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.pop("CASELENS_QDRANT_URL", None)  # always the embedded store here
    logging.basicConfig(format="  note: %(message)s")  # backend advice, under the table

    rng = np.random.default_rng(args.seed)
    vectors, queries = make_data(rng, args.n, args.queries, args.dim)  # embedding-like
    backends = ["faiss", "qdrant"] if args.backend == "all" else [args.backend]

    print(f"{args.queries} queries, dim {args.dim}, top-{args.k}, {os.cpu_count()} CPUs, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}")
    print(f"{'backend':<8} {'n':>8} {'build s':>8} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'batch q/s':>10} {'R@' + str(args.k):>6}")
    for backend in backends:
        n = min(args.n, args.qdrant_n) if backend == "qdrant" else args.n
        row = bench(backend, vectors[:n], queries, args.k)
        print(f"{row['backend']:<8} {row['n']:>8} {row['build_s']:>8.2f} {row['p50_ms']:>8.2f} "
              f"{row['p95_ms']:>8.2f} {row['batch_qps']:>10.0f} {row['recall']:>6.3f}", flush=True)
        if backend == "qdrant" and n < args.n:
            print(f"  qdrant built on {n} of {args.n} vectors: its embedded mode is a Python "
                  "scan persisted point by point (raise --qdrant-n to measure more)")


if __name__ == "__main__":
    main()

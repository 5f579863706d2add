"""Time the Qdrant backend's embedded engine (qdrant-edge) through QdrantIndex, beside the raw
engine call on the same shard.

    python bench/bench_qdrant.py                          # 10k and 100k x 512-d, 1000 queries
    python bench/bench_qdrant.py --sizes 1000000 --queries 200

For each size: build seconds (add in batches, then save(): optimize() builds the HNSW graph
and hnsw_ef is tuned to target_recall), what save() chose, single-query p50 / p95 latency
through QdrantIndex.search and Recall@10 against exact numpy, the raw `shard.query` latency on
the same shard with the same SearchParams (the request built from the query vector, as any
caller of the engine must, included), our
overhead as the ratio of the two p50s (they take turns, which goes first alternating), and a filtered
search (`allowed` = --filter-share of
the ids) through QdrantIndex. Data: bench/_common.make_data (embedding-like by default);
queries are fresh points of the same distribution.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from anywhere in the repo

import qdrant_edge as edge  # noqa: E402

from indexers.base import open_index  # noqa: E402
from _common import DATA_PROFILES, add_in_batches, describe_data, make_data  # noqa: E402

KIND = "image"


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int,
                allowed: np.ndarray | None = None) -> list[set]:
    """Exact top-k ids (positions; ids are 0..N-1), optionally among `allowed` only."""
    truth = []
    for start in range(0, len(queries), 256):
        scores = queries[start:start + 256] @ vectors.T  # (q, N)
        if allowed is not None:
            mask = np.full(len(vectors), -np.inf, dtype=np.float32)
            mask[allowed] = 0
            scores += mask
        truth += [set(row) for row in np.argpartition(-scores, k, axis=1)[:, :k].tolist()]
    return truth


def recall(found: list[np.ndarray], truth: list[set]) -> float:
    return float(np.mean([len(set(f.tolist()) & t) / len(t) for f, t in zip(found, truth)]))


def timed(calls) -> tuple[list, np.ndarray]:
    """Run each zero-argument call once; (results, seconds per call)."""
    results, seconds = [], []
    for call in calls:
        started = time.perf_counter()
        results.append(call())
        seconds.append(time.perf_counter() - started)
    return results, np.array(seconds)


def ms(seconds: np.ndarray, percentile: float) -> float:
    return 1000 * float(np.percentile(seconds, percentile))


def bench(vectors: np.ndarray, queries: np.ndarray, k: int, filter_share: float,
          filter_queries: int, seed: int, tuning: np.ndarray | None = None) -> dict:
    n, dim = vectors.shape
    with tempfile.TemporaryDirectory(prefix="bench-qdrant-") as folder:
        index = open_index("qdrant", folder, dim, engine="edge")
        try:
            started = time.perf_counter()
            add_in_batches(index, KIND, vectors[:n])
            add_s = time.perf_counter() - started
            if tuning is not None:
                index.set_tuning_queries(KIND, tuning)
            index.save()
            build_s = time.perf_counter() - started
            chosen = index.describe()["kinds"][KIND]

            index.search(KIND, queries[:1], k)  # warm-up: first-call allocations
            shard, params = index.engine.shards[KIND], index.engine.search_params(KIND)
            # ours and raw take turns query by query, and which goes first alternates: the
            # second call of a query finds the graph nodes the first one touched in cache
            calls = []
            for i, q in enumerate(queries):
                pair = [("ours", lambda q=q: index.search(KIND, q[None, :], k)[1][0]),
                        ("raw", lambda q=q: shard.query(edge.QueryRequest(
                            limit=k, query=edge.Query.Nearest(q.tolist()), params=params)))]
                calls += pair if i % 2 == 0 else pair[::-1]
            results, seconds = timed([call for _, call in calls])
            whose = np.array([name for name, _ in calls])
            found = [r for r, name in zip(results, whose) if name == "ours"]
            ours, raw = seconds[whose == "ours"], seconds[whose == "raw"]
            truth = exact_top_k(vectors, queries, k)

            rng = np.random.default_rng(seed + 1)
            allowed = np.sort(rng.choice(n, int(filter_share * n), replace=False))
            some = queries[:filter_queries]
            filtered, with_filter = timed([lambda q=q: index.search(KIND, q[None, :], k,
                                                                   allowed)[1][0] for q in some])
            filtered_truth = exact_top_k(vectors, some, k, allowed)
        finally:
            index.close()
    return {"n": n, "add_s": add_s, "build_s": build_s,
            "search": (f"hnsw ef {chosen['hnsw_ef']}" if chosen["search"] == "hnsw"
                       else "exact"),
            "p50_ms": ms(ours, 50), "p95_ms": ms(ours, 95), "recall": recall(found, truth),
            "raw_p50_ms": ms(raw, 50), "raw_p95_ms": ms(raw, 95),
            "overhead": ms(ours, 50) / ms(raw, 50),
            "filtered_p50_ms": ms(with_filter, 50),
            "filtered_recall": recall(filtered, filtered_truth)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated vector counts")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--data", choices=DATA_PROFILES, default="embedding",
                        help="embedding: calibrated on real embeddings; clusters: the stress case")
    parser.add_argument("--clusters", type=int, default=64)
    parser.add_argument("--noise", type=float, default=0.4, help="clusters only")
    parser.add_argument("--rank", type=int, default=0, help="clusters only")
    parser.add_argument("--filter-share", type=float, default=0.3,
                        help="share of the ids passed as `allowed` in the filtered search")
    parser.add_argument("--filter-queries", type=int, default=200)
    parser.add_argument("--tune-on", choices=("queries", "synthetic"), default="queries",
                        help="queries: tune hnsw_ef on other fresh points of the distribution; "
                             "synthetic: on perturbed stored vectors")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sizes = [int(size) for size in args.sizes.split(",")]
    all_vectors, queries = make_data(np.random.default_rng(args.seed), max(sizes),
                                     2 * args.queries, args.dim, args.data, args.clusters,
                                     args.noise, args.rank)
    queries, tuning = queries[:args.queries], queries[args.queries:]  # apart: tuning is no test
    tuning = None if args.tune_on == "synthetic" else tuning
    print(f"dim {args.dim}, {args.queries} single queries, k={args.k}, data: "
          f"{describe_data(args.data, args.clusters, args.noise, args.rank)}; filtered: "
          f"{args.filter_share:.0%} of ids allowed, {args.filter_queries} queries")
    header = ("| n | build s (add) | search | p50 / p95 ms | R@10 | raw shard.query p50 / p95 ms "
              "| overhead | filtered p50 ms | filtered R@10 |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for n in sizes:
        vectors = np.ascontiguousarray(all_vectors[:n])
        row = bench(vectors, queries, args.k, args.filter_share, args.filter_queries, args.seed,
                    tuning)
        print(f"| {row['n']:,} | {row['build_s']:.1f} ({row['add_s']:.1f}) | {row['search']} "
              f"| {row['p50_ms']:.2f} / {row['p95_ms']:.2f} | {row['recall']:.3f} "
              f"| {row['raw_p50_ms']:.2f} / {row['raw_p95_ms']:.2f} | {row['overhead']:.2f}x "
              f"| {row['filtered_p50_ms']:.2f} | {row['filtered_recall']:.3f} |", flush=True)


if __name__ == "__main__":
    main()

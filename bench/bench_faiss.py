"""Time caselens's FaissIndex per index type against the same structure in raw faiss.

    python bench/bench_faiss.py                          # 10k and 100k x 512-d, ~5-10 minutes on 2 cores
    python bench/bench_faiss.py --sizes 1000000 --types hnsw,ivfpq
    python bench/bench_faiss.py --data clusters --clusters 8 --rank 32   # the stress case

Data (bench/_common.make_data): by default embedding-like vectors, calibrated on the default
encoder's real report vectors (a shared mean direction, 64 clusters in a 32-d subspace);
`--data clusters` is a stress case with far harder neighbourhoods. Queries are 1000 fresh
points of the same distribution.

For each size and type (flat / hnsw / ivfpq) the table gives OUR FaissIndex (adds in batches of
4096, save() with its tuning, describe()) and the raw faiss structure beside it, built with the
same settings and searched with the parameters our tuning chose: build seconds, index bytes
(our files on disk; raw: serialized size), RSS growth, single-query p50 / p95 over 1000 calls
(one OpenMP thread, as FaissIndex does), batch throughput (1000 queries in one call),
recall@10 against exact numpy search, and our p50 / raw p50 (ours and raw take turns, query by
query, so that neither gets the warmer cache). Below each flat row: the exact-scan
floor, flat bytes / the memory bandwidth measured by summing a 2 GiB array in numpy (one thread,
like a single-query scan; as float32 and as int64, the faster used). At 10k the flat index
fits in cache, so the scan can beat that floor.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from anywhere in the repo

import faiss  # noqa: E402

from indexers.base import open_index  # noqa: E402
from _common import DATA_PROFILES, add_in_batches, describe_data, make_data  # noqa: E402
from indexers.faiss_index import TRAIN_ITERATIONS, TRAIN_POINTS_PER_CENTROID  # noqa: E402

KIND = "image"
K = 10
TYPES = ("flat", "hnsw", "ivfpq")


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) positions of the exact top-k by inner product."""
    found = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 100):
        scores = queries[start:start + 100] @ vectors.T  # (100, n)
        found[start:start + 100] = np.argpartition(-scores, k, axis=1)[:, :k]
    return found


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def time_pair(searches: dict, queries: np.ndarray) -> dict[str, tuple[list[float], float]]:
    """Single-query latencies (s) and the best of 3 batch seconds for each named search, the
    searches taking turns in ABBA order so that cache warmth and CPU drift fall on both."""
    names = list(searches)
    for name in names:
        searches[name](queries[:1])  # warm-up: first-call allocations
    latencies = {name: [] for name in names}
    for number, query in enumerate(queries):
        for name in (names if number % 2 == 0 else names[::-1]):
            started = time.perf_counter()
            searches[name](query[None, :])
            latencies[name].append(time.perf_counter() - started)
    batch = {name: float("inf") for name in names}
    for turn in range(3):
        for name in (names if turn % 2 == 0 else names[::-1]):
            started = time.perf_counter()
            searches[name](queries)
            batch[name] = min(batch[name], time.perf_counter() - started)
    return {name: (latencies[name], batch[name]) for name in names}


def one_thread_if_single(search):
    """Raw faiss searched as FaissIndex does: one OpenMP thread for a single query."""
    def run(queries):
        if len(queries) > 1:
            return search(queries)
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return search(queries)
        finally:
            faiss.omp_set_num_threads(before)
    return run


def build_ours(index_type: str, vectors, folder: str, options: dict, tuning):
    """(index, build row fields, describe() of the kind) for our FaissIndex; `tuning`: query
    vectors to tune on, as an index build passes its other kinds' vectors (None: synthetic)."""
    n, dim = vectors.shape
    gc.collect()
    before = rss_mb()
    index = open_index("faiss", folder, dim, index_type=index_type, **options)
    started = time.perf_counter()
    add_in_batches(index, KIND, vectors[:n])
    if tuning is not None:
        index.set_tuning_queries(KIND, tuning)
    index.save()
    build_s = time.perf_counter() - started
    gc.collect()
    info = index.describe()["kinds"][KIND]
    search = info.get("search")
    setting = (", ".join(f"{key} {value}" for key, value in search.items())
               if isinstance(search, dict) else "exact")
    fields = {"index": f"ours {index_type}", "build_s": build_s, "rss_mb": rss_mb() - before,
              "index_mb": sum(f.stat().st_size for f in (Path(folder) / "faiss").iterdir()) / 2**20,
              "setting": setting, "tuned": info.get("recall_at_10")}
    return index, fields, info


def build_raw(index_type: str, vectors, info: dict, options: dict):
    """(search function, build row fields) for the same structure in plain faiss, searched
    with the parameters our tuning chose."""
    n, dim = vectors.shape
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    params, keep = None, []
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        setting = "exact"
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, info["shape"]["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = info["shape"]["ef_construction"]  # the graph ours built
        index.add(vectors)
        ef = info["search"]["efSearch"]
        params = faiss.SearchParametersHNSW(efSearch=ef)
        setting = f"efSearch {ef}"
    else:  # IVFPQ + IndexRefineFlat, with the nlist / pq_m / bits ours was built with
        nlist, pq_m, bits = (info["shape"][key] for key in ("nlist", "pq_m", "bits"))
        quantizer = faiss.IndexFlatIP(dim)
        base = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, bits, faiss.METRIC_INNER_PRODUCT)
        base.cp.niter = base.pq.cp.niter = TRAIN_ITERATIONS  # the training ours does
        base.pq.cp.max_points_per_centroid = TRAIN_POINTS_PER_CENTROID
        sample = np.sort(np.random.default_rng(0).choice(
            n, min(n, TRAIN_POINTS_PER_CENTROID * max(nlist, 2 ** bits)), replace=False))
        base.train(vectors[sample])
        index = faiss.IndexRefineFlat(base)
        index.add(vectors)
        nprobe, k_factor = info["search"]["nprobe"], info["search"]["k_factor"]
        ivf_params = faiss.SearchParametersIVF(nprobe=nprobe)
        params = faiss.IndexRefineSearchParameters(k_factor=k_factor, base_index_params=ivf_params)
        keep = [quantizer, base, ivf_params]
        setting = f"nprobe {nprobe}, k_factor {k_factor}"
    build_s = time.perf_counter() - started
    gc.collect()
    fields = {"index": f"raw {index_type}", "build_s": build_s, "rss_mb": rss_mb() - before,
              "index_mb": len(faiss.serialize_index(index)) / 2**20, "setting": setting,
              "tuned": None}

    def search(queries, _keep=(index, params, keep)):
        return index.search(queries, K, params=params)[1]

    return one_thread_if_single(search), fields


def bench_type(index_type: str, vectors, queries, truth, options: dict, tuning) -> list[dict]:
    """Rows for ours and raw faiss (or one row saying what ours built instead)."""
    with tempfile.TemporaryDirectory(prefix="bench-faiss-") as folder:
        ours, ours_fields, info = build_ours(index_type, vectors, folder, options, tuning)
        try:
            if info["type"] != index_type:  # e.g. too few vectors for ivfpq
                return [{**ours_fields, "index": f"ours {index_type}: built {info['type']}"}]
            raw, raw_fields = build_raw(index_type, vectors, info, options)
            timed = time_pair({"ours": lambda q: ours.search(KIND, q, K)[1], "raw": raw},
                              queries)
            rows = []
            for name, fields, search in (("ours", ours_fields, None), ("raw", raw_fields, raw)):
                latencies, batch_s = timed[name]
                found = ours.search(KIND, queries, K)[1] if name == "ours" else search(queries)
                rows.append({**fields, "recall": recall(found, truth), "qps": len(queries) / batch_s,
                             "p50_ms": 1000 * float(np.percentile(latencies, 50)),
                             "p95_ms": 1000 * float(np.percentile(latencies, 95))})
            return rows
        finally:
            ours.close()


def memory_bandwidth_gbs() -> tuple[float, float]:
    """GB/s of one numpy thread summing a 2 GiB array (best of 3): as float32, and as int64,
    whose plain loop does less arithmetic per byte (float32 sum is pairwise, so it can be
    arithmetic-bound rather than memory-bound)."""
    block = np.ones(2**29, dtype=np.float32)  # 2 GiB
    rates = []
    for view in (block, block.view(np.int64)):
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            view.sum()
            best = min(best, time.perf_counter() - started)
        rates.append(block.nbytes / best / 1e9)
    del block
    return rates[0], rates[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000",
                        help="comma-separated vector counts (1000000 adds ~15-60 minutes on 2 cores)")
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--data", choices=DATA_PROFILES, default="embedding",
                        help="embedding: calibrated on real embeddings; clusters: the stress case")
    parser.add_argument("--clusters", type=int, default=64)
    parser.add_argument("--noise", type=float, default=0.4, help="clusters only")
    parser.add_argument("--rank", type=int, default=0,
                        help="clusters only: intrinsic dim of each cluster's spread (0: isotropic)")
    parser.add_argument("--options", default="{}",
                        help='extra FaissIndex options as JSON, e.g. \'{"target_recall": 0.99}\'')
    parser.add_argument("--tune-on", choices=("queries", "synthetic"), default="queries",
                        help="queries: tune on other fresh points of the distribution (what an "
                             "index build does with its other kinds' vectors); synthetic: on "
                             "perturbed stored vectors (what a one-kind index does)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(format="  note: %(message)s")  # tuning warnings, under the table
    sizes = [int(size) for size in args.sizes.split(",")]
    types = [name for name in args.types.split(",") if name]
    options = json.loads(args.options)

    float_rate, int_rate = memory_bandwidth_gbs()
    bandwidth = max(float_rate, int_rate)  # the faster read is the better bandwidth estimate
    rng = np.random.default_rng(args.seed)
    vectors, queries = make_data(rng, max(sizes), 2 * args.queries, args.dim, args.data,
                                 args.clusters, args.noise, args.rank)
    queries, tuning = queries[:args.queries], queries[args.queries:]  # apart: tuning is no test
    tuning = None if args.tune_on == "synthetic" else tuning
    print(f"{args.queries} queries, dim {args.dim}, top-{K}, {os.cpu_count()} CPUs, faiss "
          f"{faiss.__version__}, data: "
          f"{describe_data(args.data, args.clusters, args.noise, args.rank)}, tuned on "
          f"{args.tune_on}; "
          f"memory bandwidth (1 numpy thread summing 2 GiB): "
          f"{float_rate:.1f} GB/s as float32, {int_rate:.1f} GB/s as int64")
    print()
    print("| n | index | build s | index MB | RSS Δ MB | search setting | tuned R@10 | R@10 "
          "| p50 ms | p95 ms | batch q/s | ours/raw p50 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        data = np.ascontiguousarray(vectors[:n])
        truth = exact_top_k(data, queries, K)
        for index_type in types:
            ours, *rest = bench_type(index_type, data, queries, truth, options, tuning)
            for result in (ours, *rest):
                if "recall" not in result:
                    print(f"| {n} | {result['index']} instead | | | | | | | | | | |")
                    continue
                ratio = f"{ours['p50_ms'] / rest[0]['p50_ms']:.2f}" if result is ours else ""
                tuned = "" if result["tuned"] is None else f"{result['tuned']:.3f}"
                print(f"| {n} | {result['index']} | {result['build_s']:.2f} | "
                      f"{result['index_mb']:.1f} | {result['rss_mb']:.0f} | {result['setting']} | "
                      f"{tuned} | {result['recall']:.3f} | {result['p50_ms']:.3f} | "
                      f"{result['p95_ms']:.3f} | {result['qps']:.0f} | {ratio} |", flush=True)
            if index_type == "flat":
                flat_bytes = n * args.dim * 4
                print(f"| {n} | exact-scan floor | | {flat_bytes / 2**20:.1f} | | "
                      f"{flat_bytes / 1e9:.3f} GB / {bandwidth:.1f} GB/s | | | "
                      f"{1000 * flat_bytes / 1e9 / bandwidth:.3f} | | | |", flush=True)


if __name__ == "__main__":
    main()

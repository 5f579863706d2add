"""The embedded Qdrant engine (qdrant-edge-py: Qdrant's Rust engine in-process), one shard per kind.

Layout under `<path>/qdrant/`:

    edge.json   dim, HNSW settings and, per kind, how it is searched (written when a shard is
                created and by save(); describe() reports it)
    <kind>/     one EdgeShard: segments, HNSW graphs. No write-ahead log: save() flushes, and
                close() flushes too, so a closed folder can be copied and reopened elsewhere.
    .lock       held (flock) while an index object has the folder open

How a kind is searched is decided at save(). Below `exact_below` points it is searched exactly
(SearchParams(exact=True)), which gives the same answers as FAISS's flat index. From there on,
save() runs optimize() (the blocking HNSW build, m / ef_construct) and picks the smallest
hnsw_ef at which recall@10 against the engine's exact search reaches `target_recall` on two
sets of queries made from stored vectors, "near" (image-like) and "far" (text-like); see
_tuning_queries and _tune. If no ef up to 512 does, the kind stays exact. Queries unlike the
stored vectors can still see less: measure on real queries before lowering the target.

`allowed` is a HasId filter inside the engine: searched exactly when it passes fewer than
`exact_filter_below` ids (or the kind is exact), else on the graph with ACORN (search_params).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from indexers.base import VectorIndexError
from indexers.checks import KIND_PATTERN
from indexers.tuning import (TUNING_K, QuerySets, enough_given, recall, sample_rows,
                             score_floors, smallest_setting, synthetic_sets)

try:
    import qdrant_edge as edge
except ImportError:  # pragma: no cover - exercised by forcing `edge = None` in tests
    edge = None

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no folder lock
    fcntl = None

log = logging.getLogger(__name__)

PARAMS_FILE = "edge.json"
LOCK_FILE = ".lock"
UPSERT_BATCH = 4096
TUNE_QUERIES = 400  # tuning queries at save(), half near and half far (_tuning_queries)
EF_CHOICES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def edge_version() -> str:
    try:
        return version("qdrant-edge-py")
    except PackageNotFoundError:  # pragma: no cover - a source build
        return "unknown"


class EdgeEngine:
    """qdrant-edge shards under `folder` (`<path>/qdrant`); QdrantIndex checks every input
    before calling it, so ids here are int64 >= 0 and vectors float32 (N, dim)."""

    def __init__(self, folder: Path, dim: int, options):
        if edge is None:
            raise VectorIndexError("the embedded Qdrant engine needs qdrant-edge-py: "
                                   "pip install qdrant-edge-py==0.9.0 (or pass engine='client')")
        self.folder, self.dim, self.options = folder, dim, options
        self.tuning_queries: dict[str, np.ndarray] = {}  # QdrantIndex shares its own
        self.unfiltered: dict[tuple[str, int], object] = {}  # (kind, k) -> SearchParams
        folder.mkdir(parents=True, exist_ok=True)
        self.lock = _lock(folder / LOCK_FILE)
        self.shards: dict[str, edge.EdgeShard] = {}
        self.changed: set[str] = set()  # kinds added to or removed from since the last save()
        try:
            self.params = self._read_params()
            for kind in sorted(self.params["kinds"]):
                self.shards[kind] = self._load(kind)
        except BaseException:
            self.close()
            raise

    # -- files ---------------------------------------------------------------------------

    def _read_params(self) -> dict:
        path = self.folder / PARAMS_FILE
        if not path.exists():
            return {"engine": "qdrant-edge", "dim": self.dim, "distance": "dot",
                    "hnsw": {"m": self.options.hnsw_m,
                             "ef_construct": self.options.ef_construction},
                    "kinds": {}}
        try:
            params = json.loads(path.read_text(encoding="utf-8"))
            stored_dim, kinds = int(params["dim"]), params["kinds"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise VectorIndexError(f"cannot read {path} ({err}); rebuild the index with "
                                   "`python cli.py index`") from err
        if stored_dim != self.dim:
            raise VectorIndexError(f"the Qdrant shards in {self.folder} hold {stored_dim}-d "
                                   f"vectors but this index was opened for {self.dim}-d; use "
                                   "the encoder it was built with, or rebuild with "
                                   "`python cli.py index`")
        if not all(isinstance(kind, str) and KIND_PATTERN.fullmatch(kind) for kind in kinds):
            raise VectorIndexError(f"{path} names an invalid kind; rebuild the index")
        return params

    def _write_params(self) -> None:
        """Write beside, then rename: a crash leaves the old file or the new one."""
        path = self.folder / PARAMS_FILE
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(json.dumps(self.params, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(temp, path)

    def _load(self, kind: str):
        try:
            return edge.EdgeShard.load(str(self.folder / kind))
        except Exception as err:  # the engine raises plain Exception with its own message
            raise VectorIndexError(f"cannot open the Qdrant shard {self.folder / kind} ({err}); "
                                   "rebuild the index with `python cli.py index`") from err

    def _create(self, kind: str):
        options = self.options
        config = edge.EdgeConfig(
            vectors=edge.EdgeVectorParams(size=self.dim, distance=edge.Distance.Dot),
            hnsw_config=edge.HnswIndexConfig(
                m=options.hnsw_m, ef_construct=options.ef_construction,
                full_scan_threshold=options.full_scan_threshold_kb),
            # Index every segment when save() optimizes; save() only optimizes kinds at or
            # above exact_below, so small kinds never pay for a graph they do not use.
            optimizers=edge.EdgeOptimizersConfig(indexing_threshold=1),
            # The contract makes adds durable at save(), which flushes; a WAL would double
            # the disk written by a build and the folder the incremental builder copies.
            wal_enabled=False)
        # Record the kind first: a shard folder always has its entry (and dim) in edge.json.
        self.params["kinds"][kind] = {"search": "exact", "points": 0}
        self._write_params()
        try:
            return edge.EdgeShard.create(str(self.folder / kind), config)
        except Exception as err:  # e.g. leftover segments of a crashed build in that folder
            raise VectorIndexError(f"cannot create the Qdrant shard {self.folder / kind} "
                                   f"({err}); remove that folder or rebuild the index") from err

    # -- the verbs QdrantIndex delegates ----------------------------------------------------

    def has(self, kind: str) -> bool:
        return kind in self.shards

    def add(self, kind: str, ids: np.ndarray, vectors: np.ndarray,
            payloads: list[dict | None] | None) -> None:
        shard = self.shards.get(kind)
        if shard is None:
            shard = self.shards[kind] = self._create(kind)
        self.changed.add(kind)
        for start in range(0, len(ids), UPSERT_BATCH):
            stop = min(start + UPSERT_BATCH, len(ids))
            points = [edge.Point(int(ids[i]), vectors[i],
                                 None if payloads is None else payloads[i])
                      for i in range(start, stop)]
            shard.update(edge.UpdateOperation.upsert_points(points))

    def remove(self, kind: str, ids: np.ndarray) -> None:
        shard = self.shards.get(kind)
        if shard is None:
            return
        self.changed.add(kind)
        for start in range(0, len(ids), UPSERT_BATCH):
            chunk = ids[start:start + UPSERT_BATCH].tolist()
            shard.update(edge.UpdateOperation.delete_points(chunk))

    def search(self, kind: str, queries: np.ndarray, depth: int,
               allowed: np.ndarray | None) -> list[list]:
        """One list of scored points (.id, .score) per query, best first."""
        shard = self.shards[kind]
        query_filter = None
        if allowed is not None:
            query_filter = edge.Filter(must=[edge.HasIdCondition(set(allowed.tolist()))])
        if allowed is None:  # the common case: its params are built once per (kind, k)
            key = (kind, depth)
            if key not in self.unfiltered:
                self.unfiltered[key] = self.search_params(kind, None, depth)
            params = self.unfiltered[key]
        else:
            params = self.search_params(kind, len(allowed), depth)
        # a list crosses into the engine ~5x faster than a numpy row read element by element
        requests = [edge.QueryRequest(limit=depth, query=edge.Query.Nearest(query),
                                      filter=query_filter, params=params)
                    for query in queries.tolist()]
        if len(requests) == 1:
            return [shard.query(requests[0])]
        return shard.query_batch(edge.QueryBatchRequest(requests))

    def search_params(self, kind: str, allowed: int | None = None, k: int = TUNING_K):
        """The SearchParams for a top-k search of this kind, with `allowed` ids in the filter
        (None: no filter).

        Exact until a save() chose HNSW, and exact for filters passing fewer than
        exact_filter_below ids. Larger filters walk the graph with ACORN at every selectivity
        (the engine's default stops at 40 %): without it recall@10 fell to 0.5-0.75 at 20 %
        passing (100k x 512-d), with it 1.0 from 20 % to 60 %. Either way, the engine's HasId
        check costs about as much as scoring: 14-60 ms a query for 20k-60k allowed ids there.
        hnsw_ef was tuned for k=10 and widens in proportion for larger k, as FAISS's does.
        """
        chosen = self.params["kinds"].get(kind, {})
        small_filter = allowed is not None and allowed < self.options.exact_filter_below
        if chosen.get("search") != "hnsw" or small_filter:
            return edge.SearchParams(exact=True)
        ef = self.options.hnsw_ef or int(chosen["hnsw_ef"])
        ef = max(ef, math.ceil(ef * k / TUNING_K))
        if allowed is None:
            return edge.SearchParams(hnsw_ef=ef)
        return edge.SearchParams(hnsw_ef=ef, acorn=edge.AcornSearchParams(
            enable=True, max_selectivity=1.0))

    def count(self, kind: str) -> int:
        shard = self.shards.get(kind)
        return 0 if shard is None else int(shard.count(edge.CountRequest(exact=True)))

    def save(self) -> None:
        self.unfiltered.clear()  # hnsw_ef may change below
        for kind in sorted(self.changed):
            shard = self.shards[kind]
            shard.flush()
            points = self.count(kind)
            if points < self.options.exact_below:
                chosen = {"search": "exact", "why": f"under {self.options.exact_below} points"}
            else:
                shard.optimize()  # blocking: builds the HNSW graph of every segment
                shard.flush()
                chosen = self._tune(kind)
            self.params["kinds"][kind] = {**chosen, "points": points}
            log.info("Qdrant shard %s: %d points, %s", kind, points, _summary(chosen))
        self._write_params()
        self.changed.clear()

    def _tune(self, kind: str) -> dict:
        """The smallest hnsw_ef (or the fixed `hnsw_ef` option) at which every set of
        _tuning_queries reaches target_recall against the engine's exact search (see
        indexers/tuning.py), with what was measured; exact search when even the widest ef
        does not."""
        started = time.perf_counter()
        shard, target = self.shards[kind], self.options.target_recall
        given = self.tuning_queries.get(kind)
        if enough_given(given):
            query_sets = {"given": (sample_rows(given, TUNE_QUERIES, np.random.default_rng(0)),
                                    None)}
        else:
            query_sets = _tuning_queries(shard)

        def scores(queries: np.ndarray, params) -> np.ndarray:
            """(S, TUNING_K) scores, best first, -inf where fewer were found."""
            requests = [edge.QueryRequest(limit=TUNING_K, query=edge.Query.Nearest(q),
                                          params=params) for q in queries]
            found = shard.query_batch(edge.QueryBatchRequest(requests))
            table = np.full((len(queries), TUNING_K), -np.inf)
            for row, hits in enumerate(found):
                table[row, :len(hits)] = [hit.score for hit in hits]
            return table

        floors = {name: score_floors(scores(queries, edge.SearchParams(exact=True)))
                  for name, (queries, _) in query_sets.items()}

        def recalls(ef: int) -> dict[str, float]:
            return {name: round(recall(scores(queries, edge.SearchParams(hnsw_ef=ef)),
                                       floors[name]), 4)
                    for name, (queries, _) in query_sets.items()}

        def report(measured: dict[str, float]) -> dict:
            return {"recall_at_10": min(measured.values()), "recall_at_10_by_queries": measured,
                    "tuning_queries": sum(len(q) for q, _ in query_sets.values()),
                    "target_recall": target,
                    "tuned_in_s": round(time.perf_counter() - started, 1)}

        if self.options.hnsw_ef is not None:
            ef = self.options.hnsw_ef
            return {"search": "hnsw", "hnsw_ef": ef, **report(recalls(ef))}
        ef, measured = smallest_setting(EF_CHOICES, recalls, target)
        if min(measured.values()) >= target:
            return {"search": "hnsw", "hnsw_ef": ef, **report(measured)}
        log.warning("Qdrant shard %s: at hnsw_ef %d recall@10 is %s, under the target %.3f; "
                    "searching it exactly", kind, EF_CHOICES[-1], measured, target)
        return {"search": "exact", "why": f"hnsw_ef {EF_CHOICES[-1]} did not reach the target",
                **report(measured)}

    def close(self) -> None:
        """Flush (so the folder can be copied and reopened) and release the folder."""
        for kind, shard in self.shards.items():
            try:
                shard.flush()
            finally:
                shard.close()
            if kind in self.changed:
                log.info("Qdrant shard %s closed without save(): its data is kept but its "
                         "search settings were not tuned", kind)
        self.shards.clear()
        if self.lock is not None:
            self.lock.close()  # closing the file releases the flock
            self.lock = None

    def describe(self) -> dict:
        kinds = {kind: {**self.params["kinds"].get(kind, {}), "points": self.count(kind)}
                 for kind in sorted(self.shards)}
        return {"engine": "qdrant-edge", "engine_version": edge_version(), "distance": "dot",
                "hnsw": {"m": self.params["hnsw"]["m"],
                         "ef_construct": self.params["hnsw"]["ef_construct"]},
                "exact_below": self.options.exact_below,
                "target_recall": self.options.target_recall, "kinds": kinds}


def _tuning_queries(shard) -> QuerySets:
    """"near" and "far" halves of unit queries made from TUNE_QUERIES random stored vectors
    (indexers/tuning.py); no "self" set, since HNSW finds a stored vector too easily.

    Recall@10 at hnsw_ef 32 on 30k x 512-d clusters (bench_qdrant.py's data): stored vectors
    0.995, fresh points of the clusters 0.979, near queries 0.954. At 100k, hnsw_ef 64 / 128 /
    512: fresh 0.98 / 1.00 / 1.00, near 0.93 / 0.98 / 0.995, far 0.77 / 0.88 / 0.98; so the
    far set decides the ef, and image queries get more than the target. On the tests' 30k x
    32-d data near queries are a little easier than fresh points.
    """
    sample = shard.query(edge.QueryRequest(limit=TUNE_QUERIES, query=edge.Sample.Random,
                                           with_vector=True))
    origins = np.asarray([point.vector for point in sample], dtype=np.float32)  # (S, dim)

    def nearest_cosine(rows: np.ndarray) -> np.ndarray:
        # a wide HNSW search is close enough for a distance
        requests = [edge.QueryRequest(limit=2, query=edge.Query.Nearest(origins[row]),
                                      params=edge.SearchParams(hnsw_ef=EF_CHOICES[-1]))
                    for row in rows]
        found = shard.query_batch(edge.QueryBatchRequest(requests)) if requests else []
        return np.array([max([hit.score for hit in hits if hit.id != sample[row].id],
                             default=1.0) for row, hits in zip(rows, found)])

    return synthetic_sets(origins, nearest_cosine, np.random.default_rng(0))


def _summary(chosen: dict) -> str:
    if chosen["search"] == "hnsw":
        return f"HNSW hnsw_ef {chosen['hnsw_ef']}, recall@10 {chosen['recall_at_10']}"
    return f"exact search ({chosen['why']})"


def _lock(path: Path):
    """An open file holding an exclusive flock, or VectorIndexError when another object or
    process holds it. None where flock does not exist."""
    if fcntl is None:  # pragma: no cover
        return None
    handle = open(path, "a+")  # noqa: SIM115 - held until close()
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        handle.close()
        raise VectorIndexError(f"the Qdrant store {path.parent} is open in another process or "
                               "object; close it first") from err
    return handle

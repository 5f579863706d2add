"""FAISS inner-product search: an exact flat index per kind is the source of truth, and save()
adds an approximate (ANN) structure beside it when the kind is large, tuned to a target recall.

Vectors are L2-normalised by the encoder, so inner product is cosine similarity. Exact search
stays the default below 50k vectors per kind: PERF.md measures 0.39 ms per query at 10k and
7 ms at 100k, while HNSW answers 1M in ~0.15 ms at recall@10 0.98-0.997.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from indexers.base import VectorIndex, VectorIndexError, register_backend
from indexers.checks import (KIND_PATTERN, check_add, check_allowed, check_kind, check_queries,
                             known_options, padding)
from indexers.tuning import (TUNING_K, QuerySets, enough_given, recall, sample_rows,
                              score_floors, smallest_setting, synthetic_sets)

# open_index imports every backend, so a missing faiss must not break the Qdrant one:
# the error comes when a FAISS index is opened.
try:
    import faiss
except ImportError:  # pragma: no cover - exercised only where faiss is absent
    faiss = None

log = logging.getLogger(__name__)

SUFFIX = ".index"
PARAMS_SUFFIX = ".params.json"
ANN_TYPES = ("hnsw", "ivfpq")
INDEX_TYPES = ("auto", "flat", *ANN_TYPES)
STORAGES = ("fp32", "fp16")
EF_SEARCH_GRID = (16, 24, 32, 48, 64, 96, 128, 256, 512)
TUNING_QUERIES = 1000
POINTS_PER_CENTROID = 39  # faiss k-means warns with fewer training points per centroid
MIN_IVFPQ_VECTORS = 256  # below this a kind asked to be "ivfpq" stays flat
ANN_MAX_K_SHARE = 8  # the ANN answers only when k <= n / 8; above, exact costs about as much
MIN_FILTER_SHARE = 0.1  # a filter passing fewer vectors than this share scans the flat index
TRAIN_ITERATIONS = 10  # k-means iterations for the IVF lists and the PQ codebooks
TRAIN_POINTS_PER_CENTROID = 64  # training sample per centroid (faiss's default is 256)
MAX_REFINE_FACTOR = 64  # re-scoring 640 candidates for a top-10 costs ~0.1 ms at 512-d
BUILD_CHUNK = 65_536  # vectors handed to faiss at a time when building or converting


@dataclass(frozen=True)
class FaissOptions:
    """The FAISS backend's build options (JSON values, kept in the manifest); see FaissIndex."""

    index_type: str = "auto"
    target_recall: float = 0.95
    auto_threshold: int = 50_000
    hnsw_m: int = 32
    ef_construction: int = 64  # 100 costs ~40 % more build time for recall we do not need
    nlist: int | None = None
    pq_m: int | None = None
    refine_factor: int = 4
    exact_filter_limit: int = 20_000
    storage: str = "fp32"

    @classmethod
    def parse(cls, dim: int, options: dict) -> FaissOptions:
        opts = known_options(cls, options, "FAISS")
        if opts.index_type not in INDEX_TYPES:
            raise VectorIndexError(f"index_type {opts.index_type!r} is not one of {INDEX_TYPES}")
        if opts.storage not in STORAGES:
            raise VectorIndexError(f"storage {opts.storage!r} is not one of {STORAGES}")
        number = isinstance(opts.target_recall, (int, float)) and not isinstance(
            opts.target_recall, bool)
        if not number or not 0 < opts.target_recall <= 1:
            raise VectorIndexError(f"target_recall must be in (0, 1], got {opts.target_recall!r}")
        for name in ("auto_threshold", "hnsw_m", "ef_construction", "nlist", "pq_m",
                     "refine_factor", "exact_filter_limit"):
            value = getattr(opts, name)
            if value is None and name in ("nlist", "pq_m"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise VectorIndexError(f"{name} must be an integer >= 1, got {value!r}")
        if opts.pq_m is not None and dim % opts.pq_m:
            raise VectorIndexError(f"pq_m={opts.pq_m} must divide the vector dim {dim}")
        return opts

    def settings(self, ann_type: str) -> dict:
        """What an ANN structure of this type is built from; a saved one built with other
        settings is rebuilt by the next save()."""
        if ann_type == "hnsw":
            names = ("hnsw_m", "ef_construction", "target_recall")
        else:
            names = ("nlist", "pq_m", "refine_factor", "target_recall")
        return {"type": ann_type, **{name: getattr(self, name) for name in names}}


@dataclass
class _Ann:
    """A kind's ANN structure. Its labels are positions in the kind's flat index (it was built
    from it in order), and it reads vectors from that flat index instead of a copy."""

    type: str  # "hnsw" or "ivfpq"
    index: faiss.Index  # IndexHNSWFlat (storage = the flat) or IndexRefine(IVFPQ, the flat)
    base: faiss.Index | None  # the IndexIVFPQ under IndexRefine, kept alive here
    search: dict  # {"efSearch": int} or {"nprobe": int, "k_factor": int}
    cached: dict = field(default_factory=dict)  # (k, *search values) -> SearchParameters


@register_backend("faiss")
class FaissIndex(VectorIndex):
    """FAISS indexes under `<path>/faiss/`, loaded whole into memory.

    Files per kind: `<kind>.index`, an IndexIDMap2 over IndexFlatIP (or an fp16
    IndexScalarQuantizer): the exact source of truth that add, remove and replace change.
    For an ANN kind, save() also writes `<kind>.hnsw.index` or `<kind>.ivfpq.index` and
    `<kind>.params.json` (type, settings, chosen efSearch / nprobe, measured recall@10, build
    seconds, and a digest of the flat index's ids). Every file is replaced atomically.

    Options (all optional, JSON values):
      index_type: "auto" (flat below `auto_threshold` vectors in a kind, hnsw from there),
        "flat" (always exact; a saved ANN file is ignored), "hnsw", or "ivfpq" (a kind with
        fewer than 256 vectors stays flat).
      target_recall (0.95): the recall@10 the search parameter is tuned to at save().
      auto_threshold (50000): vectors per kind from which "auto" builds HNSW.
      hnsw_m (32), ef_construction (64): IndexHNSWFlat's M and efConstruction.
      nlist (None = 4 * sqrt(n)): IVF lists; capped at n / 39 so k-means has enough points.
      pq_m (None = dim / 8, or the next divisor of dim): PQ sub-quantizers; 8 bits each
        (fewer for small kinds); IVFPQ candidates are re-scored exactly from the flat index.
      refine_factor (4): IVFPQ fetches k * refine_factor candidates for that re-scoring; the
        smallest factor tuning tries, doubling it up to 64 when recall needs it.
      exact_filter_limit (20000): a search whose `allowed` ids number at most this is exact
        over those vectors alone (gathered and multiplied: 0.3 ms for 1k of 100k, against
        0.65 ms for a flat scan with an id selector).
      storage: "fp32" (default) or "fp16" for the flat index (half the memory; scores then
        carry fp16 rounding, ~1e-3). A saved flat index in the other storage is converted by
        the next save().

    Tuning: save() makes up to 1,000 queries from the kind's own vectors, a third each:
    "near" (moved off its vector in a random direction to the cosine of that vector's nearest
    neighbour: an image-to-similar-case query), "far" (moved to cosine 0.5: a stand-in for a
    text query against image vectors) and "self" (the vector itself with its own id left out
    of the results, a held-out query: this one catches IVF lists too few for queries whose
    neighbours spread over many lists). It finds their exact top-10 with the flat index and
    picks the smallest efSearch (16 ... 512), or nprobe (1, 2, 4 ... nlist) then refine
    factor, at which every set reaches target_recall; a result counts as a hit when its score
    reaches the 10th exact score (so ties count). When none does, the widest setting is kept
    and a warning logged. Queries unlike the data (other clusters, another encoder) can
    still get less; describe() gives the recall per set.

    Search: the ANN answers when the kind has no unsaved change, `allowed` is None and
    k <= n / 8; with `allowed`, up to exact_filter_limit ids are searched exactly, more go to
    the ANN with a bitmap selector (efSearch / nprobe widened by 1 / share passing) when at
    least 10% of the kind passes, else to a flat scan with the selector. Rows the ANN leaves
    short of k results are redone exactly. Between an add/remove and save() the kind is
    searched exactly, so results are never stale.

    Reopening loads flat + ANN + params; an ANN file that is missing, unreadable, older than
    the flat file, or built for other ids is ignored (logged) and the kind is searched
    exactly until save() rebuilds it.

    Memory: the ANN reads vectors from the flat index (HNSW is saved with
    IO_FLAG_SKIP_STORAGE and attached to it; IVFPQ is wrapped in IndexRefine over it), so an
    ANN kind costs the flat vectors plus the HNSW graph (~8 * M bytes per vector at level 0,
    ~0.3 GB at 1M for M=32) or the PQ codes and list ids (pq_m + 8 bytes per vector). Building
    HNSW briefly holds a second fp32 copy. Each save() of a changed ANN kind rebuilds it from
    scratch (HNSW M=32 at 1M x 512-d: PERF.md measured 140 s).

    GPU: none here. `faiss.index_cpu_to_gpu` would go in `_open_ann` (IVFPQ, and the flat
    index for exact search); faiss's HNSW has no GPU version (cuVS CAGRA would replace it).
    """

    def __init__(self, path: Path, dim: int, **options):
        if faiss is None:
            raise VectorIndexError("the FAISS backend needs faiss: pip install faiss-cpu")
        super().__init__(path, dim)
        self.options = FaissOptions.parse(dim, options)
        self.folder = self.path / "faiss"
        self.indexes: dict[str, faiss.IndexIDMap2] = {}
        # Largest id per kind: record-store row ids only grow, so an add whose ids are all
        # above it cannot replace anything and skips the O(N) removal scan.
        self.max_ids: dict[str, int] = {}
        self.unsaved: set[str] = set()
        self.rebuild: set[str] = set()  # saved kinds whose files differ from the options
        self.ann: dict[str, _Ann] = {}
        self.info: dict[str, dict] = {}  # kind -> what describe() says about it
        self.lookups: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # kind -> (order, sorted ids)
        # kind -> (flat inner index, ids by flat position): see _views
        self.views: dict[str, tuple[faiss.Index, np.ndarray]] = {}
        for file in sorted(self.folder.glob(f"*{SUFFIX}")):
            kind = file.name[:-len(SUFFIX)]
            if KIND_PATTERN.fullmatch(kind):  # not "<kind>.hnsw.index"
                self.indexes[kind] = self._load(file)
        for kind, index in self.indexes.items():
            self.max_ids[kind] = int(_id_map(index).max(initial=-1))
            self._open_saved_ann(kind)

    def _load(self, file: Path) -> faiss.IndexIDMap2:
        try:
            index = faiss.read_index(str(file))
        except RuntimeError as err:
            raise VectorIndexError(f"cannot read FAISS index {file}: {err}; rebuild the index "
                                   "with `python cli.py index`") from err
        inner_product = index.metric_type == faiss.METRIC_INNER_PRODUCT
        if not isinstance(index, faiss.IndexIDMap2) or not inner_product:
            raise VectorIndexError(f"{file} is not an inner-product IndexIDMap2; it was not "
                                   "written by caselens")
        if index.d != self.dim:
            raise VectorIndexError(f"{file} holds {index.d}-d vectors but this index was opened "
                                   f"for {self.dim}-d; use the encoder it was built with, or "
                                   "rebuild with `python cli.py index`")
        return index

    def _open_saved_ann(self, kind: str) -> None:
        """Attach the kind's saved ANN structure if it still matches its flat index."""
        index = self.indexes[kind]
        self.info[kind] = {"type": "flat", "n": int(index.ntotal), "storage": _storage(index)}
        wanted = self._wanted_type(kind, int(index.ntotal))
        params_file = self.folder / f"{kind}{PARAMS_SUFFIX}"
        saved = [params_file, *(self._ann_file(kind, t) for t in ANN_TYPES)]
        if _storage(index) != self.options.storage or (
                wanted == "flat" and any(file.exists() for file in saved)):
            self.rebuild.add(kind)  # save() converts, or drops the ANN files
        if self.options.index_type == "flat":
            return  # exact on request: a saved ANN file is ignored
        if not params_file.exists():
            if wanted != "flat":
                self.rebuild.add(kind)
                log.warning("FAISS kind %r has no saved %s index: searching it exactly until "
                            "the next save()", kind, wanted)
            return
        try:
            params = json.loads(params_file.read_text(encoding="utf-8"))
            stale = self._stale(kind, params)
            ann = None if stale else self._open_ann(kind, params["type"], params["search"])
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, VectorIndexError) as err:
            params, stale = {}, f"its ANN files are unreadable ({err})"
        if stale:
            log.warning("FAISS kind %r: searching exactly until the next save(): %s", kind, stale)
            self.info[kind]["search"] = f"exact: {stale}"
            self.rebuild.add(kind)
            return
        if wanted != "flat" and params.get("settings") != self.options.settings(wanted):
            self.rebuild.add(kind)  # built with other options: save() builds what they ask now
        self.ann[kind] = ann
        self.info[kind] = {key: value for key, value in params.items() if key != "ids_digest"}

    def _stale(self, kind: str, params: dict) -> str:
        """Why the saved ANN files cannot answer for the flat index ("" when they can)."""
        index, ann_file = self.indexes[kind], self._ann_file(kind, params["type"])
        if not ann_file.exists():
            return f"{ann_file.name} is missing"
        if ann_file.stat().st_mtime < (self.folder / f"{kind}{SUFFIX}").stat().st_mtime:
            return f"{ann_file.name} is older than {kind}{SUFFIX}"
        if params.get("n") != index.ntotal or params.get("ids_digest") != _ids_digest(index):
            return f"{ann_file.name} was built for other ids than {kind}{SUFFIX} holds"
        return ""

    def _ann_file(self, kind: str, ann_type: str) -> Path:
        return self.folder / f"{kind}.{ann_type}{SUFFIX}"

    def _open_ann(self, kind: str, ann_type: str, search: dict) -> _Ann:
        """Read the kind's ANN file and attach it to the flat index's vectors."""
        flat, file = self.indexes[kind], self._ann_file(kind, ann_type)
        inner = faiss.downcast_index(flat.index)
        if ann_type == "hnsw":
            graph = faiss.read_index(str(file), faiss.IO_FLAG_SKIP_STORAGE)
            if not isinstance(graph, faiss.IndexHNSW):
                raise VectorIndexError(f"{file} is not an HNSW index")
            graph.own_fields = False  # the flat index owns the vectors
            graph.storage = inner
            ann = _Ann("hnsw", graph, None, dict(search))
        elif ann_type == "ivfpq":
            base = faiss.read_index(str(file))
            if not isinstance(base, faiss.IndexIVFPQ):
                raise VectorIndexError(f"{file} is not an IVFPQ index")
            ann = _Ann("ivfpq", faiss.IndexRefine(base, inner), base, dict(search))
        else:
            raise VectorIndexError(f"unknown ANN type {ann_type!r} in {kind}{PARAMS_SUFFIX}")
        if ann.index.ntotal != flat.ntotal or ann.index.d != self.dim:
            raise VectorIndexError(f"{file} holds {ann.index.ntotal} {ann.index.d}-d vectors, "
                                   f"{kind}{SUFFIX} {flat.ntotal} {self.dim}-d")
        return ann

    def _wanted_type(self, kind: str, n: int) -> str:
        """The structure save() builds for a kind of n vectors under the options."""
        wanted = self.options.index_type
        if wanted == "auto":
            wanted = "hnsw" if n >= self.options.auto_threshold else "flat"
        if n == 0 or (wanted == "ivfpq" and n < MIN_IVFPQ_VECTORS):
            if wanted != "flat":
                log.info("FAISS kind %r stays flat: %d vectors are too few for %s", kind, n, wanted)
            wanted = "flat"
        return wanted

    def add(self, kind: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        check_kind(kind)
        ids, vectors = check_add(ids, vectors, self.dim)
        if not len(ids):
            return
        index = self.indexes.get(kind)
        if index is None:
            index = self.indexes[kind] = _new_flat(self.dim, self.options.storage)
        if ids.min() <= self.max_ids.get(kind, -1):
            # IndexIDMap2 would keep both copies of a repeated id; replace instead, as
            # Qdrant's upsert does, so the backends agree.
            index.remove_ids(ids)
        index.add_with_ids(vectors, ids)
        self.max_ids[kind] = max(self.max_ids.get(kind, -1), int(ids.max()))
        self._changed(kind)

    def remove(self, kind: str, ids: np.ndarray) -> None:
        check_kind(kind)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        index = self.indexes.get(kind)
        if index is None or not len(ids):
            return
        if index.remove_ids(ids):
            self._changed(kind)

    def _changed(self, kind: str) -> None:
        """The flat index changed: its ANN no longer matches it, so search goes exact."""
        self.unsaved.add(kind)
        self.ann.pop(kind, None)
        self.lookups.pop(kind, None)
        self.views.pop(kind, None)
        index = self.indexes[kind]
        self.info[kind] = {"type": "flat", "n": int(index.ntotal), "storage": _storage(index),
                           "search": "exact: unsaved changes"}

    def search(self, kind: str, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = check_queries(queries, self.dim, k)  # (Q, dim)
        allowed = check_allowed(allowed)
        index = self.indexes.get(kind)
        n = 0 if index is None else index.ntotal
        positions = None if allowed is None or n == 0 else self._positions(kind, allowed)
        depth = min(k, n if positions is None else len(positions))
        if depth == 0 or not len(queries):
            return padding(len(queries), k)
        with _one_thread_if(len(queries) == 1):
            found_scores, found = self._search(kind, queries, depth, positions)  # (Q, depth)
        found_ids = self._views(kind)[1][found]  # position -1 picks the last id: fixed below
        missing = found < 0
        if missing.any():
            found_scores[missing], found_ids[missing] = -np.inf, -1
        if depth == k:
            return found_scores.astype(np.float32, copy=False), found_ids
        scores, ids = padding(len(queries), k)  # (Q, k) each
        scores[:, :depth], ids[:, :depth] = found_scores, found_ids
        return scores, ids

    def _search(self, kind: str, queries: np.ndarray, depth: int,
                positions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, flat positions), each (Q, depth), best first; -1 where nothing was found."""
        n, ann = self.indexes[kind].ntotal, self.ann.get(kind)
        if positions is not None and len(positions) <= self.options.exact_filter_limit:
            return self._exact(kind, queries, depth, positions)
        share = 1.0 if positions is None else len(positions) / n
        if ann is None or depth * ANN_MAX_K_SHARE > n or share < MIN_FILTER_SHARE:
            return self._exact(kind, queries, depth, positions)
        bitmap = None if positions is None else _bitmap(n, positions)
        found_scores, found = _ann_search(ann, queries, depth, bitmap, share)
        short = found[:, depth - 1] < 0  # a graph or list that ran dry (-1s come last): redo
        if short.any():                    # those queries exactly
            found_scores[short], found[short] = self._exact(kind, queries[short], depth, positions)
        return found_scores, found

    def _exact(self, kind: str, queries: np.ndarray, depth: int,
               positions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        inner = self._views(kind)[0]
        if positions is None:
            return inner.search(queries, depth)
        if len(positions) > self.options.exact_filter_limit:
            bitmap = _bitmap(inner.ntotal, positions)
            selector = faiss.IDSelectorBitmap(inner.ntotal, faiss.swig_ptr(bitmap))
            return inner.search(queries, depth, params=faiss.SearchParameters(sel=selector))
        chosen = _vectors(inner)[positions].astype(np.float32, copy=False)  # (A, dim)
        if len(queries) == 1:  # einsum skips BLAS threads, which cost ms on one short product
            products = np.einsum("ad,d->a", chosen, queries[0])[None, :]  # (1, A)
        else:
            products = queries @ chosen.T  # (Q, A)
        top = np.argpartition(-products, depth - 1, axis=1)[:, :depth]  # (Q, depth)
        top_scores = np.take_along_axis(products, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        best = np.take_along_axis(top, order, axis=1)  # (Q, depth) indexes into positions
        return np.take_along_axis(top_scores, order, axis=1), positions[best]

    def _views(self, kind: str) -> tuple[faiss.Index, np.ndarray]:
        """The kind's flat inner index and its ids by flat position (a view into faiss's
        memory), kept between searches (downcast_index alone costs ~20 us); dropped on change."""
        if kind not in self.views:
            index = self.indexes[kind]
            self.views[kind] = (faiss.downcast_index(index.index), _id_map(index))
        return self.views[kind]

    def _positions(self, kind: str, allowed: np.ndarray) -> np.ndarray:
        """Sorted distinct flat positions of the allowed ids present in the kind."""
        if kind not in self.lookups:
            ids = self._views(kind)[1]
            order = np.argsort(ids, kind="stable")
            self.lookups[kind] = (order, ids[order])
        order, sorted_ids = self.lookups[kind]
        if not len(allowed) or not len(sorted_ids):
            return np.zeros(0, dtype=np.int64)
        where = np.minimum(np.searchsorted(sorted_ids, allowed), len(sorted_ids) - 1)
        return np.unique(order[where[sorted_ids[where] == allowed]])

    def count(self, kind: str) -> int:
        index = self.indexes.get(kind)
        return 0 if index is None else int(index.ntotal)

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for kind in sorted(self.unsaved | self.rebuild):
            if _storage(self.indexes[kind]) != self.options.storage:
                self.ann.pop(kind, None)  # it reads the vectors about to be replaced
                self.views.pop(kind, None)
                self.indexes[kind] = _convert(self.indexes[kind], self.options.storage)
                self._changed(kind)
            if kind in self.unsaved:
                _write_atomically(self.indexes[kind], self.folder / f"{kind}{SUFFIX}")
            self._save_ann(kind)
            self.unsaved.discard(kind)
            self.rebuild.discard(kind)

    def _save_ann(self, kind: str) -> None:
        """Build, write and tune the kind's ANN structure, or drop it when the kind is flat."""
        index = self.indexes[kind]
        n, wanted = int(index.ntotal), self._wanted_type(kind, int(index.ntotal))
        params_file = self.folder / f"{kind}{PARAMS_SUFFIX}"
        params_file.unlink(missing_ok=True)  # first, so a crash below leaves no params
        self.ann.pop(kind, None)
        for ann_type in ANN_TYPES:
            if ann_type != wanted:
                self._ann_file(kind, ann_type).unlink(missing_ok=True)
        self.info[kind] = {"type": "flat", "n": n, "storage": _storage(index)}
        if wanted == "flat":
            return
        started = time.perf_counter()
        inner = faiss.downcast_index(index.index)
        structure, shape = self._build(wanted, inner)
        _write_atomically(structure, self._ann_file(kind, wanted),
                          faiss.IO_FLAG_SKIP_STORAGE if wanted == "hnsw" else 0)
        del structure  # HNSW's own copy of the vectors; the reopened one reads the flat's
        first = ({"efSearch": EF_SEARCH_GRID[0]} if wanted == "hnsw" else
                 {"nprobe": 1, "k_factor": self.options.refine_factor})
        ann = self._open_ann(kind, wanted, first)
        measured = _tune(ann, inner, self.options.target_recall, kind,
                         self.tuning_queries.get(kind))
        params = {**self.info[kind], "type": wanted, "settings": self.options.settings(wanted),
                  "shape": shape, **measured, "build_seconds": round(time.perf_counter() - started, 3),
                  "faiss": faiss.__version__, "ids_digest": _ids_digest(index)}
        _write_json_atomically(params, params_file)
        self.ann[kind] = ann
        self.info[kind] = {key: value for key, value in params.items() if key != "ids_digest"}

    def _build(self, ann_type: str, inner: faiss.Index) -> tuple[faiss.Index, dict]:
        """A new ANN structure over the flat index's vectors, in position order, and its shape
        (the sizes it was built with)."""
        n, opts = inner.ntotal, self.options
        if ann_type == "hnsw":
            structure = faiss.IndexHNSWFlat(self.dim, opts.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            structure.hnsw.efConstruction = opts.ef_construction
            shape = {"M": opts.hnsw_m, "ef_construction": opts.ef_construction}
        else:
            nlist = max(1, min(opts.nlist or round(4 * math.sqrt(n)), n // POINTS_PER_CENTROID))
            pq_m = opts.pq_m or _default_pq_m(self.dim)
            bits = max(1, min(8, int(math.log2(n / POINTS_PER_CENTROID))))
            quantizer = faiss.IndexFlatIP(self.dim)
            structure = faiss.IndexIVFPQ(quantizer, self.dim, nlist, pq_m, bits,
                                         faiss.METRIC_INNER_PRODUCT)
            # Coarse k-means and PQ training dominate the build (faiss's defaults took ~60 s
            # for 5k x 512-d); the exact re-scoring makes up for rougher codes.
            structure.cp.niter = structure.pq.cp.niter = TRAIN_ITERATIONS
            structure.pq.cp.max_points_per_centroid = TRAIN_POINTS_PER_CENTROID
            sample = np.sort(np.random.default_rng(0).choice(
                n, min(n, TRAIN_POINTS_PER_CENTROID * max(nlist, 2 ** bits)), replace=False))
            structure.train(_vectors(inner)[sample].astype(np.float32))
            shape = {"nlist": nlist, "pq_m": pq_m, "bits": bits}
        if ann_type == "hnsw":
            # One add: faiss inserts each call's points level by level in a shuffled order;
            # adding 1M in chunks of 65k left part of the graph unreachable (recall@10 stuck
            # at 0.96 for any efSearch at 300k, against 0.9999 for a single add).
            structure.add(np.ascontiguousarray(_vectors(inner), dtype=np.float32))
            return structure, shape
        for start in range(0, n, BUILD_CHUNK):
            structure.add(np.ascontiguousarray(
                _vectors(inner)[start:start + BUILD_CHUNK], dtype=np.float32))
        return structure, shape

    def close(self) -> None:
        if self.unsaved:
            log.warning("closing FAISS index %s with unsaved kinds %s; call save() to keep them",
                        self.folder, sorted(self.unsaved))
        self.ann.clear()  # before the flat indexes whose vectors they read
        self.lookups.clear()
        self.views.clear()
        self.indexes.clear()
        self.unsaved.clear()
        self.rebuild.clear()

    def describe(self) -> dict:
        return {"backend": self.name, "options": asdict(self.options),
                "kinds": {kind: dict(self.info[kind]) for kind in sorted(self.indexes)}}

    @classmethod
    def needed_files(cls, described: dict) -> list[str]:
        """Each described kind's flat index (an ANN file that is gone only costs speed: the
        kind is searched exactly and the file rebuilt at the next save)."""
        kinds = described.get("kinds")
        return [f"faiss/{kind}{SUFFIX}" for kind in kinds] if kinds else ["faiss"]


def _new_flat(dim: int, storage: str) -> faiss.IndexIDMap2:
    if storage == "fp16":
        return faiss.IndexIDMap2(faiss.IndexScalarQuantizer(
            dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT))
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _storage(index: faiss.IndexIDMap2) -> str:
    return "fp16" if isinstance(faiss.downcast_index(index.index),
                                faiss.IndexScalarQuantizer) else "fp32"


def _convert(index: faiss.IndexIDMap2, storage: str) -> faiss.IndexIDMap2:
    """The same ids and vectors in the other storage, in the same order."""
    converted = _new_flat(index.d, storage)
    inner, ids = faiss.downcast_index(index.index), _id_map(index).copy()
    for start in range(0, index.ntotal, BUILD_CHUNK):
        converted.add_with_ids(np.ascontiguousarray(
            _vectors(inner)[start:start + BUILD_CHUNK], dtype=np.float32),
            ids[start:start + BUILD_CHUNK])
    return converted


def _vectors(inner: faiss.Index) -> np.ndarray:
    """(n, dim) float32 or float16 view of a flat index's vectors, without a copy; valid only
    until the index next changes."""
    half = isinstance(inner, faiss.IndexScalarQuantizer)
    if inner.ntotal == 0:
        return np.zeros((0, inner.d), dtype=np.float32)
    raw = faiss.rev_swig_ptr(inner.codes.data(), inner.ntotal * inner.code_size)
    return raw.view(np.float16 if half else np.float32).reshape(inner.ntotal, inner.d)


def _id_map(index: faiss.IndexIDMap2) -> np.ndarray:
    """(n,) int64 view of the ids by flat position, without a copy; valid until it changes."""
    if index.ntotal == 0:
        return np.zeros(0, dtype=np.int64)
    return faiss.rev_swig_ptr(index.id_map.data(), index.ntotal)


def _ids_digest(index: faiss.IndexIDMap2) -> str:
    """Identifies the ids in flat-position order: what an ANN file's labels refer to."""
    return hashlib.blake2b(_id_map(index).tobytes(), digest_size=16).hexdigest()


def _bitmap(n: int, positions: np.ndarray) -> np.ndarray:
    """Bits for faiss.IDSelectorBitmap (bit i set: position i allowed)."""
    mask = np.zeros(n, dtype=bool)
    mask[positions] = True
    return np.packbits(mask, bitorder="little")


def _default_pq_m(dim: int) -> int:
    """The most sub-quantizers that divide dim into parts of at least 8 dimensions (64 bytes
    per 512-d vector; more sub-quantizers cost more to train than re-scoring saves)."""
    return max([m for m in range(1, dim + 1) if dim % m == 0 and dim // m >= 8], default=1)


def _ann_search(ann: _Ann, queries: np.ndarray, k: int, bitmap: np.ndarray | None = None,
                share: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Search the ANN structure; with a bitmap of allowed positions (kept alive by the caller),
    efSearch / nprobe grow by 1 / share, since the allowed neighbours lie deeper."""
    if bitmap is not None:
        selector = faiss.IDSelectorBitmap(len(bitmap) * 8, faiss.swig_ptr(bitmap))
        return ann.index.search(queries, k, params=_ann_params(ann, k, selector, 1 / share))
    key = (k, *ann.search.values())  # unfiltered parameters are reused: ~10 us a query
    if key not in ann.cached:
        if len(ann.cached) > 64:
            ann.cached.clear()
        ann.cached[key] = _ann_params(ann, k, None, 1.0)
    return ann.index.search(queries, k, params=ann.cached[key])


def _ann_params(ann: _Ann, k: int, selector, widen: float) -> faiss.SearchParameters:
    if ann.type == "hnsw":
        ef = ann.search["efSearch"]
        ef = max(ef, math.ceil(ef * k / TUNING_K), 2 * k if selector else k)
        return faiss.SearchParametersHNSW(efSearch=min(math.ceil(ef * widen), 1 << 14),
                                          sel=selector)
    ivf_params = faiss.SearchParametersIVF(
        nprobe=min(ann.base.nlist, math.ceil(ann.search["nprobe"] * widen)), sel=selector)
    # at least as many candidates as tuning had for k=10: a top-1 re-scores as many as a top-10
    k_factor = math.ceil(ann.search["k_factor"] * max(k, TUNING_K) / k)
    # faiss's Python wrapper keeps ivf_params (and the selector) alive with the outer object
    return faiss.IndexRefineSearchParameters(k_factor=k_factor, base_index_params=ivf_params)


def _tune(ann: _Ann, inner: faiss.Index, target: float, kind: str,
          given: np.ndarray | None = None) -> dict:
    """Set ann.search to the cheapest setting whose recall@10 reaches `target` on every set
    of _tuning_queries (indexers/tuning.py); returns what was measured.

    HNSW: the smallest efSearch. IVFPQ: the smallest nprobe with the largest refine factor,
    then the smallest refine factor (from the `refine_factor` option, doubling to 64) at it.
    """
    k = min(TUNING_K, inner.ntotal - 1)
    if k < 1:  # a single vector: nothing to tune
        return {"search": dict(ann.search), "recall_at_10": 1.0, "tuning_queries": 0}
    query_sets = _tuning_queries(inner, given)

    def top(search, queries, own):
        """(scores, positions) (S, k); a stored vector's own position left out."""
        if own is None:
            return search(queries, k)
        scores, found = search(queries, k + 1)
        keep = np.argsort(found == own[:, None], axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, keep, axis=1), np.take_along_axis(found, keep, axis=1)

    floors = {name: score_floors(top(inner.search, queries, own)[0])
              for name, (queries, own) in query_sets.items()}

    def recalls_with(name: str, value: int) -> dict[str, float]:
        ann.search[name] = value
        recalls = {}
        for set_name, (queries, own) in query_sets.items():
            scores, found = top(lambda q, depth: _ann_search(ann, q, depth), queries, own)
            recalls[set_name] = recall(np.where(found >= 0, scores, -np.inf), floors[set_name])
        return recalls

    def smallest(name: str, grid: tuple[int, ...]) -> dict[str, float]:
        value, recalls = smallest_setting(grid, lambda value: recalls_with(name, value), target)
        ann.search[name] = value
        return recalls

    if ann.type == "hnsw":
        recalls = smallest("efSearch", EF_SEARCH_GRID)
    else:
        nlist, first = ann.base.nlist, ann.search["k_factor"]
        most = max(first, MAX_REFINE_FACTOR)
        ann.search["k_factor"] = most
        smallest("nprobe", (*(2 ** i for i in range(nlist.bit_length()) if 2 ** i < nlist), nlist))
        recalls = smallest("k_factor", (*(first * 2 ** i for i in range(most.bit_length())
                                          if first * 2 ** i < most), most))
    if min(recalls.values()) < target:
        log.warning("FAISS kind %r: the widest search tried (%s) reaches recall@10 %s, below "
                    "the target %.3f", kind, ann.search,
                    ", ".join(f"{value:.3f} ({name})" for name, value in recalls.items()), target)
    return {"search": dict(ann.search), "recall_at_10": round(min(recalls.values()), 4),
            "recall_at_10_by_queries": {name: round(value, 4) for name, value in recalls.items()},
            "tuning_queries": sum(len(queries) for queries, _ in query_sets.values())}


def _tuning_queries(inner: faiss.Index, given: np.ndarray | None = None) -> QuerySets:
    """Up to TUNING_QUERIES unit queries. With enough `given` real queries: "given", up to
    2/3 of TUNING_QUERIES of them, and "self" (stored vectors, each with its own position
    left out of its results). Without, "near", "far" and "self" thirds made from stored
    vectors (indexers/tuning.py)."""
    n, rng = inner.ntotal, np.random.default_rng(0)
    if enough_given(given):
        chosen = sample_rows(given, 2 * TUNING_QUERIES // 3, rng)
        own = np.sort(rng.choice(n, min(TUNING_QUERIES - len(chosen), n), replace=False))
        return {"given": (np.ascontiguousarray(chosen, dtype=np.float32), None),
                "self": (_vectors(inner)[own].astype(np.float32), own)}
    picked = np.sort(rng.choice(n, min(TUNING_QUERIES, n), replace=False))
    origins = _vectors(inner)[picked].astype(np.float32)  # (S, dim)

    def nearest_cosine(rows: np.ndarray) -> np.ndarray:
        # the second result of an exact search from the vector itself: its nearest other
        return inner.search(origins[rows], 2)[0][:, 1]

    return synthetic_sets(origins, nearest_cosine, rng, own=picked)


def _write_atomically(index: faiss.Index, target: Path, flags: int = 0) -> None:
    """Write beside the target, flush to disk, then rename: a crash leaves the old file or
    the new one, never half of one."""
    temp = target.with_name(f".{target.name}.tmp")  # no SUFFIX at the end, so never loaded
    try:
        if flags:
            faiss.write_index(index, str(temp), flags)
        else:
            faiss.write_index(index, str(temp))
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _write_json_atomically(data: dict, target: Path) -> None:
    temp = target.with_name(f".{target.name}.tmp")
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextmanager
def _one_thread_if(single_query: bool):
    """One OpenMP thread for single-query searches: PERF.md measured it fastest, since waking
    the thread team costs more than the scan it splits. Batches keep every thread.

    omp_set_num_threads is process-wide, so concurrent callers on other threads may briefly
    run with one thread; that costs speed, never correctness.
    """
    if not single_query:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)

"""Exact inner-product search with FAISS: one IndexIDMap2(IndexFlatIP) file per kind.

Vectors are L2-normalised by the encoder, so inner product is cosine similarity. Exact search
is the default because PERF.md shows it is fast enough to ~100k vectors per kind (7 ms per
query) and approximate indexes lose recall on data unlike CLIP embeddings.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from indexers.base import VectorIndex, VectorIndexError, register_backend
from indexers.checks import check_add, check_allowed, check_kind, check_queries, padding

# open_index imports every backend, so a missing faiss must not break the Qdrant one:
# the error comes when a FAISS index is opened.
try:
    import faiss
except ImportError:  # pragma: no cover - exercised only where faiss is absent
    faiss = None

log = logging.getLogger(__name__)

SUFFIX = ".index"


@register_backend("faiss")
class FaissIndex(VectorIndex):
    """FAISS indexes under `<path>/faiss/<kind>.index`, loaded whole into memory.

    Adds live in memory until save(), which replaces each changed file atomically.
    """

    def __init__(self, path: Path, dim: int):
        if faiss is None:
            raise VectorIndexError("the FAISS backend needs faiss: pip install faiss-cpu")
        super().__init__(path, dim)
        self.folder = self.path / "faiss"
        self.indexes: dict[str, faiss.IndexIDMap2] = {}
        # Largest id per kind: record-store row ids only grow, so an add whose ids are all
        # above it cannot replace anything and skips the O(N) removal scan.
        self.max_ids: dict[str, int] = {}
        self.unsaved: set[str] = set()
        for file in sorted(self.folder.glob(f"*{SUFFIX}")):
            self.indexes[file.name[:-len(SUFFIX)]] = self._load(file)
        for kind, index in self.indexes.items():
            self.max_ids[kind] = int(faiss.vector_to_array(index.id_map).max(initial=-1))

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

    def add(self, kind: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        check_kind(kind)
        ids, vectors = check_add(ids, vectors, self.dim)
        if not len(ids):
            return
        index = self.indexes.get(kind)
        if index is None:
            index = self.indexes[kind] = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        if ids.min() <= self.max_ids.get(kind, -1):
            # IndexIDMap2 would keep both copies of a repeated id; replace instead, as
            # Qdrant's upsert does, so the backends agree.
            index.remove_ids(ids)
        index.add_with_ids(vectors, ids)
        self.max_ids[kind] = max(self.max_ids.get(kind, -1), int(ids.max()))
        self.unsaved.add(kind)

    def remove(self, kind: str, ids: np.ndarray) -> None:
        check_kind(kind)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        index = self.indexes.get(kind)
        if index is None or not len(ids):
            return
        if index.remove_ids(ids):
            self.unsaved.add(kind)

    def search(self, kind: str, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = check_queries(queries, self.dim, k)  # (Q, dim)
        allowed = check_allowed(allowed)
        scores, ids = padding(len(queries), k)  # (Q, k) each
        index = self.indexes.get(kind)
        depth = min(k, index.ntotal if index is not None else 0)
        params = None
        if allowed is not None:
            depth = min(depth, len(allowed))
            # the selector must outlive the search call: `params` holds a reference to it
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
        if depth == 0 or not len(queries):
            return scores, ids
        with _one_thread_if(len(queries) == 1):
            found_scores, found_ids = index.search(queries, depth, params=params)
        found_scores[found_ids < 0] = -np.inf  # faiss pads with -FLT_MAX; the contract says -inf
        scores[:, :depth] = found_scores
        ids[:, :depth] = found_ids
        return scores, ids

    def count(self, kind: str) -> int:
        index = self.indexes.get(kind)
        return 0 if index is None else int(index.ntotal)

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for kind in sorted(self.unsaved):
            _write_atomically(self.indexes[kind], self.folder / f"{kind}{SUFFIX}")
        self.unsaved.clear()

    def close(self) -> None:
        if self.unsaved:
            log.warning("closing FAISS index %s with unsaved kinds %s; call save() to keep them",
                        self.folder, sorted(self.unsaved))
        self.indexes.clear()
        self.unsaved.clear()


def _write_atomically(index: faiss.Index, target: Path) -> None:
    """Write beside the target, flush to disk, then rename: a crash leaves the old file or
    the new one, never half of one."""
    temp = target.with_name(f".{target.name}.tmp")  # no SUFFIX at the end, so never loaded
    try:
        faiss.write_index(index, str(temp))
        with open(temp, "rb") as handle:
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

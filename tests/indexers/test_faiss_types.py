"""FAISS index types chosen by size and tuned at save(): what the contract suite cannot see.

3,000 clustered 32-d vectors per kind with auto_threshold=2000 stand in for a large kind, so an
HNSW or IVFPQ build takes about a second.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from indexers.base import VectorIndexError, open_index
from tests.fixtures.vectors import assert_recall, assert_top_k, clustered, make_queries

DIM = 32
LARGE = 3000
SMALL = 1000
THRESHOLD = 2000


@pytest.fixture
def data():
    """kind -> (ids (N,), vectors (N, DIM)): "image" above THRESHOLD, "report" below."""
    rng = np.random.default_rng(11)
    ids = rng.choice(10**9, size=LARGE + SMALL, replace=False).astype(np.int64)
    return {"image": (ids[:LARGE], clustered(rng, LARGE)),
            "report": (ids[LARGE:], clustered(rng, SMALL))}


@pytest.fixture
def opener(tmp_path):
    opened = []

    def open_(**options):
        index = open_index("faiss", tmp_path, DIM, **options)
        opened.append(index)
        return index

    yield open_
    for index in opened:
        index.close()


def build(opener, data, **options):
    index = opener(**options)
    for kind, (ids, vectors) in data.items():
        for start in range(0, len(ids), 700):  # batches, as a build adds them
            index.add(kind, ids[start:start + 700], vectors[start:start + 700])
    index.save()
    return index


def near_queries(vectors, seed, n=40):
    """Near-duplicates of stored vectors: the image-to-similar-case query."""
    rng = np.random.default_rng(seed)
    queries = vectors[rng.choice(len(vectors), n, replace=False)]
    queries = queries + 0.05 * rng.standard_normal(queries.shape)
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def files(tmp_path):
    return sorted(p.name for p in (tmp_path / "faiss").iterdir())


def test_auto_is_flat_below_the_threshold_and_hnsw_above(opener, data, tmp_path):
    index = build(opener, data, auto_threshold=THRESHOLD)
    kinds = index.describe()["kinds"]
    assert kinds["image"]["type"] == "hnsw" and kinds["image"]["n"] == LARGE
    assert kinds["report"] == {"type": "flat", "n": SMALL, "storage": "fp32"}
    # no temp files left; the small kind has its flat file only
    assert files(tmp_path) == ["image.hnsw.index", "image.index", "image.params.json",
                               "report.index"]
    json.dumps(index.describe())  # it goes into the manifest


@pytest.mark.parametrize("index_type", ["hnsw", "ivfpq"])
def test_measured_recall_reaches_the_target(opener, data, index_type):
    index = build(opener, data, index_type=index_type, target_recall=0.95)
    info = index.describe()["kinds"]["image"]
    assert info["type"] == index_type
    assert info["recall_at_10"] >= 0.95
    assert min(info["recall_at_10_by_queries"].values()) == info["recall_at_10"]
    assert info["tuning_queries"] == 1000 and info["build_seconds"] > 0
    assert set(info["search"]) == ({"efSearch"} if index_type == "hnsw" else {"nprobe", "k_factor"})
    ids, vectors = data["image"]
    for queries in (near_queries(vectors, 1), make_queries(vectors, 2, n=40)):
        assert_recall(index.search("image", queries, 10), ids, vectors, queries, 10)


def test_a_higher_target_searches_wider(opener, data, tmp_path):
    low = build(opener, data, index_type="hnsw", target_recall=0.5)
    ef_low = low.describe()["kinds"]["image"]["search"]["efSearch"]
    low.close()
    high = build(opener, data, index_type="hnsw", target_recall=0.999)
    info = high.describe()["kinds"]["image"]
    assert info["search"]["efSearch"] > ef_low == 16
    assert info["recall_at_10"] >= 0.999 or info["search"]["efSearch"] == 512


@pytest.mark.parametrize("index_type", ["hnsw", "ivfpq"])
def test_params_and_results_survive_close_and_reopen(opener, data, index_type):
    index = build(opener, data, index_type=index_type)
    described = index.describe()
    ids, vectors = data["image"]
    queries = make_queries(vectors, 3, n=20)
    before = index.search("image", queries, 10)
    single = index.search("image", queries[:1], 10)
    index.close()
    for options in ({"index_type": index_type}, {}):  # FaissIndex(path, dim) loads them too
        reopened = opener(**options)
        if options:
            assert reopened.describe() == described
        assert reopened.describe()["kinds"]["image"] == described["kinds"]["image"]
        after = reopened.search("image", queries, 10)
        np.testing.assert_array_equal(after[1], before[1])
        np.testing.assert_allclose(after[0], before[0], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(reopened.search("image", queries[:1], 10)[1], single[1])
        reopened.close()


def test_remove_and_update_after_an_hnsw_save(opener, data):
    index = build(opener, data, index_type="hnsw")
    ids, vectors = data["image"]
    gone = ids[:300]
    index.remove("image", gone)
    moved = ids[400]  # an update: the same id with a new vector
    target = -vectors[0]
    index.add("image", np.array([moved]), target[None, :])
    updated = vectors.copy()
    updated[400] = target
    keep = ~np.isin(ids, gone)
    queries = np.vstack([near_queries(vectors, 4), target[None, :]])

    def check(searcher):
        scores, found = searcher.search("image", queries, 10)
        assert not np.isin(found, gone).any(), "a removed id came back"
        assert found[-1, 0] == moved and scores[-1, 0] == pytest.approx(1.0, abs=1e-5)
        return scores, found

    # before save: exact over the changed flat index
    assert_top_k(check(index), ids[keep], updated[keep], queries, 10)
    assert index.describe()["kinds"]["image"]["search"] == "exact: unsaved changes"
    index.save()  # rebuilds HNSW from the changed flat index
    assert index.describe()["kinds"]["image"]["n"] == LARGE - 300
    assert_recall(check(index), ids[keep], updated[keep], queries, 10)
    index.close()
    reopened = opener(index_type="hnsw")
    assert reopened.count("image") == LARGE - 300
    assert "efSearch" in reopened.describe()["kinds"]["image"]["search"]
    assert_recall(check(reopened), ids[keep], updated[keep], queries, 10)


def test_stale_ann_files_fall_back_to_exact_search(opener, data, tmp_path, caplog):
    folder = tmp_path / "faiss"
    index = build(opener, data, index_type="hnsw")
    old_graph = (folder / "image.hnsw.index").read_bytes()
    old_params = (folder / "image.params.json").read_bytes()
    ids, vectors = data["image"]
    gone = ids[:500]
    index.remove("image", gone)
    index.save()
    index.close()
    keep = ~np.isin(ids, gone)
    queries = make_queries(vectors, 5, n=20)

    def reopened_is_exact(reason):
        reopened = opener(index_type="hnsw")
        assert reason in reopened.describe()["kinds"]["image"]["search"]
        assert reason in caplog.text
        assert_top_k(reopened.search("image", queries, 10), ids[keep], vectors[keep], queries, 10)
        return reopened

    # the ANN files of the earlier save, newer than the flat file: built for other ids
    (folder / "image.hnsw.index").write_bytes(old_graph)
    (folder / "image.params.json").write_bytes(old_params)
    reopened_is_exact("built for other ids").close()
    # the ANN file older than the flat one (a crash between writing the two)
    flat_time = (folder / "image.index").stat().st_mtime
    os.utime(folder / "image.hnsw.index", (flat_time - 60, flat_time - 60))
    reopened_is_exact("older than image.index").close()
    # the ANN file gone; a save() then rebuilds it
    (folder / "image.hnsw.index").unlink()
    reopened = reopened_is_exact("is missing")
    reopened.save()
    assert "efSearch" in reopened.describe()["kinds"]["image"]["search"]
    assert (folder / "image.hnsw.index").exists()


@pytest.mark.parametrize("index_type", ["hnsw", "ivfpq"])
def test_filtered_search(opener, data, index_type):
    # a low exact_filter_limit sends large filters to the ANN with a selector
    index = build(opener, data, index_type=index_type, exact_filter_limit=100)
    ids, vectors = data["image"]
    queries = make_queries(vectors, 6, n=20)
    rng = np.random.default_rng(7)
    strangers = data["report"][0][:20]  # ids of another kind never leak in
    for share in (0.5, 0.2):  # through the ANN with a bitmap selector
        allowed = np.concatenate([rng.choice(ids, int(share * LARGE), replace=False), strangers])
        result = index.search("image", queries, 10, allowed)
        assert np.isin(result[1], allowed).all()
        assert_recall(result, ids, vectors, queries, 10, allowed)
        single = index.search("image", queries[:1], 10, allowed)
        assert_recall(single, ids, vectors, queries[:1], 10, allowed)
    for size in (150, 60, 4):  # a flat scan with the selector (5%), exact gather, padding
        allowed = rng.choice(ids, size, replace=False)
        assert_top_k(index.search("image", queries, 10, allowed), ids, vectors, queries, 10,
                     allowed)


def test_fp16_storage_halves_the_flat_file(opener, data, tmp_path):
    index = build(opener, data, index_type="hnsw")
    full_size = (tmp_path / "faiss" / "image.index").stat().st_size
    index.close()
    half = opener(index_type="hnsw", storage="fp16")  # a saved fp32 kind converts at save()
    half.save()
    assert (tmp_path / "faiss" / "image.index").stat().st_size < 0.6 * full_size
    info = half.describe()["kinds"]["image"]
    assert info["storage"] == "fp16" and info["recall_at_10"] >= 0.95
    ids, vectors = data["image"]
    queries = near_queries(vectors, 8)
    scores, found = half.search("image", queries, 10)
    position = {int(i): p for p, i in enumerate(ids)}
    true = np.take_along_axis(queries @ vectors.T, np.vectorize(position.get)(found), axis=1)
    np.testing.assert_allclose(scores, true, rtol=0, atol=2e-3)  # fp16 rounding
    half.close()
    reopened = opener(storage="fp16")
    assert reopened.describe()["kinds"]["image"]["storage"] == "fp16"
    np.testing.assert_array_equal(reopened.search("image", queries, 10)[1], found)


def test_index_type_flat_ignores_and_then_drops_saved_ann_files(opener, data, tmp_path):
    build(opener, data, index_type="hnsw").close()
    exact = opener(index_type="flat")
    assert exact.describe()["kinds"]["image"]["type"] == "flat"
    ids, vectors = data["image"]
    queries = make_queries(vectors, 9, n=20)
    assert_top_k(exact.search("image", queries, 10), ids, vectors, queries, 10)
    exact.save()
    assert files(tmp_path) == ["image.index", "report.index"]


def test_ivfpq_kind_too_small_stays_flat(opener):
    index = opener(index_type="ivfpq")
    index.add("image", np.arange(100), clustered(np.random.default_rng(0), 100))
    index.save()
    assert index.describe()["kinds"]["image"]["type"] == "flat"


@pytest.mark.parametrize("options, message", [
    ({"index_tpye": "hnsw"}, "unknown FAISS option.*index_tpye.*known options: index_type"),
    ({"index_type": "annoy"}, "index_type 'annoy'"),
    ({"target_recall": 1.5}, "target_recall"),
    ({"hnsw_m": 0}, "hnsw_m"),
    ({"pq_m": 5}, "pq_m=5 must divide"),
    ({"storage": "int8"}, "storage 'int8'"),
])
def test_bad_options_raise(tmp_path, options, message):
    with pytest.raises(VectorIndexError, match=message):
        open_index("faiss", tmp_path, DIM, **options)


def test_given_queries_replace_the_synthetic_tuning_sets(opener, data):
    ids, vectors = data["image"]
    index = opener(index_type="hnsw", target_recall=0.95)
    index.add("image", ids, vectors)
    given = make_queries(vectors, 3, n=300)  # fresh points: what a build hands over
    index.set_tuning_queries("image", given)
    index.save()
    info = index.describe()["kinds"]["image"]
    assert set(info["recall_at_10_by_queries"]) == {"given", "self"}
    assert info["recall_at_10"] >= 0.95 and info["tuning_queries"] == 1000
    assert_recall(index.search("image", make_queries(vectors, 4, n=40), 10), ids, vectors,
                  make_queries(vectors, 4, n=40), 10)

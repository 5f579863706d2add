"""The Qdrant backend's engines: qdrant-edge with an HNSW graph (the contract suite only reaches
its exact mode), the qdrant-client fallback, and the server path against a stand-in server.

The HNSW index is built once per module (30k x 32-d, ~5 s) and closed; every test that uses it
copies the closed folder into its own tmp_path first, as the incremental builder does, so no
test sees another's changes.
"""
from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest

from indexers import qdrant_edge, qdrant_index
from indexers.base import VectorIndexError, open_index
from rag.building import copy_index_folder
from indexers.qdrant_index import QdrantOptions, collection_settings, public_url, server_prefix
from tests.fixtures.vectors import DIM, assert_top_k, clustered, fill, make_corpus, make_queries

BIG = 30_000  # over exact_below (20k): save() builds HNSW and tunes hnsw_ef
SMALL = 2_000
TARGET = 0.95  # what the tests ask of recall@10 on their own 100 queries
# save() tunes to a little more: both its 400 tuning queries and the tests' 100 are samples
# (each recall figure is +-0.01-0.02), and its queries are only like the tests'.
TUNED = 0.97
# A low full-scan threshold (KB of vectors, 128 B each at 32-d) so that large `allowed` sets
# take the filtered HNSW path instead of the engine's exact scan of the allowed points.
EDGE = {"engine": "edge", "full_scan_threshold_kb": 64, "target_recall": TUNED}


def data(seed: int, n: int, queries: int, clusters: int = 16):
    """(vectors (n, DIM), queries (queries, DIM)) around the same centres: half the queries
    near-duplicates of stored vectors, half fresh points of the same clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM))

    def around(count: int, noise: float) -> np.ndarray:
        points = centres[rng.integers(clusters, size=count)] + noise * rng.standard_normal(
            (count, DIM))
        return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)

    vectors = around(n, 0.4)
    near = vectors[rng.choice(n, queries // 2, replace=False)] + 0.05 * rng.standard_normal(
        (queries // 2, DIM))
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    return vectors, np.vstack([near.astype(np.float32), around(queries - queries // 2, 0.4)])


def recall_at(found: np.ndarray, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray,
              k: int, allowed: np.ndarray | None = None) -> float:
    if allowed is not None:
        keep = np.isin(ids, allowed)
        ids, vectors = ids[keep], vectors[keep]
    exact = queries @ vectors.T  # (Q, N)
    truth = ids[np.argsort(-exact, axis=1)[:, :k]]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))


def assert_true_scores(result, ids, vectors, queries) -> None:
    """Every returned score is the inner product of the query with that id's vector."""
    scores, found = result
    position = {int(i): p for p, i in enumerate(ids)}
    for row in range(len(queries)):
        for col in np.nonzero(found[row] >= 0)[0]:
            want = float(queries[row] @ vectors[position[int(found[row, col])]])
            assert abs(scores[row, col] - want) <= 1e-4


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A saved, closed index: "image" BIG points (HNSW), "report" SMALL (exact)."""
    folder = tmp_path_factory.mktemp("edge") / "index"
    rng = np.random.default_rng(1)
    image_vectors, image_queries = data(seed=2, n=BIG, queries=100)
    report_vectors, report_queries = data(seed=3, n=SMALL, queries=20)
    corpus = {"image": (rng.choice(10**12, BIG, replace=False).astype(np.int64), image_vectors),
              "report": (rng.choice(10**12, SMALL, replace=False).astype(np.int64),
                         report_vectors)}
    index = open_index("qdrant", folder, DIM, **EDGE)
    for kind, (ids, vectors) in corpus.items():
        for start in range(0, len(ids), 7_000):
            index.add(kind, ids[start:start + 7_000], vectors[start:start + 7_000])
    started = time.perf_counter()
    index.save()
    save_seconds = time.perf_counter() - started
    queries = {"image": image_queries, "report": report_queries}
    before = {kind: index.search(kind, q, 10) for kind, q in queries.items()}
    described = index.describe()
    index.close()
    return {"folder": folder, "corpus": corpus, "queries": queries, "before": before,
            "described": described, "save_seconds": save_seconds}


@pytest.fixture
def copy(built, tmp_path):
    """open() gives an index on this test's own copy of the built folder; closed at the end."""
    target = tmp_path / "copied"
    copy_index_folder(built["folder"], target)
    opened = []

    def open_(**options):
        index = open_index("qdrant", target, DIM, **{**EDGE, **options})
        opened.append(index)
        return index

    yield open_
    for index in opened:
        index.close()


def test_save_builds_hnsw_for_large_kinds_and_reports_it(built):
    described = built["described"]
    assert described["backend"] == "qdrant" and described["engine"] == "qdrant-edge"
    assert described["engine_version"] == "0.9.0"
    assert described["hnsw"] == {"m": 32, "ef_construct": 100}
    image, report = described["kinds"]["image"], described["kinds"]["report"]
    assert image["search"] == "hnsw" and image["points"] == BIG
    assert image["recall_at_10"] >= TUNED and image["hnsw_ef"] in qdrant_edge.EF_CHOICES
    assert set(image["recall_at_10_by_queries"]) == {"near", "far"}
    assert image["tuning_queries"] == qdrant_edge.TUNE_QUERIES
    assert report == {"search": "exact", "points": SMALL, "why": "under 20000 points"}
    json.dumps(described)  # goes into the manifest
    on_disk = json.loads((built["folder"] / "qdrant" / "edge.json").read_text())
    assert on_disk["dim"] == DIM and on_disk["kinds"]["image"]["hnsw_ef"] == image["hnsw_ef"]
    assert sorted(p.name for p in (built["folder"] / "qdrant").iterdir() if p.is_dir()) == [
        "image", "report"]


def test_hnsw_kind_reaches_the_target_recall_with_true_scores(built):
    ids, vectors = built["corpus"]["image"]
    queries = built["queries"]["image"]
    scores, found = built["before"]["image"]
    assert recall_at(found, ids, vectors, queries, 10) >= TARGET
    assert_true_scores((scores, found), ids, vectors, queries)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_exact_kind_matches_brute_force(built, copy):
    ids, vectors = built["corpus"]["report"]
    queries = built["queries"]["report"]
    index = copy()
    for k in (1, 10, 37):
        assert_top_k(index.search("report", queries, k), ids, vectors, queries, k)
        assert_top_k(index.search("report", queries[:1], k), ids, vectors, queries[:1], k)


def test_closed_folder_copies_and_reopens_with_identical_results(built, copy):
    index = copy()
    for kind, (ids, _) in built["corpus"].items():
        assert index.count(kind) == len(ids)
        scores, found = index.search(kind, built["queries"][kind], 10)
        np.testing.assert_array_equal(found, built["before"][kind][1])
        np.testing.assert_allclose(scores, built["before"][kind][0], rtol=0, atol=1e-6)
    assert index.describe()["kinds"] == built["described"]["kinds"]


def test_hnsw_widens_ef_for_larger_k(built, copy):
    ids, vectors = built["corpus"]["image"]
    queries = built["queries"]["image"]
    index = copy()
    tuned = built["described"]["kinds"]["image"]["hnsw_ef"]
    assert index.engine.search_params("image", k=40).hnsw_ef == 4 * tuned
    scores, found = index.search("image", queries, 40)
    assert recall_at(found, ids, vectors, queries, 40) >= TARGET
    assert_true_scores((scores, found), ids, vectors, queries)


def test_allowed_is_applied_inside_the_engine(built, copy):
    ids, vectors = built["corpus"]["image"]
    queries = built["queries"]["image"]
    index = copy()
    rng = np.random.default_rng(4)
    stranger = built["corpus"]["report"][0][:5]
    # under exact_filter_below (20k) allowed ids: an exact search of them
    for size in (60, 9_000):
        allowed = rng.choice(ids, size, replace=False)
        assert_top_k(index.search("image", queries, 10, np.concatenate([allowed, stranger])),
                     ids, vectors, queries, 10, allowed)
    scores, found = index.search("image", queries, 10, allowed[:3])
    assert (found[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    # more: a filtered HNSW search (with ACORN)
    allowed = rng.choice(ids, 21_000, replace=False)
    scores, found = index.search("image", queries, 10, allowed)
    assert np.isin(found, allowed).all()
    assert recall_at(found, ids, vectors, queries, 10, allowed) >= TARGET
    assert_true_scores((scores, found), ids, vectors, queries)
    assert index.engine.search_params("image", len(allowed)).acorn is not None
    assert (index.search("image", queries, 10, stranger)[1] == -1).all()


def test_remove_and_replace_on_hnsw_survive_save_and_reopen(built, copy):
    ids, vectors = built["corpus"]["image"]
    queries = built["queries"]["image"]
    index = copy()
    _, found = index.search("image", queries, 10)
    # the best hit of every other query, so that answers must change, and 1 % of the rest;
    # recall is measured on the queries whose neighbourhoods were not picked apart
    targeted, measured = queries[::2], queries[1::2]
    gone = np.union1d(found[::2, 0],
                      np.random.default_rng(5).choice(ids, BIG // 100, replace=False))
    index.remove("image", np.concatenate([gone, [7, 123]]))  # unknown ids are ignored
    moved = ids[np.isin(ids, gone, invert=True)][:1]
    index.add("image", moved, -queries[:1])  # now the best match for -queries[0]
    assert index.count("image") == BIG - len(gone)
    updated = vectors.copy()
    updated[np.nonzero(ids == moved[0])[0][0]] = -queries[0]
    keep = np.isin(ids, gone, invert=True)

    def check(opened) -> None:
        _, found = opened.search("image", targeted, 10)
        assert not np.isin(found, gone).any()
        _, found = opened.search("image", measured, 10)
        assert not np.isin(found, gone).any()
        assert recall_at(found, ids[keep], updated[keep], measured, 10) >= TARGET
        scores, found = opened.search("image", -queries[:1], 1)
        assert found[0, 0] == moved[0] and scores[0, 0] == pytest.approx(1.0, abs=1e-5)

    check(index)
    index.save()
    assert index.describe()["kinds"]["image"]["points"] == BIG - len(gone)
    index.close()
    check(copy())


def test_fixed_hnsw_ef_is_used_and_measured(tmp_path):
    vectors, queries = data(seed=5, n=3_000, queries=10)
    index = open_index("qdrant", tmp_path, DIM, exact_below=1_000, hnsw_ef=40)
    index.add("image", np.arange(3_000), vectors)
    index.save()
    described = index.describe()["kinds"]["image"]
    assert described["search"] == "hnsw" and described["hnsw_ef"] == 40
    assert 0 < described["recall_at_10"] <= 1
    assert index.engine.search_params("image").hnsw_ef == 40
    assert recall_at(index.search("image", queries, 10)[1], np.arange(3_000), vectors,
                     queries, 10) >= 0.9
    index.close()


def test_close_without_save_keeps_adds_searched_exactly(tmp_path):
    corpus = make_corpus(seed=3)
    index = open_index("qdrant", tmp_path, DIM)
    fill(index, corpus)
    index.close()
    reopened = open_index("qdrant", tmp_path, DIM)
    ids, vectors = corpus["image"]
    queries = make_queries(vectors, seed=1)
    assert_top_k(reopened.search("image", queries, 10), ids, vectors, queries, 10)
    reopened.close()


def test_client_engine_on_request_and_as_fallback(tmp_path, monkeypatch, caplog):
    # local mode commits every point to SQLite (~10 ms each here): keep this corpus small
    ids = np.arange(40) * 3
    vectors = clustered(np.random.default_rng(4), 40)
    queries = make_queries(vectors, seed=2)
    index = open_index("qdrant", tmp_path / "a", DIM, engine="client")
    index.add("report", ids, vectors)
    assert index.describe()["engine"] == "qdrant-client local mode"
    assert_top_k(index.search("report", queries, 10), ids, vectors, queries, 10)
    index.save()
    index.close()
    assert (tmp_path / "a" / "qdrant" / "meta.json").exists()
    # a folder written by local mode reopens with it, without asking
    reopened = open_index("qdrant", tmp_path / "a", DIM)
    assert reopened.describe()["engine"] == "qdrant-client local mode"
    assert reopened.count("report") == len(ids)
    reopened.close()
    with pytest.raises(VectorIndexError, match="engine='client'"):
        open_index("qdrant", tmp_path / "a", DIM, engine="edge")
    # without qdrant-edge-py: local mode, with a warning that says what to install
    monkeypatch.setattr(qdrant_edge, "edge", None)
    with caplog.at_level(logging.WARNING, logger="indexers.qdrant_index"):
        fallback = open_index("qdrant", tmp_path / "b", DIM)
    assert "pip install qdrant-edge-py" in caplog.text
    assert fallback.describe()["engine"] == "qdrant-client local mode"
    fallback.close()
    with pytest.raises(VectorIndexError, match="pip install qdrant-edge-py"):
        open_index("qdrant", tmp_path / "c", DIM, engine="edge")


def test_edge_folder_refuses_the_client_engine(tmp_path):
    index = open_index("qdrant", tmp_path, DIM)
    index.add("image", np.arange(3), clustered(np.random.default_rng(0), 3))
    index.close()
    with pytest.raises(VectorIndexError, match="qdrant-edge shards"):
        open_index("qdrant", tmp_path, DIM, engine="client")


def test_payloads_are_checked_and_stored(tmp_path):
    index = open_index("qdrant", tmp_path, DIM)
    vectors = clustered(np.random.default_rng(0), 3)
    with pytest.raises(VectorIndexError, match="2 payloads for 3 ids"):
        index.add("image", np.arange(3), vectors, payloads=[{}, {}])
    with pytest.raises(VectorIndexError, match="dict or None"):
        index.add("image", np.arange(3), vectors, payloads=[{}, "x", None])
    assert index.count("image") == 0
    index.add("image", np.arange(3), vectors, payloads=[{"domain": "chest"}, None, {"lang": "zh"}])
    stored = index.engine.shards["image"].retrieve([0, 1, 2], with_payload=True, with_vector=False)
    assert {p.id: p.payload for p in stored} == {0: {"domain": "chest"}, 1: {}, 2: {"lang": "zh"}}
    index.close()


@pytest.mark.parametrize("options, message", [
    ({"hnsw": 3}, "unknown Qdrant option"),
    ({"engine": "server"}, "engine"),
    ({"target_recall": 1.5}, "target_recall"),
    ({"hnsw_m": 0}, "hnsw_m"),
    ({"quantization": "binary"}, "quantization"),
    ({"collection_prefix": "a b"}, "collection_prefix"),
    ({"engine": "edge", "url": "http://127.0.0.1:9"}, "takes no server URL"),
])
def test_bad_options_raise(tmp_path, options, message):
    with pytest.raises(VectorIndexError, match=message):
        open_index("qdrant", tmp_path, DIM, **options)


# -- server mode, without a server -------------------------------------------------------------


def test_collection_settings_for_a_server():
    default = collection_settings(512, QdrantOptions())
    assert set(default) == {"vectors_config", "hnsw_config"}
    vectors = default["vectors_config"]
    assert (vectors.size, vectors.distance.value, vectors.on_disk) == (512, "Dot", True)
    assert (default["hnsw_config"].m, default["hnsw_config"].ef_construct) == (32, 100)
    scaled = collection_settings(512, QdrantOptions(on_disk=False, quantization="scalar",
                                                    shard_number=4, replication_factor=2,
                                                    hnsw_m=16, ef_construction=64))
    assert scaled["vectors_config"].on_disk is False
    scalar = scaled["quantization_config"].scalar
    assert scalar.type.value == "int8" and scalar.always_ram is True
    assert (scaled["shard_number"], scaled["replication_factor"]) == (4, 2)
    assert (scaled["hnsw_config"].m, scaled["hnsw_config"].ef_construct) == (16, 64)


def test_server_prefix_is_chosen_once_and_recorded_without_secrets(tmp_path, caplog):
    first = server_prefix(tmp_path / "My Index", "http://db:6333", None)
    second = server_prefix(tmp_path / "other", "http://db:6333", None)
    assert first.startswith("caselens_my_index_") and len(first) == len("caselens_my_index_") + 6
    assert first != server_prefix(tmp_path / "My Index2", "http://db:6333", None)
    assert second.startswith("caselens_other_")
    recorded = json.loads((tmp_path / "My Index" / "qdrant-server.json").read_text())
    assert recorded == {"url": "http://db:6333", "collection_prefix": first}
    assert server_prefix(tmp_path / "My Index", "http://db:6333", None) == first
    assert server_prefix(tmp_path / "My Index", "http://db:6333", first) == first
    with pytest.raises(VectorIndexError, match="drop the collection_prefix option"):
        server_prefix(tmp_path / "My Index", "http://db:6333", "elsewhere")
    with caplog.at_level(logging.WARNING):
        assert server_prefix(tmp_path / "My Index", "http://moved:6333", None) == first
    assert "http://moved:6333" in caplog.text
    assert server_prefix(tmp_path / "chosen", "http://db:6333", "team_a") == "team_a"
    assert public_url("https://user:secret@db.example:6333/qdrant?api-key=k") == (
        "https://db.example:6333/qdrant")


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_unreachable_server_fails_fast_naming_the_url_not_the_key(tmp_path):
    started = time.perf_counter()
    with pytest.raises(VectorIndexError, match="127.0.0.1:9") as raised:
        open_index("qdrant", tmp_path, DIM, url="http://127.0.0.1:9", api_key="opt-key-456")
    assert time.perf_counter() - started < 10
    assert "opt-key-456" not in str(raised.value)
    assert not (tmp_path / "qdrant-server.json").exists()  # nothing recorded for a failed open


class StandInServer:
    """qdrant-client's in-memory engine behind the server code path: QdrantClient(url=...,
    api_key=...) connects to it, every connection sees the same collections, and the
    create_collection / create_payload_index calls are recorded."""

    def __init__(self):
        self.memory = qdrant_index.QdrantClient(location=":memory:")
        self.connections, self.created, self.payload_indexes = [], {}, []

    def __call__(self, url=None, api_key=None, **_):
        self.connections.append((url, api_key))
        return self

    def create_collection(self, name, **settings):
        self.created[name] = settings
        return self.memory.create_collection(name, **settings)

    def create_payload_index(self, name, field, field_schema=None, wait=True):
        self.payload_indexes.append((name, field, field_schema.value))

    def close(self):  # a connection closes; the server keeps its data
        pass

    def __getattr__(self, name):
        return getattr(self.memory, name)


def test_server_path_with_a_stand_in_server(tmp_path, monkeypatch, caplog):
    server = StandInServer()
    monkeypatch.setattr(qdrant_index, "QdrantClient", server)
    given = {"url": "http://db.example:6333", "api_key": "s3cret-key"}
    corpus = make_corpus(seed=6)
    ids, vectors = corpus["image"]
    queries = make_queries(vectors, seed=3)
    caplog.set_level(logging.DEBUG)
    first = open_index("qdrant", tmp_path / "one", DIM, quantization="scalar", **given)
    other = open_index("qdrant", tmp_path / "two", DIM, **given)
    assert server.connections[0] == ("http://db.example:6333", "s3cret-key")
    first.add("image", ids, vectors, payloads=[{"kind": "image", "domain": "chest"}] * len(ids))
    other.add("image", ids[:5], vectors[:5])
    assert (first.count("image"), other.count("image")) == (len(ids), 5)  # no shared collections
    assert_top_k(first.search("image", queries, 10), ids, vectors, queries, 10)
    prefix = json.loads((tmp_path / "one" / "qdrant-server.json").read_text())["collection_prefix"]
    name = f"{prefix}_image"
    assert prefix.startswith("caselens_one_") and name in server.created
    assert server.created[name]["vectors_config"].on_disk is True
    assert "quantization_config" in server.created[name]
    assert sorted(f for n, f, schema in server.payload_indexes if n == name) == sorted(
        qdrant_index.PAYLOAD_FIELDS)
    assert server.retrieve(name, [int(ids[0])], with_payload=True)[0].payload == {
        "kind": "image", "domain": "chest"}
    described = first.describe()
    assert described["engine"] == "qdrant server" and described["url"] == "http://db.example:6333"
    assert described["collection_prefix"] == prefix
    assert described["collections"]["image"] == {"collection": name, "points": len(ids)}
    first.close()
    other.close()
    reopened = open_index("qdrant", tmp_path / "one", DIM, quantization="scalar", **given)
    assert reopened.count("image") == len(ids) and reopened.count("report") == 0
    reopened.remove("image", ids[:10])
    assert reopened.count("image") == len(ids) - 10
    reopened.close()
    everything = json.dumps(described) + caplog.text + "".join(
        p.read_text() for p in tmp_path.rglob("qdrant-server.json"))
    assert "s3cret-key" not in everything


def test_given_queries_are_what_hnsw_ef_is_tuned_on(tmp_path):
    vectors, queries = data(seed=6, n=3_000, queries=200)
    index = open_index("qdrant", tmp_path, DIM, exact_below=1_000)
    index.add("image", np.arange(3_000), vectors)
    index.set_tuning_queries("image", queries[:150])
    index.save()
    described = index.describe()["kinds"]["image"]
    assert set(described["recall_at_10_by_queries"]) == {"given"}
    assert described["tuning_queries"] == 150 and described["recall_at_10"] >= 0.95
    assert recall_at(index.search("image", queries[150:], 10)[1], np.arange(3_000), vectors,
                     queries[150:], 10) >= 0.9
    index.close()

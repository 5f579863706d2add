"""What one backend does that the contract suite cannot express: files, locks, servers."""
from __future__ import annotations

import numpy as np
import pytest

from indexers import faiss_index, qdrant_index
from indexers.base import BACKENDS, VectorIndexError, open_index
from indexers.qdrant_index import QdrantIndex

DIM = 8


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_factory_knows_both_backends_and_rejects_others(tmp_path):
    with pytest.raises(VectorIndexError, match="faiss"):
        open_index("annoy", tmp_path, DIM)
    assert {"faiss", "qdrant"} <= set(BACKENDS)


def test_faiss_save_writes_one_file_per_kind_and_no_temp_files(tmp_path):
    index = open_index("faiss", tmp_path, DIM)
    index.add("image", np.arange(5), unit_vectors(5))
    index.add("report", np.arange(3), unit_vectors(3, seed=1))
    index.save()
    index.save()  # nothing changed: nothing rewritten, nothing broken
    index.close()
    assert sorted(p.name for p in (tmp_path / "faiss").iterdir()) == ["image.index", "report.index"]


def test_faiss_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    index = open_index("faiss", tmp_path, DIM)
    index.add("image", np.arange(5), unit_vectors(5))
    index.save()
    before = (tmp_path / "faiss" / "image.index").read_bytes()
    index.add("image", np.arange(5, 9), unit_vectors(4, seed=2))

    def crash(_index, name):  # a crash halfway through writing the temp file
        with open(name, "wb") as handle:
            handle.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(faiss_index.faiss, "write_index", crash)
    with pytest.raises(OSError):
        index.save()
    monkeypatch.undo()
    assert (tmp_path / "faiss" / "image.index").read_bytes() == before
    assert [p.name for p in (tmp_path / "faiss").iterdir()] == ["image.index"]
    reopened = open_index("faiss", tmp_path, DIM)
    assert reopened.count("image") == 5
    reopened.close()


def test_faiss_unreadable_file_is_a_clear_error(tmp_path):
    (tmp_path / "faiss").mkdir()
    (tmp_path / "faiss" / "image.index").write_bytes(b"not an index")
    with pytest.raises(VectorIndexError, match="cli.py index"):
        open_index("faiss", tmp_path, DIM)


def test_missing_faiss_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(faiss_index, "faiss", None)
    with pytest.raises(VectorIndexError, match="pip install faiss-cpu"):
        open_index("faiss", tmp_path, DIM)


def test_missing_qdrant_client_names_the_package(tmp_path, monkeypatch):
    # The embedded default (qdrant-edge) needs no qdrant-client; local mode and servers do.
    monkeypatch.setattr(qdrant_index, "QdrantClient", None)
    with pytest.raises(VectorIndexError, match="pip install qdrant-client"):
        open_index("qdrant", tmp_path, DIM, engine="client")


def test_qdrant_folder_is_locked_until_close(tmp_path):
    first = open_index("qdrant", tmp_path, DIM)
    first.add("image", np.arange(4), unit_vectors(4))
    with pytest.raises(VectorIndexError, match="close it first"):
        open_index("qdrant", tmp_path, DIM)
    first.close()  # no save(): local mode has already written every add
    second = open_index("qdrant", tmp_path, DIM)
    assert second.count("image") == 4
    second.close()


def test_qdrant_unreachable_server_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CASELENS_QDRANT_URL", "http://db.example:6333")  # not read down here
    open_index("qdrant", tmp_path / "embedded", DIM).close()
    with pytest.raises(VectorIndexError, match="127.0.0.1:9"):  # discard port: refused
        open_index("qdrant", tmp_path, DIM, url="http://127.0.0.1:9")
    with pytest.raises(VectorIndexError, match="unset CASELENS_QDRANT_URL"):
        QdrantIndex(tmp_path, DIM, url="http://127.0.0.1:9")

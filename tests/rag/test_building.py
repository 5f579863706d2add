"""Index builds: streamed reading, incremental updates, and a crash that loses nothing."""
import json
import shutil
from collections.abc import Iterator

import pytest

from corpora.base import READERS, CorpusReader
from indexers.base import VectorIndexError, open_index
from rag import pipeline
from rag.building import build_index
from rag.encoders.base import create_encoder
from rag.settings import Settings
from rag.store import RecordStore
from rag.types import Problem, Query, Record
from tests.fixtures.tiny_corpus import make_corpus


def manifest_lines(corpus):
    path = corpus / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_lines(corpus, lines):
    (corpus / "manifest.jsonl").write_text(
        "\n".join(json.dumps(line, ensure_ascii=False) for line in lines), encoding="utf-8")


def consistent(index_dir):
    """Every backend holds exactly the store's row ids, per kind."""
    manifest = json.loads((index_dir / "manifest.json").read_text())
    store = RecordStore(index_dir / "records.sqlite", readonly=True)
    try:
        for backend in manifest["backends"]:
            vectors = open_index(backend, index_dir, manifest["encoder"]["dim"])
            try:
                for kind in ("image", "report"):
                    assert vectors.count(kind) == len(store.ids_where(kind)), (backend, kind)
            finally:
                vectors.close()
        return len(store)
    finally:
        store.close()


@pytest.fixture
def first(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", n_per_class=3)
    summary = pipeline.index(corpus, tmp_path / "index", encoder="tiny")
    return corpus, tmp_path / "index", summary


def test_first_build_adds_everything(first):
    _, index_dir, summary = first
    assert not summary.incremental
    assert summary.changes == {"added": 27, "updated": 0, "removed": 0, "unchanged": 0}
    assert consistent(index_dir) == 27


def test_rerun_on_a_grown_and_edited_corpus_encodes_only_the_changes(first):
    corpus, index_dir, _ = first
    lines = manifest_lines(corpus)
    edited = next(i for i, line in enumerate(lines) if line.get("image"))
    lines[edited]["text"] = "Findings: Right lower lobe nodule."
    removed = next(i for i, line in enumerate(lines) if line.get("lang") == "zh")
    del lines[removed]
    lines.append({"text": "Small left apical pneumothorax.", "lang": "en", "study": "new",
                  "modality": "xray", "domain": "chest-xray"})
    write_lines(corpus, lines)
    summary = pipeline.index(corpus, index_dir, encoder="tiny")
    assert summary.incremental
    assert summary.changes == {"added": 1, "updated": 1, "removed": 1, "unchanged": 25}
    assert consistent(index_dir) == 27
    session = pipeline.open_session(index_dir)
    try:
        hits = pipeline.search(session, Query(text="right lower lobe nodule", to=("report",)))
        assert hits[0].record.text == "Findings: Right lower lobe nodule."
        texts = [h.record.text for h in pipeline.search(
            session, Query(text="apical pneumothorax", to=("report",), k=3))]
        assert "Small left apical pneumothorax." in texts
    finally:
        session.close()


def test_rebuild_flag_and_another_encoder_start_from_scratch(first):
    corpus, index_dir, _ = first
    summary = pipeline.index(corpus, index_dir, encoder="tiny", rebuild=True)
    assert not summary.incremental and summary.changes["added"] == 27
    manifest = json.loads((index_dir / "manifest.json").read_text())
    manifest["encoder"]["fingerprint"] = "something-else"
    (index_dir / "manifest.json").write_text(json.dumps(manifest))
    summary = pipeline.index(corpus, index_dir, encoder="tiny")
    assert not summary.incremental and summary.changes["unchanged"] == 0


def test_a_crash_during_an_update_leaves_the_old_index_whole(first, monkeypatch):
    corpus, index_dir, _ = first
    before = (index_dir / "records.sqlite").read_bytes()
    lines = manifest_lines(corpus)
    lines += [{"text": f"Finding number {i}.", "lang": "en", "study": f"x{i}"} for i in range(40)]
    write_lines(corpus, lines)
    encoder = create_encoder("tiny")
    calls = {"n": 0}
    real = encoder.encode_texts

    def failing(texts):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("power cut")
        return real(texts)

    monkeypatch.setattr(encoder, "encode_texts", failing)
    with pytest.raises(RuntimeError, match="power cut"):
        build_index(corpus, index_dir, encoder, "tiny", batch_size=8)
    assert (index_dir / "records.sqlite").read_bytes() == before
    assert consistent(index_dir) == 27
    assert not (index_dir.parent / ".index.building").exists()
    monkeypatch.setattr(encoder, "encode_texts", real)
    summary = build_index(corpus, index_dir, encoder, "tiny", batch_size=8)
    assert summary.changes["added"] == 40 and consistent(index_dir) == 67


class _Endless(CorpusReader):
    """A reader that checks, as it yields, how far ahead of the encoder the build reads."""

    name = "endless"
    produced = 0
    encoded = 0
    worst = 0

    @classmethod
    def detect(cls, root):
        return False

    def read(self) -> Iterator[Record | Problem]:
        for i in range(600):
            cls = type(self)
            cls.produced += 1
            cls.worst = max(cls.worst, cls.produced - cls.encoded)
            yield Record(f"endless:{i}", "report", lang="en", text=f"report number {i}")


def test_reading_is_streamed_not_collected_first(tmp_path, monkeypatch):
    monkeypatch.setitem(READERS, "endless", _Endless)
    (tmp_path / "corpus").mkdir()
    encoder = create_encoder("tiny")
    real = encoder.encode_texts

    def counting(texts):
        _Endless.encoded += len(texts)
        return real(texts)

    monkeypatch.setattr(encoder, "encode_texts", counting)
    summary = build_index(tmp_path / "corpus", tmp_path / "index", encoder, "tiny",
                          backends=("faiss",), fmt="endless", batch_size=16)
    assert summary.changes["added"] == 600
    assert _Endless.worst <= 17  # never more than one batch held before it is encoded


def test_grown_corpus_copied_elsewhere_is_built_from_scratch(first, tmp_path):
    corpus, index_dir, _ = first
    moved = tmp_path / "moved"
    shutil.copytree(corpus, moved)
    summary = pipeline.index(moved, index_dir, encoder="tiny")
    assert not summary.incremental and summary.changes["added"] == 27


def test_delete_by_filter_and_id_then_reindex_brings_them_back(first):
    corpus, index_dir, _ = first
    assert pipeline.delete(index_dir, filters={"lang": "zh"}) == 9
    assert consistent(index_dir) == 18
    with pipeline.open_index(index_dir) as index:
        hits = index.search(text="胸腔积液", to="reports", k=5)
        assert hits and all(h.record.lang != "zh" for h in hits)
        victim = hits[0].record.id
    assert pipeline.delete(index_dir, ids=(victim,)) == 1
    assert consistent(index_dir) == 17
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert sum(sum(d.values()) for d in manifest["counts"].values()) == 17
    summary = pipeline.index(corpus, index_dir, encoder="tiny")
    assert summary.changes["added"] == 10 and consistent(index_dir) == 27
    with pytest.raises(ValueError, match="say what to delete"):
        pipeline.delete(index_dir)


def test_the_qdrant_server_variable_is_read_by_the_pipeline_not_the_builder(tmp_path, monkeypatch):
    """CASELENS_QDRANT_URL reaches the Qdrant backend through rag.pipeline's settings; the
    builder below it uses only the settings it is given."""
    corpus = make_corpus(tmp_path / "corpus", n_per_class=2, bad_image=False)
    monkeypatch.setenv("CASELENS_QDRANT_URL", "http://127.0.0.1:9")  # discard port: refused
    with pytest.raises(VectorIndexError, match="127.0.0.1:9"):
        pipeline.index(corpus, tmp_path / "server", encoder="tiny", backends=("qdrant",))
    summary = build_index(corpus, tmp_path / "embedded", create_encoder("tiny"), "tiny",
                          backends=("qdrant",))
    assert summary.changes["added"] == 18
    manifest = json.loads((tmp_path / "embedded" / "manifest.json").read_text())
    assert manifest["indexes"]["qdrant"]["engine"] == "qdrant-edge"
    with pytest.raises(VectorIndexError, match="127.0.0.1:9"):
        build_index(corpus, tmp_path / "given", create_encoder("tiny"), "tiny",
                    backends=("qdrant",), settings=Settings(qdrant_url="http://127.0.0.1:9"))

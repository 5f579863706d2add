"""The whole path on a seeded synthetic corpus with the tiny encoder: index, search, ask."""
import json

import pytest

from rag import pipeline
from rag.manifest import ManifestError
from rag.types import Query
from tests.fixtures.tiny_corpus import make_corpus


@pytest.fixture
def built(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    summary = pipeline.index(corpus, tmp_path / "index", encoder="tiny")
    return corpus, tmp_path / "index", summary


def test_index_builds_both_backends_and_reports_the_bad_file(built):
    corpus, index_dir, summary = built
    assert summary.counts["image"]["chest-xray"] == 18
    assert sum(summary.counts["report"].values()) == 36
    assert any("broken.png" in p.path for p in summary.problems)
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["backends"] == ["faiss", "qdrant"]
    assert manifest["encoder"]["config"] == "tiny" and manifest["problems"] >= 1
    assert (index_dir / "faiss" / "image.index").exists() and (index_dir / "qdrant").is_dir()
    assert not list(index_dir.parent.glob(".index.*"))  # no work folder left behind


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_image_query_finds_its_own_image_first_and_brings_the_report(built, backend):
    corpus, index_dir, _ = built
    session = pipeline.open_session(index_dir, backend=backend)
    try:
        hits = pipeline.search(session, Query(image=str(corpus / "img/c1_2.png"), to=("image",)))
        assert hits[0].record.image == "img/c1_2.png" and hits[0].score > 0.99
        assert hits[0].backend == backend
        assert {r.lang for r in hits[0].linked} == {"en", "zh"}
        text_hits = pipeline.search(session, Query(text="consolidation", to=("report",), k=3,
                                                   filters={"lang": "en"}))
        assert text_hits and all(h.record.lang == "en" for h in text_hits)
        assert "consolidation" in text_hits[0].record.text
    finally:
        session.close()


def test_ask_writes_cited_chinese_report(built):
    corpus, index_dir, _ = built
    session = pipeline.open_session(index_dir)
    try:
        answer = pipeline.ask(session, Query(image=str(corpus / "img/c0_1.png"), lang="zh"), "zh")
    finally:
        session.close()
    ids = {h.record.id for h in answer.hits} | {r.id for h in answer.hits for r in h.linked}
    sentences = answer.report.sections["findings"]
    assert sentences and all(s.cites and set(s.cites) <= ids for s in sentences)
    assert any("胸腔积液" in s.text for s in sentences)
    json.dumps(answer.to_dict(), ensure_ascii=False)


def test_index_built_with_another_encoder_is_refused(built, tmp_path):
    _, index_dir, _ = built
    manifest = json.loads((index_dir / "manifest.json").read_text())
    manifest["encoder"]["fingerprint"] = "someone-else@0000"
    (index_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="rebuild the index"):
        pipeline.open_session(index_dir)


def test_failed_rebuild_keeps_the_old_index(built, tmp_path):
    _, index_dir, _ = built
    before = (index_dir / "manifest.json").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="empty"):
        pipeline.index(empty, index_dir, encoder="tiny")
    assert (index_dir / "manifest.json").read_text() == before


def test_crashed_build_resumes_without_encoding_again(tmp_path, monkeypatch):
    from rag.encoders.towers import TowersEncoder

    corpus = make_corpus(tmp_path / "corpus")  # 18 good images + 1 broken, batches of 8
    real = TowersEncoder.encode_images
    encoded = []

    def crash_on_second_batch(self, images):
        if len(encoded) == 1:
            raise KeyboardInterrupt("simulated crash")
        encoded.append(len(images))
        return real(self, images)

    monkeypatch.setattr(TowersEncoder, "encode_images", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        pipeline.index(corpus, tmp_path / "index", encoder="tiny", batch_size=8)
    assert not (tmp_path / "index").exists() and encoded == [8]
    assert list((tmp_path / ".index.resume").rglob("*.npz"))  # the first batch survived

    monkeypatch.setattr(TowersEncoder, "encode_images",
                        lambda self, images: encoded.append(len(images)) or real(self, images))
    summary = pipeline.index(corpus, tmp_path / "index", encoder="tiny", batch_size=8)
    assert encoded == [8, 8, 2]  # only the two missing batches were encoded
    assert summary.counts["image"]["chest-xray"] == 18
    assert any("broken.png" in p.path for p in summary.problems)
    assert not (tmp_path / ".index.resume").exists()

"""The sentence-level translation memory (generator/translation_memory.py)."""
import json

import pytest

from generator.translation_memory import (TranslationMemory, align, bilingual_pairs, build,
                                          lookup, sentence_key)
from rag.encoders.backbones import TEXT_BACKBONES
from rag.types import Record


@pytest.fixture(scope="module")
def embed():
    return TEXT_BACKBONES["hash-bag"]()


def _report(rid, lang, text, study="s1", source="cov-ctr"):
    return Record(rid, "report", "ct", "chest", "chest-ct", lang, text, study=study,
                  source=source, meta={"sections": {"findings": text}})


def test_same_sentence_count_aligns_by_position():
    pairs = align("The thorax was symmetrical. No pleural effusion was seen.",
                  "胸廓对称。双侧胸腔未见积液。")
    assert pairs == [("The thorax was symmetrical.", "胸廓对称。"),
                     ("No pleural effusion was seen.", "双侧胸腔未见积液。")]


def test_different_counts_align_greedily_without_crossing(embed):
    pairs = align("The thorax was symmetrical. Ground glass opacity in the right upper lobe. "
                  "No pleural effusion.", "胸廓对称。右肺上叶见磨玻璃影。", embed, floor=-1.0)
    assert len(pairs) == 2
    english = [e for e, _ in pairs]
    assert english == sorted(english, key=["The thorax was symmetrical.",
                                           "Ground glass opacity in the right upper lobe.",
                                           "No pleural effusion."].index)
    assert all(z in ("胸廓对称。", "右肺上叶见磨玻璃影。") for _, z in pairs)


def test_pairs_with_a_placeholder_are_not_kept():
    assert align("XXXX are intact. Lungs clear.", "XXXX完整。肺部清晰。") == [
        ("Lungs clear.", "肺部清晰。")]


def test_bilingual_pairs_come_from_studies_with_both_languages():
    records = [_report("a-en", "en", "Lungs clear."), _report("a-zh", "zh", "肺部清晰。"),
               _report("b-en", "en", "Heart normal.", study="s2")]
    assert list(bilingual_pairs(records)) == [("Lungs clear.", "肺部清晰。", "cov-ctr")]


def test_exact_and_near_matches_and_what_a_near_match_must_share(tmp_path, embed):
    memory_path = tmp_path / "tm.sqlite"
    records = [_report("a-en", "en", "There is a small left pleural effusion. The heart is normal."),
               _report("a-zh", "zh", "左侧少量胸腔积液。心脏正常。")]
    assert build(records, memory_path, embed) == 2
    memory = TranslationMemory(memory_path, readonly=True)
    found = lookup([memory], ["the heart is normal", "There is a small left pleural effusions.",
                              "There is a small right pleural effusion.",
                              "There is no left pleural effusion."], embed, near=0.7)
    assert found[0].kind == "exact" and found[0].zh == "心脏正常。"
    assert found[1] is not None and found[1].kind == "near" and found[1].zh == "左侧少量胸腔积液。"
    assert found[2] is None  # another side is another term
    assert found[3] is None  # another polarity
    memory.close()


def test_rebuilding_with_no_pair_removes_the_memory(tmp_path, embed):
    path = tmp_path / "tm.sqlite"
    build([_report("a-en", "en", "Lungs clear."), _report("a-zh", "zh", "肺部清晰。")], path, embed)
    assert path.exists()
    assert build([_report("a-en", "en", "Lungs clear.")], path, embed) == 0
    assert not path.exists()


def test_the_cache_remembers_a_model_translation_per_model(tmp_path):
    memory = TranslationMemory(tmp_path / "user.sqlite")
    memory.remember("The lungs are clear.", "llm:a", "双肺清晰。")
    assert memory.cached("the lungs are clear", "llm:a") == "双肺清晰。"
    assert memory.cached("The lungs are clear.", "llm:b") is None
    assert sentence_key("  The  lungs are clear. ") == "the lungs are clear"


STUDIES = [("s1", "The lungs are clear. There is no pleural effusion.", "双肺清晰。未见胸腔积液。"),
           ("s2", "The heart is enlarged. No pneumothorax.", "心影增大。未见气胸。")]


def test_index_writes_the_memory_and_an_unchanged_rerun_leaves_it_alone(tmp_path, monkeypatch):
    from generator.translation_memory import INDEX_FILE
    from rag import pipeline
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = [{"text": en, "lang": "en", "study": study}
             for study, en, _ in STUDIES] + [{"text": zh, "lang": "zh", "study": study}
                                            for study, _, zh in STUDIES]
    (corpus / "manifest.jsonl").write_text(
        "\n".join(json.dumps(line, ensure_ascii=False) for line in lines), encoding="utf-8")
    pipeline.index(corpus, tmp_path / "index", encoder="tiny", backends=("faiss",))
    memory = tmp_path / "index" / INDEX_FILE
    assert memory.is_file() and len(TranslationMemory(memory, readonly=True)) > 0
    calls = []
    monkeypatch.setattr(pipeline, "build_translation_memory", lambda d: calls.append(d))
    summary = pipeline.index(corpus, tmp_path / "index", encoder="tiny", backends=("faiss",))
    assert summary.changes["added"] == 0 and calls == []  # nothing to align again
    memory.unlink()  # an index built before memories gets one at its next run
    pipeline.index(corpus, tmp_path / "index", encoder="tiny", backends=("faiss",))
    assert calls == [tmp_path / "index"]

"""The default `auto` generator: grounded, translated when the cases do not speak the language."""
import pytest

from generator.base import GeneratorCrashed, create_generator
from generator.evidence import has_cjk
from generator.translation_memory import TranslationMemory
from rag.encoders.backbones import TEXT_BACKBONES
from rag.types import Hit, Query, Record


def _report(rid, lang, findings, impression):
    return Record(rid, "report", "xray", "chest", "chest-xray", lang,
                  f"Findings: {findings} Impression: {impression}", study=rid,
                  meta={"sections": {"findings": findings, "impression": impression}})


ENGLISH = [_report(f"r{i}", "en", "The lungs are clear. There is no pleural effusion.",
                   "No acute disease.") for i in range(2)]
HITS = [Hit(r, 0.8 - i / 100, i + 1, "faiss", "image->report", cosine=0.8 - i / 100)
        for i, r in enumerate(ENGLISH)]
QUERY = Query(image="x.png", lang="zh")


class FakeLLM:
    """Translates numbered lines from a table; counts its calls."""

    def __init__(self, table, fail=None):
        self.table, self.fail, self.calls = table, fail, 0

    def complete(self, system, user, prefill=""):
        self.calls += 1
        if self.fail:
            raise self.fail
        lines = [line.split(". ", 1) for line in user.splitlines() if line[:1].isdigit()]
        return prefill + "\n".join(f"{n}. {self.table.get(text, text)}" for n, text in lines)[3:], None


@pytest.fixture
def memory(tmp_path):
    path = tmp_path / "user.sqlite"
    memory = TranslationMemory(path)
    memory.add([("The lungs are clear.", "双肺清晰。", "test")], TEXT_BACKBONES["hash-bag"]())
    memory.close()
    return path


def _auto(memory, llm, monkeypatch=None):
    return create_generator("auto", user_memory=memory, llm=llm,
                            embed=TEXT_BACKBONES["hash-bag"]())


def test_memory_first_then_the_model_every_sentence_cited_and_cached(memory):
    llm = FakeLLM({"There is no pleural effusion.": "无胸腔积液。", "No acute disease.": "无急性病变。"})
    report = _auto(memory, llm).generate(HITS, QUERY, "zh")
    texts = [s.text for s in report.sentences()]
    assert texts == ["双肺清晰。", "无胸腔积液。", "无急性病变。"]
    assert all(sorted(s.cites) == ["r0", "r1"] for s in report.sentences())
    assert any("翻译记忆 1 句，语言模型 2 句" in w for w in report.warnings)
    assert not any("--generator llm" in w for w in report.warnings)
    again = FakeLLM({})
    report = _auto(memory, again).generate(HITS, QUERY, "zh")
    assert again.calls == 0 and all(has_cjk(s.text) for s in report.sentences())


def test_english_asked_or_chinese_cases_are_the_grounded_draft(memory):
    llm = FakeLLM({})
    english = _auto(memory, llm).generate(HITS, Query(image="x.png", lang="en"), "en")
    assert [s.text for s in english.sections["findings"]][0] == "The lungs are clear."
    chinese = _report("z1", "zh", "双肺纹理清晰。", "未见异常。")
    report = _auto(memory, llm).generate(HITS + [Hit(chinese, 0.7, 3, "faiss", "image->report",
                                                     cosine=0.7)], QUERY, "zh")
    assert [s.text for s in report.sentences()] == ["双肺纹理清晰。", "未见异常。"]
    assert llm.calls == 0 and report.model == "auto:grounded"


@pytest.mark.parametrize("error", [GeneratorCrashed("signal SIGSEGV"), RuntimeError("boom")])
def test_a_crashing_model_keeps_the_english_sentence_and_warns(memory, error):
    report = _auto(memory, FakeLLM({}, fail=error)).generate(HITS, QUERY, "zh")
    texts = [s.text for s in report.sentences()]
    assert texts[0] == "双肺清晰。" and "There is no pleural effusion." in texts
    assert all(s.cites for s in report.sentences())
    assert any("语言模型翻译时出错" in w and "2 句保留英文原句" in w for w in report.warnings)


def test_without_a_model_the_rest_stays_english_with_one_note(memory, monkeypatch):
    monkeypatch.setattr("generator.auto.llm_available", lambda *a, **k: False)
    report = _auto(memory, None).generate(HITS, QUERY, "zh")
    assert [s.text for s in report.sentences()][0] == "双肺清晰。"
    notes = [w for w in report.warnings if "没有中文报告" in w]
    assert len(notes) == 1 and "未安装" in notes[0]


def test_an_index_without_a_memory_file_still_answers(tmp_path, monkeypatch):
    monkeypatch.setattr("generator.auto.llm_available", lambda *a, **k: False)
    generator = create_generator("auto", index_dir=tmp_path, user_memory=tmp_path / "u.sqlite",
                                 embed=TEXT_BACKBONES["hash-bag"]())
    report = generator.generate(HITS, QUERY, "zh")
    assert report.sentences() and all(s.cites for s in report.sentences())
    generator.close()


def test_model_translations_are_cached_in_an_empty_user_memory(tmp_path):
    """An empty memory (no aligned pairs yet, the state of every fresh machine) still caches."""
    llm = FakeLLM({"The lungs are clear.": "双肺清晰。", "There is no pleural effusion.": "无胸腔积液。",
                   "No acute disease.": "无急性病变。"})
    path = tmp_path / "fresh.sqlite"
    _auto(path, llm).generate(HITS, QUERY, "zh")
    again = FakeLLM({})
    report = _auto(path, again).generate(HITS, QUERY, "zh")
    assert llm.calls == 1 and again.calls == 0
    assert [s.text for s in report.sentences()] == ["双肺清晰。", "无胸腔积液。", "无急性病变。"]

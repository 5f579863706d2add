from generator.base import create_generator
from rag.types import Hit, Query, Record


def _report(rid, lang, findings, impression, study=None):
    return Record(rid, "report", "xray", "chest", "chest-xray", lang,
                  f"Findings: {findings} Impression: {impression}", study=study or rid,
                  meta={"sections": {"findings": findings, "impression": impression}})


def _hits(*records, score=0.8):
    return [Hit(r, score - i * 0.01, i + 1, "faiss", "image->report", cosine=score - i * 0.01)
            for i, r in enumerate(records)]


QUERY = Query(image="x.png", lang="en")


def test_consensus_sentences_come_first_and_cite_every_supporting_report():
    hits = _hits(
        _report("r1", "en", "The heart is normal in size. Small left effusion.", "No acute disease."),
        _report("r2", "en", "Heart is normal in size. The lungs are clear.", "No acute disease."),
        _report("r3", "en", "The heart is normal in size. Left basilar atelectasis.", "Atelectasis."),
    )
    report = create_generator("composer").generate(hits, QUERY, "en")
    first = report.sections["findings"][0]
    assert "normal in size" in first.text and sorted(first.cites) == ["r1", "r2", "r3"]
    assert report.sections["impression"][0].cites == ["r1", "r2"]
    cited = {c for s in report.sections["findings"] for c in s.cites}
    assert cited <= {"r1", "r2", "r3"}
    assert all(s.text for s in report.sections["findings"])


def test_chinese_uses_chinese_reports_linked_to_the_hit():
    en = _report("en1", "en", "Ground glass opacity in the right upper lobe.", "Viral pneumonia.",
                 study="s1")
    zh = _report("zh1", "zh", "右肺上叶见磨玻璃影。", "病毒性肺炎。", study="s1")
    hit = _hits(en)[0]
    hit.linked = [zh]
    report = create_generator("composer").generate([hit], QUERY, "zh")
    assert report.sections["findings"][0].text == "右肺上叶见磨玻璃影。"
    assert report.sections["findings"][0].cites == ["zh1"]
    assert not any("中文报告" in w for w in report.warnings)


def test_no_chinese_source_is_said_plainly_and_english_is_quoted():
    report = create_generator("composer").generate(
        _hits(_report("r1", "en", "Lungs are clear.", "Normal.")), QUERY, "zh")
    assert any("没有中文报告" in w for w in report.warnings)
    assert report.sections["findings"][0].text == "Lungs are clear."


def test_low_confidence_and_empty_retrieval_warn():
    gen = create_generator("composer", low_confidence=0.5)
    low = gen.generate(_hits(_report("r1", "en", "Lungs are clear.", "Normal."), score=0.2),
                       QUERY, "en")
    assert any("Low retrieval confidence" in w for w in low.warnings)
    empty = gen.generate([], QUERY, "en")
    assert empty.sections == {} and empty.warnings


def test_confidence_comes_from_the_hits_that_give_the_text():
    image = Record("img", "image", image="x.png", study="lonely")
    weak = _report("r1", "en", "Lungs are clear.", "Normal.")
    hits = [Hit(image, 1.0, 1, "faiss", "image->image", cosine=1.0),
            Hit(weak, 0.2, 2, "faiss", "image->report", cosine=0.2)]
    report = create_generator("composer", low_confidence=0.3).generate(hits, QUERY, "en")
    assert "Low retrieval confidence" in report.warnings[0]


def test_two_versions_of_one_study_count_as_one_source():
    a = _report("s1-a", "en", "Small right effusion.", "Effusion.", study="s1")
    b = _report("s1-b", "en", "Small right effusion.", "Effusion.", study="s1")
    hit = _hits(a)[0]
    hit.linked = [b]
    report = create_generator("composer").generate([hit], QUERY, "en")
    assert report.sections["findings"][0].cites == ["s1-a"]

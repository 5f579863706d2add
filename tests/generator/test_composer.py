import csv
import itertools

import pytest

from generator.base import create_generator
from rag.text.clinical_labels import NO_FINDING, label_report
from rag.types import Hit, Query, Record
from tests.fixtures.shared_data import shared_subdir


def _report(rid, lang, findings, impression, study=None):
    return Record(rid, "report", "xray", "chest", "chest-xray", lang,
                  f"Findings: {findings} Impression: {impression}", study=study or rid,
                  meta={"sections": {"findings": findings, "impression": impression}})


def _hits(*records, score=0.8, scores=None):
    scores = scores or [score - i * 0.01 for i in range(len(records))]
    return [Hit(r, s, i + 1, "faiss", "image->report", cosine=s)
            for i, (r, s) in enumerate(zip(records, scores))]


def _texts(report, section="findings"):
    return [s.text for s in report.sections.get(section, [])]


QUERY = Query(image="x.png", lang="en")


def test_consensus_sentences_come_first_and_cite_every_supporting_report():
    hits = _hits(
        _report("r1", "en", "The heart is normal in size. Small left effusion.", "No acute disease."),
        _report("r2", "en", "Heart is normal in size. The lungs are clear.", "No acute disease."),
        _report("r3", "en", "The heart is normal in size. Left basilar atelectasis.", "Atelectasis."),
    )
    report = create_generator("composer").generate(hits, QUERY, "en")
    # the heaviest cluster is kept, but printed in reading order: lungs, pleura, then heart
    heart = next(s for s in report.sections["findings"] if "normal in size" in s.text)
    assert sorted(heart.cites) == ["r1", "r2", "r3"]
    assert report.sections["findings"][-1] is heart
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


def test_present_and_absent_effusion_never_merge():
    hits = _hits(_report("r1", "en", "No pleural effusion.", ""),
                 _report("r2", "en", "Small pleural effusion.", ""))
    report = create_generator("composer").generate(hits, QUERY, "en")
    # same words, opposite polarity: two clusters, and the contradiction keeps one side
    assert [(s.text, s.cites) for s in report.sections["findings"]] == [
        ("No pleural effusion.", ["r1"])]


def test_contradiction_keeps_the_side_with_more_weight_and_says_so():
    def draft(scores):
        hits = _hits(_report("r1", "en", "Small pleural effusion. The heart is normal in size.", ""),
                     _report("r2", "en", "No pleural effusion. The heart is normal in size.", ""),
                     _report("r3", "en", "No pleural effusion.", ""), scores=scores)
        return create_generator("composer").generate(hits, QUERY, "en")

    absent = draft([0.9, 0.5, 0.5])  # 1.0 against 0.9
    assert "No pleural effusion." in _texts(absent)
    assert not any("Small" in t for t in _texts(absent))
    assert any("disagreed on 1 finding" in w for w in absent.warnings)
    present = draft([0.9, 0.3, 0.3])  # 0.9 against 0.6
    assert "Small pleural effusion." in _texts(present)
    assert not any(t.startswith("No pleural") for t in _texts(present))
    assert any("disagreed on 1 finding" in w for w in present.warnings)


def test_weight_beats_count_and_a_weak_lone_sentence_stays_out():
    hits = _hits(_report("r1", "en", "Right upper lobe consolidation.", "Pneumonia."),
                 _report("r2", "en", "Patchy lung opacities.", ""),
                 _report("r3", "en", "Patchy lung opacities.", ""),
                 _report("r4", "en", "Old healed rib fracture.", ""),
                 scores=[0.9, 0.35, 0.35, 0.2])
    report = create_generator("composer").generate(hits, QUERY, "en")
    findings = report.sections["findings"]
    assert findings[0].text == "Right upper lobe consolidation."  # 0.9 beats 2 reports' 0.7
    assert findings[1].cites == ["r2", "r3"]
    assert not any("fracture" in t for t in _texts(report))  # 0.2 < 0.25 x 0.9
    # a section keeps its best sentence even when it rests on one report
    assert _texts(report, "impression") == ["Pneumonia."]


def test_findings_print_in_anatomical_order():
    findings = ("The heart is normal in size. No acute osseous abnormality. "
                "No pleural effusion. The lungs are clear. Endotracheal tube in good position.")
    hits = _hits(_report("r1", "en", findings, "No acute disease."),
                 _report("r2", "en", findings, "No acute disease."))
    texts = _texts(create_generator("composer").generate(hits, QUERY, "en"))
    assert texts == ["Endotracheal tube in good position.", "The lungs are clear.",
                     "No pleural effusion.", "The heart is normal in size.",
                     "No acute osseous abnormality."]


def test_chinese_present_and_absent_effusion_never_merge():
    hits = _hits(_report("z1", "zh", "双肺纹理清晰，未见胸腔积液。心影大小正常。", "未见异常。"),
                 _report("z2", "zh", "双肺纹理清晰，少量胸腔积液。心影大小正常。", "少量胸腔积液。"),
                 scores=[0.9, 0.5])
    report = create_generator("composer").generate(hits, QUERY, "zh")
    kept = [s for s in report.sections["findings"] if "胸腔积液" in s.text]
    assert [(s.text, s.cites) for s in kept] == [("双肺纹理清晰，未见胸腔积液。", ["z1"])]
    assert any("相互矛盾" in w for w in report.warnings)
    # polarity alone keeps the short forms apart, however loose the word overlap allowed
    short = _hits(_report("z1", "zh", "未见胸腔积液。", ""), _report("z2", "zh", "少量胸腔积液。", ""))
    loose = create_generator("composer", similarity=0.2).generate(short, QUERY, "zh")
    assert [s.cites for s in loose.sections["findings"]] == [["z1"]]


def _contradictions(sentences: list[str]) -> list[tuple[str, str, str]]:
    stated = [(s, {k: v for k, v in label_report(s, "en").items() if k != NO_FINDING})
              for s in sentences]
    return [(label, a, b) for (a, la), (b, lb) in itertools.combinations(stated, 2)
            for label in la.keys() & lb.keys() if {la[label], lb[label]} == {0, 1}]


@pytest.mark.shared_data
def test_real_cov_ctr_drafts_never_contradict_themselves():
    """Ten real COV-CTR English reports per draft, five drafts: no clinical label is stated
    both present and absent, and every sentence is quoted from the first report it cites."""
    path = shared_subdir("cov-ctr") / "reports_ZH_EN.csv"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with path.open(encoding="utf-8") as handle:
        rows = list(itertools.islice(csv.DictReader(handle), 50))
    generator = create_generator("grounded", max_findings=8)
    for start in range(0, len(rows), 10):
        records = [Record(f"cov{i}", "report", "ct", "chest", "chest-ct", "en",
                          row["reports_En"].strip(), study=f"cov{i}")
                   for i, row in enumerate(rows[start:start + 10], start=start)]
        by_id = {r.id: r for r in records}
        report = generator.generate(_hits(*records, score=0.9), QUERY, "en")
        sentences = [s for section in report.sections.values() for s in section]
        assert sentences
        assert all(s.cites and s.text in by_id[s.cites[0]].text for s in sentences)
        assert _contradictions([s.text for s in sentences]) == []


def test_a_draft_is_about_as_long_as_its_sources_not_their_sum():
    long = ["The thorax was symmetrical, the mediastinal heart shadow was centered, patchy {} "
            "shadows were seen in the {} lobe, and the bronchi of the lobe segments were clear."
            .format(*pair) for pair in (("ground glass", "right upper"), ("solid", "left lower"),
                                        ("nodular", "right middle"), ("stripe", "left upper"))]
    hits = _hits(*[_report(f"r{i}", "en", text, "Viral pneumonia.") for i, text in enumerate(long)])
    findings = _texts(create_generator("composer").generate(hits, QUERY, "en"))
    assert 1 <= len(findings) <= 2  # 1.5 x the median source, not four reports end to end

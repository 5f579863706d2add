"""Numbering retrieved cases for a prompt, and reading a model's free text back into a cited
Report (generator/evidence.py). Pure text: no model, no index."""
from __future__ import annotations

import pytest

from generator.evidence import Case, number_cases, parse_citations, read_report, split_output
from rag.types import Hit, Record


def report(rid, lang, text, study=None, sections=None):
    meta = {"sections": sections} if sections else {}
    return Record(rid, "report", "xray", "chest", "chest-xray", lang, text, study=study or rid,
                  meta=meta)


def image(rid, study, path="img.png"):
    return Record(rid, "image", "xray", "chest", "chest-xray", "", "", image=path, study=study)


def hit(record, score, rank=1, linked=(), cosine=None):
    return Hit(record, score, rank, "faiss", "image->report", linked=list(linked), cosine=cosine)


def cases_of(*records):
    return [Case(n, rec, 0.9) for n, rec in enumerate(records, start=1)]


# --- number_cases -------------------------------------------------------------------------


def test_one_case_per_study_preferring_the_requested_language():
    en = report("s1-en", "en", "Small left effusion.", study="s1")
    zh = report("s1-zh", "zh", "左侧少量胸腔积液。", study="s1")
    other = report("s2-en", "en", "Lungs are clear.", study="s2")
    hits = [hit(en, 0.9, 1, linked=[zh]), hit(other, 0.8, 2)]

    zh_cases = number_cases(hits, "zh")
    assert [c.record.id for c in zh_cases] == ["s1-zh", "s2-en"]  # s2 has no Chinese: English
    assert [c.number for c in zh_cases] == [1, 2]

    en_cases = number_cases(hits, "en")
    assert [c.record.id for c in en_cases] == ["s1-en", "s2-en"]


def test_the_chinese_version_wins_even_when_it_is_a_hit_of_its_own():
    en = report("s1-en", "en", "Small left effusion.", study="s1")
    zh = report("s1-zh", "zh", "左侧少量胸腔积液。", study="s1")
    cases = number_cases([hit(en, 0.9, 1), hit(zh, 0.85, 2)], "zh")
    assert [c.record.id for c in cases] == ["s1-zh"]


def test_cases_are_ordered_by_similarity_cosine_first_and_limited():
    records = [report(f"r{i}", "en", f"Report number {i}.") for i in range(6)]
    # a fused rank score in `score`, the dense similarity in `cosine`: cosine decides
    hits = [hit(records[0], 0.9, 1, cosine=0.50), hit(records[1], 0.8, 2, cosine=0.95),
            hit(records[2], 0.7, 3, cosine=0.70), hit(records[3], 0.6, 4),
            hit(records[4], 0.55, 5), hit(records[5], 0.2, 6)]
    cases = number_cases(hits, "en", limit=4)
    assert [c.record.id for c in cases] == ["r1", "r2", "r3", "r4"]
    assert [c.number for c in cases] == [1, 2, 3, 4]
    assert cases[0].score == pytest.approx(0.95)


def test_image_hits_bring_their_studys_report_and_their_image():
    img = image("s1-img", "s1", "files/s1.png")
    rep = report("s1-rep", "en", "Cardiomegaly.", study="s1")
    text_hit = report("s2-rep", "en", "Lungs are clear.", study="s2")
    cases = number_cases([hit(img, 0.9, 1, linked=[rep]), hit(text_hit, 0.8, 2)], "en")
    assert [(c.record.id, c.image) for c in cases] == [("s1-rep", "files/s1.png"),
                                                        ("s2-rep", None)]


def test_records_without_report_text_are_not_cases():
    empty = report("r1", "en", "   ")
    guideline = Record("g1", "guideline", text="Fleischner criteria for nodules.")
    assert number_cases([hit(empty, 0.9), hit(guideline, 0.8, 2)], "en") == []
    assert number_cases([], "en") == []


def test_case_text_is_findings_then_impression_or_the_whole_report():
    sectioned = report("r1", "en", "FINDINGS: A. IMPRESSION: B.",
                       sections={"impression": "Normal chest.", "findings": "Lungs clear."})
    assert Case(1, sectioned, 0.9).text() == "Lungs clear. Normal chest."
    assert Case(1, report("r2", "en", "Just text."), 0.9).text() == "Just text."


# --- parse_citations ----------------------------------------------------------------------


@pytest.mark.parametrize("raw, text, numbers", [
    ("Small left effusion [1].", "Small left effusion.", [1]),
    ("Small left effusion [1, 3].", "Small left effusion.", [1, 3]),
    ("Small left effusion [2-4].", "Small left effusion.", [2, 3, 4]),
    ("Small left effusion [1][3].", "Small left effusion.", [1, 3]),
    ("Small left effusion [1] [1].", "Small left effusion.", [1]),
    ("左侧少量胸腔积液【1】。", "左侧少量胸腔积液。", [1]),
    ("左侧少量胸腔积液［2］。", "左侧少量胸腔积液。", [2]),
    ("左侧少量胸腔积液[1，2]。", "左侧少量胸腔积液。", [1, 2]),
    ("[1]：双肺纹理增多。", "双肺纹理增多。", [1]),
    ("[2] Heart size is normal.", "Heart size is normal.", [2]),
    ("Heart size is normal.", "Heart size is normal.", []),
])
def test_parse_citations(raw, text, numbers):
    assert parse_citations(raw) == (text, numbers)


def test_a_range_is_bounded():
    _, numbers = parse_citations("Effusion [1-1000].")
    assert numbers == list(range(1, 22))


# --- split_output -------------------------------------------------------------------------


def test_english_headings_split_sections():
    text = "Findings:\nThe heart is normal [1].\nImpression:\nNo acute disease [2]."
    assert split_output(text) == {"findings": ["The heart is normal [1]."],
                                  "impression": ["No acute disease [2]."]}


def test_chinese_headings_split_sections():
    text = "影像表现：\n双肺纹理增多[1]。\n诊断意见：\n未见明显异常[2]。"
    assert split_output(text) == {"findings": ["双肺纹理增多[1]。"],
                                  "impression": ["未见明显异常[2]。"]}


def test_markdown_bold_bullets_and_numbering_are_dropped():
    text = ("**FINDINGS:**\n- The heart is normal [1].\n* Lungs are clear [2].\n"
            "**Impression:** 1. Normal chest [1].\n2) No effusion [2].")
    assert split_output(text) == {
        "findings": ["The heart is normal [1].", "Lungs are clear [2]."],
        "impression": ["Normal chest [1].", "No effusion [2]."]}


@pytest.mark.parametrize("heading", ["**IMPRESSION**", "### Impression", "Impression", "诊断意见"])
def test_a_heading_alone_on_its_line_needs_no_colon(heading):
    sections = split_output(f"Findings:\nThe heart is normal [1].\n{heading}\nNormal chest [1].")
    assert sections == {"findings": ["The heart is normal [1]."],
                        "impression": ["Normal chest [1]."]}


def test_a_heading_in_mid_line_starts_a_section():
    assert split_output("Findings: The heart is normal [1]. Impression: No acute disease [1].") == {
        "findings": ["The heart is normal [1]."], "impression": ["No acute disease [1]."]}
    assert split_output("影像表现：双肺纹理清晰【1】。诊断意见：未见异常【1】。") == {
        "findings": ["双肺纹理清晰【1】。"], "impression": ["未见异常【1】。"]}


def test_a_heading_word_inside_a_sentence_is_not_a_heading():
    sections = split_output("The findings: the heart is normal [1]. No diagnosis of pneumonia [2].")
    assert list(sections) == ["findings"] and len(sections["findings"]) == 2


def test_text_before_any_heading_counts_as_findings():
    sections = split_output("Heart size is normal [1].\nImpression:\nNormal [1].")
    assert sections == {"findings": ["Heart size is normal [1]."], "impression": ["Normal [1]."]}


def test_one_trailing_citation_covers_every_sentence_of_its_line():
    sections = split_output("Findings:\nThe heart is normal. The lungs are clear. [2]")
    assert [parse_citations(s) for s in sections["findings"]] == [
        ("The heart is normal.", [2]), ("The lungs are clear.", [2])]


def test_one_leading_citation_covers_every_sentence_of_its_line():
    sections = split_output("[3] The heart is normal. The lungs are clear.")
    assert [parse_citations(s)[1] for s in sections["findings"]] == [[3], [3]]


def test_a_sentence_citing_itself_keeps_its_own_citation():
    sections = split_output("The heart is normal [1]. The lungs are clear [2].")
    assert [parse_citations(s)[1] for s in sections["findings"]] == [[1], [2]]


def test_decimal_numbers_do_not_split_sentences():
    assert split_output("A 1.5 cm nodule in the right upper lobe [1].") == {
        "findings": ["A 1.5 cm nodule in the right upper lobe [1]."]}


def test_empty_answer_has_no_sections():
    assert split_output("") == {}
    assert split_output("\n\n  \n") == {}


# --- read_report --------------------------------------------------------------------------


def test_citations_map_to_the_record_ids_of_the_cases():
    cases = cases_of(report("iu:1", "en", "A."), report("iu:2", "en", "B."))
    out = read_report("Findings:\nThe heart is normal [1][2].\nImpression:\nNormal chest [2].",
                      cases, "en", "fake")
    assert out.lang == "en" and out.model == "fake" and out.errors == []
    assert [(s.text, s.cites) for s in out.sections["findings"]] == [
        ("The heart is normal.", ["iu:1", "iu:2"])]
    assert [(s.text, s.cites) for s in out.sections["impression"]] == [("Normal chest.", ["iu:2"])]


def test_a_citation_of_no_case_is_an_error_never_silently_dropped():
    cases = cases_of(*(report(f"r{i}", "en", "A.") for i in (1, 2, 3)))
    out = read_report("The heart is normal [9]. The lungs are clear [1, 9].", cases, "en", "fake")
    assert len(out.errors) == 2
    assert "[9]" in out.errors[0] and "3 case(s)" in out.errors[0]
    assert [(s.text, s.cites) for s in out.sections["findings"]] == [
        ("The heart is normal.", []), ("The lungs are clear.", ["r1"])]


def test_sentences_with_no_words_are_dropped():
    cases = cases_of(report("r1", "en", "A."))
    out = read_report("Findings:\n[1].\n- \n...\nThe heart is normal [1].\nImpression:\n[1]",
                      cases, "en", "fake")
    assert [s.text for s in out.sentences()] == ["The heart is normal."]
    assert "impression" not in out.sections


def test_chinese_answer_with_citations_before_the_sentence():
    cases = cases_of(report("c1", "zh", "双肺纹理增多。"), report("c2", "zh", "心影不大。"))
    answer = "影像表现：\n[1]：双肺纹理增多。\n[2]：心影不大。\n诊断意见：\n【1】未见明显异常。"
    out = read_report(answer, cases, "zh", "fake")
    assert [(s.text, s.cites) for s in out.sentences()] == [
        ("双肺纹理增多。", ["c1"]), ("心影不大。", ["c2"]), ("未见明显异常。", ["c1"])]

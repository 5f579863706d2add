"""De-identification placeholders never reach a drafted sentence (generator/placeholders.py)."""
from generator.base import create_generator
from generator.evidence import Case, read_report
from generator.placeholders import has_placeholder, redact
from rag.types import Hit, Query, Record


def _report(rid, findings, impression="No acute disease."):
    return Record(rid, "report", "xray", "chest", "chest-xray", "en",
                  f"Findings: {findings} Impression: {impression}", study=rid,
                  meta={"sections": {"findings": findings, "impression": impression}})


def test_a_trailing_clause_with_a_placeholder_is_dropped_and_the_sentence_kept():
    assert redact("The heart is normal in size, XXXX are intact.") == "The heart is normal in size."
    assert redact("No pneumothorax; ___ catheter in place.") == "No pneumothorax."
    assert redact("心脏大小正常，XXXX完整。") == "心脏大小正常。"


def test_a_placeholder_in_the_first_clause_drops_the_sentence():
    assert redact("XXXX opacities in the right lower lung.") is None
    assert redact("[**Hospital 1**] chest film, no change.") is None
    assert redact("The lungs are clear.") == "The lungs are clear."


def test_words_that_merely_contain_x_are_not_placeholders():
    assert not has_placeholder("XX. Maxillary sinus; x-ray; Xxx")
    assert has_placeholder("XXXX") and has_placeholder("a ___ b") and has_placeholder("[**2101**]")


def test_the_grounded_draft_never_quotes_a_placeholder_and_says_so():
    hits = [Hit(_report(f"r{i}", "XXXX opacities in the right lower lung. The heart is normal, "
                                 "XXXX are intact. No pleural effusion."), 0.8 - i / 100, i + 1,
                "faiss", "image->report", cosine=0.8 - i / 100) for i in range(3)]
    for lang in ("en", "zh"):
        report = create_generator("grounded").generate(hits, Query(image="x.png", lang=lang), lang)
        texts = [s.text for s in report.sentences()]
        assert texts and not any(has_placeholder(t) for t in texts)
        assert "The heart is normal." in texts
        assert any("XXXX" in w for w in report.warnings)


def test_a_model_answer_quoting_a_placeholder_is_redacted_and_warned():
    case = Case(1, _report("r1", "The heart is normal, XXXX are intact."), 0.8)
    assert "XXXX" not in case.text()  # the prompt never shows one
    report = read_report("Findings: XXXX opacity in the left base [1]. The lungs are clear [1].",
                         [case], "en", "llm")
    assert [s.text for s in report.sentences()] == ["The lungs are clear."]
    assert any("placeholder" in w for w in report.warnings)

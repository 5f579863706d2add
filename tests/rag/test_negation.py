"""Polarity of findings (rag.text.negation) on hand-written English and Chinese sentences."""
import pytest

from rag.text.negation import detect_language, mention_polarity, sentence_polarity

# (text, the finding's first words, expected polarity)
MENTIONS = [
    ("No pleural effusion.", "pleural effusion", "negative"),
    ("Small left pleural effusion.", "pleural effusion", "positive"),
    ("No pneumothorax or pleural effusion.", "pneumothorax", "negative"),
    ("No pneumothorax or pleural effusion.", "pleural effusion", "negative"),
    ("No focal consolidation, pleural effusion, or pneumothorax.", "pneumothorax", "negative"),
    ("Pleural effusion has resolved.", "Pleural effusion", "negative"),
    ("Pleural effusion is not seen.", "Pleural effusion", "negative"),
    ("The heart is not enlarged.", "heart", "negative"),
    ("Normal heart size.", "heart size", "negative"),
    ("Possible small effusion.", "effusion", "uncertain"),
    ("Pneumonia cannot be excluded.", "Pneumonia", "uncertain"),
    ("Atelectasis versus pneumonia.", "Atelectasis", "uncertain"),
    ("Atelectasis versus pneumonia.", "pneumonia", "uncertain"),
    ("Opacity may represent atelectasis.", "atelectasis", "uncertain"),
    ("No pneumothorax, but small effusion.", "effusion", "positive"),
    ("Lungs are clear. No effusion.", "effusion", "negative"),
    ("No interval change in the pleural effusion.", "pleural effusion", "positive"),
    ("Small pleural effusion without pneumothorax.", "pleural effusion", "positive"),
    ("Small pleural effusion without pneumothorax.", "pneumothorax", "negative"),
    # a verb ends the reach of "no" (COV-CTR's comma-spliced translations)
    ("No enlarged lymph nodes are seen in the mediastinum, patchy shadow is seen in the right lung.",
     "patchy shadow", "positive"),
    ("No enlarged lymph nodes are seen in the mediastinum.", "enlarged lymph nodes", "negative"),
    ("双肺未见明显实变", "实变", "negative"),
    ("右肺下叶磨玻璃影", "磨玻璃影", "positive"),
    ("考虑病毒性肺炎", "病毒性肺炎", "uncertain"),
    ("心影不大", "心影", "negative"),
    ("纵隔内未见肿大淋巴结", "肿大淋巴结", "negative"),
    ("胸腔积液消失", "胸腔积液", "negative"),
    ("磨玻璃影已吸收", "磨玻璃影", "negative"),
    ("磨玻璃影较前部分吸收", "磨玻璃影", "positive"),
    ("肺炎可能", "肺炎", "uncertain"),
    ("不除外肺炎", "肺炎", "uncertain"),
    ("双肺见大小不等结节", "结节", "positive"),  # 不等 is not a negation
    ("右肺下叶不张伴实变", "实变", "positive"),  # nor is the 不 of 肺不张
    ("双肺未见明显实变，胸腔积液", "胸腔积液", "positive"),  # a clause ends at the comma
]


@pytest.mark.parametrize(("text", "finding", "expected"), MENTIONS)
def test_mention_polarity(text, finding, expected):
    assert mention_polarity(text, text.index(finding)) == expected


def test_explicit_language_and_errors():
    assert mention_polarity("No effusion.", 3, lang="en") == "negative"
    with pytest.raises(ValueError, match="lang"):
        mention_polarity("No effusion.", 3, lang="fr")
    with pytest.raises(ValueError, match="outside"):
        mention_polarity("No effusion.", 40)


def test_detect_language():
    assert detect_language("右肺 GGO") == "zh"
    assert detect_language("Right lung GGO.") == "en"


@pytest.mark.parametrize(("sentence", "expected"), [
    ("No pleural effusion.", "negative"),
    ("Small pleural effusion.", "positive"),
    ("There is no pneumothorax.", "negative"),
    ("Small pleural effusion without pneumothorax.", "positive"),
    ("No pleural effusion, pneumothorax or consolidation.", "negative"),
    ("The heart is not enlarged.", "negative"),
    ("Pleural effusion has resolved.", "negative"),
    ("Possible small effusion.", "uncertain"),
    ("Findings may represent atelectasis.", "uncertain"),
    ("IMPRESSION: No acute disease.", "negative"),
    ("No interval change in small effusion.", "positive"),
    ("双肺未见明显实变。", "negative"),
    ("右肺下叶见磨玻璃影，考虑病毒性肺炎。", "positive"),
    ("考虑病毒性肺炎", "uncertain"),
    ("心影不大", "negative"),
    ("", "positive"),
])
def test_sentence_polarity(sentence, expected):
    assert sentence_polarity(sentence) == expected


def test_sentence_polarity_keeps_negated_and_affirmed_findings_apart():
    assert sentence_polarity("no pleural effusion") != sentence_polarity("small pleural effusion")


def test_asymptomatic_is_not_a_negation_of_what_follows():
    from rag.text.clinical_labels import label_report

    assert label_report("可能存在一些慢性无症状感染，与慢性实变相关。")["Consolidation"] != 0
    assert label_report("无胸腔积液。")["Pleural Effusion"] == 0

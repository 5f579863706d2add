import csv
import logging

import pytest

from generator.glossary import (
    CHECKED_KINDS,
    KINDS,
    Term,
    check_english,
    check_translation,
    load_glossary,
    prompt_terms,
    terms_in,
)
from tests.fixtures.shared_data import shared_subdir

log = logging.getLogger(__name__)

EMPHYSEMA_FLAG = "术语“肺气肿”(emphysema) 不见于检索到的病例 / term not in the retrieved cases"


def _by_en():
    return {t.en: t for t in load_glossary()}


def test_packaged_glossary_loads_with_known_kinds():
    glossary = load_glossary()
    assert 200 <= len(glossary) <= 350
    assert all(isinstance(t, Term) and t.en and t.zh and t.kind in KINDS for t in glossary)
    assert load_glossary() == glossary and load_glossary() is not glossary  # cached, but a copy
    assert {"finding", "anatomy", "location", "descriptor"} <= {t.kind for t in glossary}


def test_no_duplicate_keys_and_no_form_shared_by_two_terms():
    glossary = load_glossary()
    keys = [t.en.lower() for t in glossary]
    assert len(keys) == len(set(keys))
    owners: dict[tuple[str, str], str] = {}
    for term in glossary:
        for lang in ("en", "zh"):
            for form in term.forms(lang):
                key = (lang, " ".join(form.lower().replace("-", " ").split()))
                assert owners.setdefault(key, term.en) == term.en, f"{form!r}: {owners[key]} and {term.en}"


@pytest.mark.parametrize("en, zh", [
    ("ground-glass opacity", "磨玻璃影"), ("consolidation", "实变"), ("crazy paving", "铺路石征"),
    ("interlobular septal thickening", "小叶间隔增厚"), ("subpleural", "胸膜下"),
    ("pleural effusion", "胸腔积液"), ("pneumothorax", "气胸"), ("atelectasis", "肺不张"),
    ("emphysema", "肺气肿"), ("cardiomegaly", "心影增大"), ("nodule", "结节"), ("mass", "肿块"),
    ("fibrosis", "纤维化"), ("fibrous stripes", "纤维索条"), ("bronchiectasis", "支气管扩张"),
    ("lymphadenopathy", "淋巴结肿大"), ("infiltrate", "浸润影"), ("hilum", "肺门"),
    ("mediastinum", "纵隔"), ("costophrenic angle", "肋膈角"), ("diaphragm", "膈肌"),
    ("trachea", "气管"), ("calcification", "钙化"), ("granuloma", "肉芽肿"),
    ("pulmonary edema", "肺水肿"), ("pneumonia", "肺炎"), ("hyperinflation", "过度充气"),
    ("hemorrhage", "出血"), ("infarct", "梗死"), ("hydrocephalus", "脑积水"), ("lesion", "病灶"),
    ("enhancement", "强化"), ("right upper lobe", "右肺上叶"), ("left lower lobe", "左肺下叶"),
    ("bibasilar", "双肺底"), ("perihilar", "肺门周围"),
    ("no acute cardiopulmonary abnormality", "心肺未见急性异常"),
])
def test_core_terms_have_the_standard_chinese_term(en, zh):
    assert _by_en()[en].zh == zh


@pytest.mark.parametrize("en, zh_alias", [
    ("opacity", "阴影"), ("bilateral", "双肺"), ("diaphragm", "膈面"), ("normal", "未见异常"),
])
def test_common_variants_are_aliases(en, zh_alias):
    assert zh_alias in _by_en()[en].zh_aliases


def test_bibasilar_atelectasis_translated_as_emphysema_is_flagged():
    evidence = ["Bibasilar atelectasis. No pneumothorax or pleural effusion."]
    assert check_translation("双肺底肺气肿，未见气胸及胸腔积液。", evidence) == [EMPHYSEMA_FLAG]
    assert check_translation("双肺底肺不张，未见气胸及胸腔积液。", evidence) == []


def test_chinese_evidence_supports_the_same_concept():
    assert check_translation("双肺底肺不张。", ["双肺底肺不张。"]) == []
    assert check_translation("双肺底肺气肿。", ["双肺底肺不张。"]) == [EMPHYSEMA_FLAG]


def test_longest_match_wins_in_both_languages():
    en = [t.en for t in terms_in("Small right pleural effusions. Effusion resolved.", "en")]
    assert en == ["right", "pleural effusion", "effusion", "resolved"]
    assert [t.zh for t in terms_in("双肺底肺不张，右侧胸腔积液。", "zh")] == ["双肺底", "肺不张", "右侧", "胸腔积液"]
    # 肺纹理增多 is one finding, not 双肺 + 纹理
    assert [t.en for t in terms_in("双肺纹理增多", "zh")] == ["increased lung markings"]


def test_english_matching_ignores_case_hyphens_and_simple_plurals():
    found = {t.en for t in terms_in("GROUND GLASS OPACITIES and crazy-paving; nodules, bullae", "en")}
    assert found == {"ground-glass opacity", "crazy paving", "nodule", "bulla"}
    assert terms_in("pleural, effusion", "en") != terms_in("pleural effusion", "en")
    assert terms_in("effusionx unmassive", "en") == []  # word boundaries
    assert terms_in("the masses", "en")[0].en == "mass"


def test_a_specific_term_in_the_output_is_supported_by_its_general_term_and_back():
    assert check_translation("右侧胸腔积液。", ["No effusion."]) == []
    assert check_translation("右侧积液。", ["Small right pleural effusion."]) == []
    problems = check_translation("少量心包积液。", ["Small right pleural effusion."])
    assert problems == ["术语“心包积液”(pericardial effusion) 不见于检索到的病例 / term not in the retrieved cases"]


def test_sibling_of_a_general_term_is_not_supported():
    assert check_translation("间质性肺炎。", ["Viral pneumonia."]) != []
    assert check_translation("肺炎。", ["Viral pneumonia."]) == []


def test_generic_words_and_anatomy_are_never_reported():
    output = "双侧胸廓对称，右侧肺门未见异常，右肺上叶病灶边缘模糊，纵隔居中，正常。"
    assert check_translation(output, ["The heart is normal in size."]) == []
    assert all(t.kind not in CHECKED_KINDS for t in terms_in(output, "zh"))


def test_aliases_in_the_output_are_reported_as_written():
    problems = check_translation("右肺上叶膨胀不全。", ["Right upper lobe consolidation."])
    assert problems == ["术语“膨胀不全”(atelectasis) 不见于检索到的病例 / term not in the retrieved cases"]


def test_check_english_uses_evidence_in_either_language():
    evidence = ["双肺底肺不张，右侧胸腔积液。", "The lungs are clear."]
    assert check_english("Bibasilar atelectasis and a right pleural effusion.", evidence) == []
    assert check_english("Emphysema. Right pleural effusions.", evidence) == [
        "term “Emphysema” (肺气肿) not in the retrieved cases / 术语不见于检索到的病例"]


def test_prompt_terms_counts_both_languages_most_frequent_first():
    evidence = ["Bibasilar atelectasis. Mild cardiomegaly.", "双肺底肺不张。", "Atelectasis again."]
    terms = prompt_terms(evidence)
    assert [t.en for t in terms[:2]] == ["atelectasis", "bibasilar"]
    assert {"cardiomegaly", "mild"} <= {t.en for t in terms}
    assert len(prompt_terms(evidence, limit=2)) == 2
    assert prompt_terms([]) == []


def test_a_custom_glossary_with_four_columns(tmp_path):
    path = tmp_path / "tiny.tsv"
    path.write_text("# tiny\nen\tzh\ten_aliases\tzh_aliases\n"
                    "atelectasis\t肺不张\tcollapse\t肺膨胀不全\nemphysema\t肺气肿\t\t\n", encoding="utf-8")
    glossary = load_glossary(path)
    assert glossary == [Term("atelectasis", "肺不张", ("collapse",), ("肺膨胀不全",)),
                        Term("emphysema", "肺气肿")]
    assert check_translation("肺气肿", ["Lung collapse."], glossary) == [EMPHYSEMA_FLAG]
    assert [t.en for t in prompt_terms(["collapse", "肺膨胀不全", "肺气肿"], glossary)] == ["atelectasis", "emphysema"]


@pytest.mark.parametrize("body, message", [
    ("en\tzh\ten_aliases\tzh_aliases\tkind\natelectasis\t肺不张\n", ":2: expected 5 tab-separated columns"),
    ("en\tzh\nx\ty\n", ":1: expected the header"),
    ("en\tzh\ten_aliases\tzh_aliases\tkind\n# c\nx\ty\t\t\torgan\n", ":3: unknown kind 'organ'"),
    ("en\tzh\ten_aliases\tzh_aliases\nx\ty\t\t\nX\tz\t\t\n", ":3: duplicate term 'X' (first on line 2)"),
    ("en\tzh\ten_aliases\tzh_aliases\n\tz\t\t\n", ":2: en and zh must not be empty"),
])
def test_malformed_files_name_the_file_and_line(tmp_path, body, message):
    path = tmp_path / "bad.tsv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ValueError, match="bad.tsv" + message.replace("(", r"\(").replace(")", r"\)")):
        load_glossary(path)


def test_unknown_language_is_rejected():
    with pytest.raises(ValueError, match="unknown language 'fr'"):
        terms_in("x", "fr")


@pytest.mark.shared_data
def test_english_terms_of_real_ct_reports_appear_in_the_paired_chinese_report():
    """COV-CTR: for each glossary term found in an English report, is its Chinese in the pair?

    Measured on the first 200 reports: 97% of 2773 term instances, 99.7% of 389 finding
    instances (the English is a translation of the Chinese findings, so most terms should hold).
    """
    path = shared_subdir("cov-ctr") / "reports_ZH_EN.csv"
    with path.open(encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["reports_En"].strip()][:200]
    found = covered = findings = findings_covered = 0
    for row in rows:
        chinese = row["findings"] + row["impression"]
        for term in terms_in(row["reports_En"], "en"):
            hit = any(form in chinese for form in term.forms("zh"))
            found += 1
            covered += hit
            if term.kind == "finding":
                findings += 1
                findings_covered += hit
    log.info("COV-CTR glossary coverage: %d/%d terms, %d/%d findings",
             covered, found, findings_covered, findings)
    assert found > 1000 and findings > 200
    assert covered / found >= 0.9
    assert findings_covered / findings >= 0.95

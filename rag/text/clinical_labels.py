"""Rule-based clinical observation labels for English and Chinese radiology reports.

`LABEL_PATTERNS` maps each label to its English and Chinese mention patterns (regular
expressions; English ones are matched case-insensitively between word boundaries). It holds
three groups:

* CheXpert's 14 observations: No Finding, Enlarged Cardiomediastinum, Cardiomegaly, Lung
  Lesion, Lung Opacity, Edema, Consolidation, Pneumonia, Atelectasis, Pneumothorax, Pleural
  Effusion, Pleural Other, Fracture, Support Devices. "No Finding" has no patterns: it is 1
  when no other label except Support Devices is positive or uncertain (CheXpert's rule).
* Chest CT findings: Ground-Glass Opacity, Crazy Paving, Interlobular Septal Thickening,
  Reticulation/Fibrosis, Nodule, Mass, Lymphadenopathy, Bronchiectasis, Emphysema,
  Air Bronchogram.
* General CT/MR findings: Hemorrhage, Infarct, Cyst, Calcification, Hydrocephalus (Edema
  and Mass above also cover the brain and other organs).

Labels overlap on purpose, as CheXpert's do: a "lung mass" is Mass and Lung Lesion,
ground-glass opacity is also Lung Opacity, consolidation also Lung Opacity. Some English
patterns are the wording of COV-CTR's machine-translated reports ("ground glass shadow",
"patchy solid shadow" for 实变影, "grid shadow" for 网格影).

Each mention's polarity comes from `rag.text.negation.mention_polarity`; a label mentioned several
times takes the strongest value, positive over uncertain over negative.
"""
from __future__ import annotations

import re

from rag.text.negation import NEGATIVE, UNCERTAIN, mention_polarity
from rag.text.words import detect_language

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
_VALUE = {NEGATIVE: 0, UNCERTAIN: -1}  # anything else is positive, 1
_STRENGTH = {0: 0, -1: 1, 1: 2}

# label -> (English patterns, Chinese patterns)
LABEL_PATTERNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    NO_FINDING: ((), ()),
    "Enlarged Cardiomediastinum": (
        (r"(?:enlarged|widened|widening of the|enlargement of the) (?:cardio)?mediastin\w*",
         r"(?:cardio)?mediastin\w* (?:silhouette |contours? )?(?:is |are )?(?:not |mildly )?"
         r"(?:enlarged|widened)",
         r"cardiomediastinal (?:silhouette|contours?)"
         r"(?= (?:is |are )?(?:normal|within normal limits|unremarkable))",
         r"(?<=normal )cardiomediastinal (?:silhouette|contours?)"),
        (r"纵隔(?:明显)?(?:增宽|增大)", r"纵隔(?:不|未见|无)(?:明显)?增宽"),
    ),
    "Cardiomegaly": (
        (r"cardiomegaly", r"(?:enlarged|enlargement of the) (?:heart|cardiac silhouette)",
         r"(?:heart|cardiac) (?:size|silhouette|shadow)(?: is| was)?(?: not)?"
         r"(?: mildly| moderately| markedly)? (?:enlarged|increased|large)",
         r"heart is(?: not)?(?: mildly| moderately| markedly)? enlarged",
         r"(?:heart|cardiac) size(?= (?:is |was )?(?:normal|within normal limits))",
         r"(?<=normal )(?:heart|cardiac) size"),
        (r"心(?:影|脏)(?:明显|稍|略|轻度)?(?:不|未见|无)?(?:明显)?(?:增大|扩大|饱满|大(?!小))",
         r"心(?:影|脏)(?=大小(?:、形态)?正常)"),
    ),
    "Lung Lesion": (
        (r"nodul\w*", r"mass(?:es)?", r"tumou?rs?", r"neoplasm\w*", r"carcinoma\w*",
         r"cavit(?:ary|ation|ating)", r"(?:lung|pulmonary|thick-walled|thin-walled) cavit(?:y|ies)",
         r"cavity shadows?", r"(?:lung|pulmonary|lobe|cavitary|nodular) lesions?"),
        (r"结节", r"肿块", r"肿物", r"占位", r"肿瘤", r"癌", r"空洞"),
    ),
    "Lung Opacity": (
        (r"opacit(?:y|ies)", r"opacification", r"infiltrat\w*", r"air-?space disease",
         r"(?:patchy|patch|lamellar|flaky|striated|striped|dense|density|solid|consolidation"
         r"|(?:ground|frosted|hairy)[- ]?glass|high[- ]density) shadows?"),
        (r"片(?:状)?影", r"致密影", r"(?:异常|高)密度影", r"磨玻璃", r"毛玻璃", r"实变", r"浸润",
         r"渗出"),
    ),
    "Edema": ((r"o?edema\w*", r"(?:pulmonary )?vascular congestion"), (r"水肿", r"肺淤血")),
    "Consolidation": ((r"consolidat\w*", r"(?:patchy |lamellar )?solid shadows?"), (r"实变",)),
    "Pneumonia": (
        (r"pneumoni\w*", r"bronchopneumonia", r"infecti\w*", r"inflammat\w*"),
        (r"肺炎", r"炎症", r"炎性", r"感染"),
    ),
    "Atelectasis": (
        (r"atelecta\w*", r"(?:lobar|lobe|lung) collapse", r"collapsed? (?:lung|lobe)"),
        (r"(?:肺|叶|段)?不张", r"膨胀不全"),
    ),
    "Pneumothorax": ((r"(?:hydro)?pneumothora\w*",), (r"气胸",)),
    "Pleural Effusion": (
        (r"pleural effusions?", r"(?<!pericardial )(?<!joint )effusions?", r"hydrothorax",
         r"pleural fluid", r"blunt\w* (?:of )?(?:the )?(?:\w+ )?costophrenic"),
        (r"(?:胸腔|胸膜腔|胸膜)积液", r"胸水", r"液气胸"),
    ),
    "Pleural Other": (
        (r"pleural (?:thickening|plaques?|calcifications?|scarring|adhesions?)", r"fibrothorax",
         r"thickening of the pleura", r"pleura (?:is |was )?(?:locally )?thickened"),
        (r"胸膜(?:局限性)?(?:增厚|粘连|钙化)",),
    ),
    "Fracture": ((r"fractur\w*",), (r"骨折",)),
    SUPPORT_DEVICES: (
        (r"(?:endotracheal|et|nasogastric|ng|og|feeding|chest|tracheostomy|drainage) tubes?",
         r"catheters?", r"(?:picc|central venous|central) lines?", r"pacemakers?", r"pacer",
         r"defibrillator", r"sternotomy wires?", r"stents?", r"port-?a-?cath", r"surgical clips?",
         r"drains"),
        (r"插管", r"导管", r"引流管", r"起搏器", r"支架", r"置管"),
    ),
    "Ground-Glass Opacity": (
        # "hairy glass" is how COV-CTR's machine translation renders 毛玻璃
        (r"(?:ground|frosted|hairy)[- ]?glass\w*", r"ggos?"),
        (r"磨玻璃", r"毛玻璃"),
    ),
    "Crazy Paving": ((r"crazy[- ]?paving",), (r"铺路石", r"碎石路")),
    "Interlobular Septal Thickening": (
        (r"(?:interlobular |lobular )?sept(?:al|um|a) (?:line )?thickening",
         r"thicken\w* (?:of )?(?:the )?(?:interlobular |lobular )?sept(?:a|um|al)",
         r"(?:interlobular|lobular) sept(?:a|um) (?:is |are |was |were )?thickened"),
        (r"(?:小叶)?间隔(?:明显)?增厚",),
    ),
    "Reticulation/Fibrosis": (
        (r"fibros\w*", r"fibrotic", r"fibrous", r"reticula\w*", r"honeycomb\w*", r"grid shadows?",
         r"cord(?:-like| like)? (?:shadows?|opacit\w*)"),
        (r"纤维化", r"纤维灶", r"索条", r"条索", r"网格", r"网状", r"蜂窝"),
    ),
    "Nodule": ((r"nodul\w*",), (r"结节",)),
    "Mass": (
        (r"mass(?:es)?", r"tumou?rs?", r"neoplasm\w*", r"carcinoma\w*", r"cancer\w*", r"malignan\w*",
         r"metasta\w*", r"space[- ]occupying"),
        (r"肿块", r"肿物", r"占位", r"肿瘤", r"癌", r"转移"),
    ),
    "Lymphadenopathy": (
        (r"(?:lymph)?adenopath\w*", r"(?:enlarged|swollen) (?:\w+ ){0,2}lymph nodes?",
         r"lymph nodes? (?:is |are |was |were )?(?:not )?enlarged"),
        (r"淋巴结(?:明显)?(?:肿大|增大)", r"(?:肿大|增大)(?:的)?淋巴结"),
    ),
    "Bronchiectasis": (
        (r"bronchiectas\w*", r"bronch\w* dilat\w*", r"dilat\w* (?:of )?(?:the )?bronch\w*"),
        (r"支气管(?:明显)?扩张", r"支扩"),
    ),
    "Emphysema": (
        (r"(?<!subcutaneous )emphysema\w*", r"bullae", r"bulla", r"bullous"),
        (r"(?<!皮下)(?<!纵隔)气肿", r"肺大疱", r"肺大泡"),
    ),
    "Air Bronchogram": (
        (r"air[- ]?bronchograms?", r"bronchial air (?:signs?|images?)", r"air bronchial signs?"),
        (r"支气管气像", r"支气管气相", r"支气管充气征", r"空气支气管征"),
    ),
    "Hemorrhage": ((r"ha?emorrhag\w*", r"ha?ematomas?", r"bleed(?:ing)?"), (r"出血", r"血肿")),
    "Infarct": ((r"infarct\w*",), (r"梗死", r"梗塞")),
    "Cyst": ((r"cyst(?:s|ic)?",), (r"囊肿", r"囊性")),
    "Calcification": ((r"calcif\w*",), (r"钙化",)),
    "Hydrocephalus": ((r"hydrocephal\w*", r"ventriculomegaly"), (r"脑积水",)),
}
LABELS: tuple[str, ...] = tuple(LABEL_PATTERNS)


def _compile(patterns: tuple[str, ...], lang: str) -> re.Pattern[str] | None:
    if not patterns:
        return None
    if lang == "en":
        return re.compile(r"\b(?:" + "|".join(patterns) + r")\b", re.IGNORECASE)
    return re.compile("|".join(patterns))


_COMPILED = {
    lang: {label: _compile(pair[i], lang) for label, pair in LABEL_PATTERNS.items()}
    for i, lang in enumerate(("en", "zh"))
}


def label_report(text: str, lang: str | None = None) -> dict[str, int]:
    """Labels of one report: 1 positive, 0 negative, -1 uncertain, for every label it mentions.

    Unmentioned labels are absent. "No Finding" is 1 when no label other than Support Devices
    is positive or uncertain, and absent otherwise. `lang` is "en", "zh" or None (detected).
    """
    lang = lang or detect_language(text)
    if lang not in _COMPILED:
        raise ValueError(f"lang must be 'en', 'zh' or None, got {lang!r}")
    labels: dict[str, int] = {}
    for label, pattern in _COMPILED[lang].items():
        if pattern is None:
            continue
        for match in pattern.finditer(text):
            value = _VALUE.get(mention_polarity(text, match.start(), lang), 1)
            if label not in labels or _STRENGTH[value] > _STRENGTH[labels[label]]:
                labels[label] = value
            if value == 1:
                break
    if not any(v != 0 for label, v in labels.items() if label != SUPPORT_DEVICES):
        labels[NO_FINDING] = 1
    return labels


def _f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """(precision, recall, F1), 0.0 where a denominator is 0."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def label_f1(hypotheses: list[str], references: list[str], lang: str | None = None) -> dict:
    """Clinical efficacy of generated reports: F1 of their labels against the references' labels.

    A label counts as present in a report when it is positive (1) or uncertain (-1): the
    "U-ones" policy, since a hedged finding ("possible effusion") still asserts what to look
    for; negative (0) and unmentioned labels count as absent. Counts are pooled over all
    pairs and labels for the micro scores; "macro_f1" averages the F1 of the labels present
    in at least one reference or hypothesis, which are also the keys of "per_label" (each
    with precision, recall, f1, and support = the number of references holding it).
    `lang` None detects each report's language.
    """
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references; pair them one to one"
        )
    if not hypotheses:
        raise ValueError("label_f1 needs at least one hypothesis/reference pair")
    counts = {label: [0, 0, 0] for label in LABELS}  # tp, fp, fn
    for hypothesis, reference in zip(hypotheses, references):
        predicted = {k for k, v in label_report(hypothesis, lang).items() if v != 0}
        expected = {k for k, v in label_report(reference, lang).items() if v != 0}
        for label in predicted | expected:
            counts[label][0 if label in predicted & expected else 1 if label in predicted else 2] += 1
    per_label, label_f1s = {}, []
    for label, (tp, fp, fn) in counts.items():
        if tp + fp + fn:
            precision, recall, f1 = _f1(tp, fp, fn)
            label_f1s.append(f1)
            per_label[label] = {"precision": round(precision, 4), "recall": round(recall, 4),
                                "f1": round(f1, 4), "support": tp + fn}
    totals = [sum(c[i] for c in counts.values()) for i in range(3)]
    micro_precision, micro_recall, micro_f1 = _f1(*totals)
    macro_f1 = sum(label_f1s) / len(label_f1s) if label_f1s else 0.0
    return {
        "micro_f1": round(micro_f1, 4), "micro_precision": round(micro_precision, 4),
        "micro_recall": round(micro_recall, 4), "macro_f1": round(macro_f1, 4),
        "per_label": per_label, "n": len(hypotheses),
    }

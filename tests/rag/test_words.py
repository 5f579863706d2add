"""rag.text.words: the one CJK pattern, each named tokenizer, and the one jieba tokenizer whose
segmentations do not depend on what ran before."""
import json
import re
import subprocess
import sys
from pathlib import Path

from rag.text.words import (CJK, CJK_CHARS, LEXICON, char_pairs, cjk_characters, count_words,
                            detect_language, has_cjk, jieba_words, latin_words, main_language,
                            metric_characters, metric_words, numbers, words)

ROOT = Path(__file__).resolve().parents[2]
REPORT = "右肺上叶胸膜下可见磨玻璃影，边缘不清。"


def test_cjk_covers_extension_a_and_the_basic_block_only():
    assert has_cjk("双肺") and has_cjk("㐀") and has_cjk("\u9fff")
    assert not has_cjk("䷀ hexagram symbols are not Chinese words")
    assert not has_cjk("カタカナ 한국어 ＡＢＣ") and not has_cjk(None) and not has_cjk("")
    assert CJK.pattern == f"[{CJK_CHARS}]"
    assert re.fullmatch(f"[{CJK_CHARS}]+", "㐀双肺")  # the class embeds in other patterns


def test_detect_language_and_cjk_characters():
    assert detect_language("CT 示 双肺 GGO") == "zh" and detect_language("no effusion") == "en"
    assert main_language("CT 示 双肺 GGO") == "zh" and main_language("") == "en"
    assert main_language("Seen by Dr 王 in the clinic.") == "en"  # one name: still English
    assert cjk_characters("CT：双肺 3 处！") == ["双", "肺", "处"]
    assert char_pairs(["双", "肺", "处"]) == ["双肺", "肺处"] and char_pairs("a") == []


def test_search_words_keep_lexicon_terms_and_their_parts():
    found = words(REPORT)
    assert "磨玻璃影" in found and "胸膜下" in found and "胸膜" in found
    assert "，" not in found and "。" not in found
    assert words("No Pleural EFFUSION, 3.5 cm") == ["no", "pleural", "effusion", "3", "5", "cm"]
    assert words("") == []


def test_jieba_words_are_one_segmentation_with_the_lexicon():
    assert jieba_words(REPORT) == ["右肺", "上叶", "胸膜下", "可见", "磨玻璃影", "边缘", "不清"]
    assert "".join(jieba_words("双肺，磨玻璃影。")) == "双肺磨玻璃影"
    assert "磨玻璃影" in LEXICON.read_text(encoding="utf-8").split()


def test_metric_tokens():
    assert metric_words("don't see 3.5 cm, 12,000 x-ray") == [
        "don't", "see", "3.5", "cm", "12", "000", "x", "ray"]
    assert metric_characters("双肺ggo 3.5cm，㐀") == ["双", "肺", "ggo", "3.5", "cm", "㐀"]


def test_latin_words_numbers_and_counted_words():
    assert latin_words("Right Upper-Lobe GGO, 10mm; café") == [
        "right", "upper", "lobe", "ggo", "10mm", "caf"]
    assert numbers("3.5 cm and 12 mm, v1.2.3") == ["3.5", "12", "1.2", "3"]
    assert count_words("双肺 GGO 3.5cm，ok") == 2 + 4  # one per Chinese character, per latin run
    assert count_words("") == 0 and count_words("，。！") == 0


_SEGMENT = """
import json, sys
from rag.text import words
if sys.argv[1] == "search-first":
    words.words("纵隔内未见肿大淋巴结，双肺纹理清晰")
import jieba
from rag.evaluation.metrics import tokens
print(json.dumps({"metric": tokens(sys.argv[2], "zh", "jieba"), "global": jieba.lcut(sys.argv[2])}))
"""


def _segment_in_fresh_process(order: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _SEGMENT, order, REPORT], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def test_segmentation_does_not_depend_on_whether_search_words_ran_first():
    metric_only = _segment_in_fresh_process("metric-only")
    search_first = _segment_in_fresh_process("search-first")
    assert metric_only == search_first
    # the lexicon is in the metric's segmentation (it changes this sentence's) and jieba's
    # global dictionary is left alone
    assert metric_only["metric"] == jieba_words(REPORT)
    assert "磨玻璃影" in metric_only["metric"] and "磨玻璃影" not in metric_only["global"]


def test_lexical_feature_tokens_are_pinned():
    """The trained heads in rag/encoders/model_configs/heads/ hash these exact tokens."""
    from rag.encoders.lexical_features import tokens

    assert tokens("CT 3.5 cm 结节，位于右肺上叶 (RUL)。") == [
        "w:CT", "w:3.5", "w:cm", "w:结节", "w:位于", "w:右肺", "w:上叶", "w:RUL", "c:CT", "c:T3",
        "c:35", "c:5c", "c:cm", "c:m结", "c:结节", "c:节位", "c:位于", "c:于右", "c:右肺", "c:肺上",
        "c:上叶", "c:叶R", "c:RU", "c:UL"]
    assert tokens("It's 2.50mm; don't-stop 12,000 x-ray") == [
        "e:it", "e:s", "e:2", "e:50mm", "e:don", "e:t", "e:stop", "e:12", "e:000", "e:x", "e:ray",
        "p:it_s", "p:s_2", "p:2_50mm", "p:50mm_don", "p:don_t", "p:t_stop", "p:stop_12",
        "p:12_000", "p:000_x", "p:x_ray"]

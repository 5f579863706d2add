import pytest

from rag.store import RecordStore
from rag.types import Record


def _records():
    return [
        Record("a:1", "report", "xray", "chest", "chest-xray", "en",
               "Findings: small left pleural effusion. Impression: effusion.", study="s1"),
        Record("a:2", "image", "xray", "chest", "chest-xray", "", image="img/1.png", study="s1",
               root="/corpus"),
        Record("b:1", "report", "ct", "chest", "chest-ct", "zh", "右肺上叶磨玻璃影。", study="s2",
               meta={"sections": {"findings": "右肺上叶磨玻璃影。"}}),
    ]


def test_round_trip_study_links_and_filters(tmp_path):
    store = RecordStore(tmp_path / "r.sqlite")
    rowids = store.add(_records())
    got = store.get(rowids)
    assert [got[i].id for i in rowids] == ["a:1", "a:2", "b:1"]
    assert got[rowids[2]].meta["sections"]["findings"] == "右肺上叶磨玻璃影。"
    assert str(got[rowids[1]].image_path()) == "/corpus/img/1.png"
    assert [r.id for r in store.by_study("s1", "report")] == ["a:1"]
    assert store.ids_where("report", {"lang": "zh"}) == [rowids[2]]
    assert store.ids_where("report", {"domain": "chest-xray"}) == [rowids[0]]
    assert store.counts() == {"report": {"chest-xray": 1, "chest-ct": 1},
                              "image": {"chest-xray": 1}}
    store.close()
    ro = RecordStore(tmp_path / "r.sqlite", readonly=True)
    assert len(ro) == 3


def test_lexical_search_finds_english_and_chinese(tmp_path):
    store = RecordStore(tmp_path / "r.sqlite")
    rowids = store.add(_records())
    assert store.lexical("pleural effusion", "report", 5)[0][0] == rowids[0]
    assert store.lexical("磨玻璃影", "report", 5)[0][0] == rowids[2]
    assert store.lexical("pleural", "image", 5) == []
    assert store.lexical("pleural", "report", 5, allowed={rowids[2]}) == []


def test_unknown_filter_is_refused(tmp_path):
    import pytest

    store = RecordStore(tmp_path / "r.sqlite")
    with pytest.raises(ValueError, match="cannot filter"):
        store.ids_where("report", {"patient": "x"})


def test_chinese_lexical_search_uses_jieba_words_with_the_radiology_lexicon(tmp_path):
    from rag.text.words import words

    assert "磨玻璃影" in words("右肺上叶见磨玻璃影，双侧胸腔积液。")
    assert "胸腔积液" in words("双侧胸腔积液")
    store = RecordStore(tmp_path / "r.sqlite")
    rowids = store.add(_records() + [
        Record("c:1", "report", "ct", "chest", "chest-ct", "zh", "双侧胸腔积液，心影增大。",
               study="s3"),
        Record("c:2", "report", "ct", "chest", "chest-ct", "zh", "左肺下叶实变。", study="s4")])
    assert [r for r, _ in store.lexical("胸腔积液", "report", 5)] == [rowids[3]]
    assert store.lexical("肺实变", "report", 5)[0][0] == rowids[4]
    store.remove(["c:1"])
    assert store.lexical("胸腔积液", "report", 5) == []


def test_filters_on_any_field_lists_and_meta_keys(tmp_path):
    store = RecordStore(tmp_path / "r.sqlite")
    records = _records()
    records[0].meta = {"view": "PA", "split": "test"}
    rowids = store.add(records)
    assert sorted(store.ids_where("report", {"domain": ["chest-xray", "chest-ct"]})) == [
        rowids[0], rowids[2]]
    assert store.ids_where("report", {"meta.view": "PA"}) == [rowids[0]]
    assert store.ids_where("report", {"study": "s2", "lang": "zh"}) == [rowids[2]]
    assert store.ids_where("image", {"source": "nowhere"}) == []
    for bad in ("text", "meta.x'); DROP TABLE records; --", "patient"):
        with pytest.raises(ValueError, match="cannot filter"):
            store.ids_where("report", {bad: "x"})
